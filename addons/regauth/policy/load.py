"""Read a policy file (format version 1) and refuse it with `file:line:column: message` errors.

Loading is all-or-nothing: every problem found is reported, and a policy with any problem is
never returned. Secrets referenced by `*_env` / `*_file` keys are resolved here, so a missing
secret is a load error too (fail closed).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from types import TracebackType

from regauth.policy import yamlpos
from regauth.policy.load_rules import RulesReader
from regauth.policy.load_upstreams import UpstreamsReader
from regauth.policy.model import Policy
from regauth.policy.model import TokenSettings
from regauth.policy.reader import Invalid
from regauth.policy.reader import PolicyError
from regauth.policy.reader import Problem
from regauth.policy.reader import read_regular_file
from regauth.policy.yamlpos import Map
from regauth.policy.yamlpos import Position
from regauth.policy.yamlpos import Seq
from regauth.tokens.keyids import KID_FORMATS

MIN_LIFETIME = 60
MAX_LIFETIME = 24 * 3600
_SERVICE_RE = re.compile(r"[A-Za-z0-9._:/@-]{1,128}")
MAX_POLICY_BYTES = yamlpos.MAX_DOCUMENT_CHARS


class _Loader(RulesReader, UpstreamsReader):
    """Reads a whole policy document (`load`)."""

    # -- sections --------------------------------------------------------------------------
    def load(self, doc: object) -> Policy | None:
        if doc is None:
            self.problem(None, "the policy file is empty")
            return None
        try:
            root = self.mapping(doc, Position(1, 1), "the policy")
        except Invalid:
            return None
        self.check_keys(
            root,
            {
                "version",
                "service",
                "issuer",
                "token",
                "accounts",
                "capabilities",
                "rules",
                "upstreams",
                "trusted_issuers",
                "federated_issuers",
            },
            "the policy",
        )
        version = root.get("version")
        if type(version) is not int or version != 1:
            self.problem(
                root.where("version") if "version" in root else root.position,
                "`version: 1` is required (the only policy format this regauth reads)",
            )
        service = self.guard(lambda: self.string(root, "service", "the policy", required=True))
        issuer = self.guard(lambda: self.string(root, "issuer", "the policy", default="regauth"))
        token = self.guard(lambda: self.token_settings(root)) or TokenSettings()
        accounts = self.guard(lambda: self.accounts(root)) or {}
        capabilities = self.guard(lambda: self.capabilities(root)) or {}
        federated = self.federated_issuers(root)  # before the rules, which name them
        rules = self.rules(root, accounts, capabilities)
        upstreams = self.upstreams(root)
        issuers = self.trusted_issuers(root)
        for key, value in (("service", service), ("issuer", issuer)):
            if value is not None and _SERVICE_RE.fullmatch(value) is None:
                self.problem(
                    root.where(key),
                    f"{key} {value!r} may only hold letters, digits "
                    "and . _ : / @ - (it is sent in headers)",
                )
        trusted = {i.issuer for i in issuers}
        for entry in federated:
            where = Position(entry.line, 1)
            if entry.issuer in trusted:
                self.problem(
                    where,
                    f"federated issuer {entry.name!r}: {entry.issuer} is also a trusted issuer; "
                    "an ID token must never pass as a registry token (use one or the other)",
                )
            if entry.audience == service:
                self.problem(
                    where,
                    f"federated issuer {entry.name!r}: the audience must not be the registry's "
                    "service (ID tokens and registry tokens are for different audiences)",
                )
        if self.problems:
            return None
        assert service is not None and issuer is not None
        return Policy(
            self.file,
            service,
            issuer,
            token,
            accounts,
            capabilities,
            tuple(rules),
            tuple(upstreams),
            tuple(issuers),
            tuple(federated),
        )

    def token_settings(self, root: Map) -> TokenSettings:
        if "token" not in root:
            return TokenSettings()
        t = self.mapping(root["token"], root.where("token"), "token")
        self.check_keys(
            t, {"lifetime", "refresh_lifetime", "algorithm", "kid", "signing_key"}, "token"
        )
        lifetime = self.integer(t, "lifetime", "token", 300)
        if lifetime < MIN_LIFETIME or lifetime > MAX_LIFETIME:
            self.problem(
                t.where("lifetime"),
                f"token lifetime must be between {MIN_LIFETIME} "
                f"and {MAX_LIFETIME} seconds, not {lifetime}",
            )
        refresh = self.integer(t, "refresh_lifetime", "token", 7 * 24 * 3600)
        if refresh < lifetime:
            self.problem(
                t.where("refresh_lifetime"),
                "refresh_lifetime must not be shorter than the token lifetime",
            )
        algorithm = self.string(t, "algorithm", "token", default="ES256")
        if algorithm not in ("ES256", "RS256"):
            self.problem(t.where("algorithm"), "token algorithm must be ES256 or RS256")
        kid = self.string(t, "kid", "token", default="libtrust")
        if kid not in KID_FORMATS:
            self.problem(t.where("kid"), f"token kid must be one of {', '.join(KID_FORMATS)}")
        signing_key = self.string(t, "signing_key", "token")
        assert algorithm is not None and kid is not None
        return TokenSettings(lifetime, refresh, algorithm, kid, signing_key)


def load_policy_text(
    text: str,
    file: str = "<policy>",
    base_dir: Path | None = None,
    environ: dict[str, str] | None = None,
    *,
    secret_notes: list[Problem] | None = None,
) -> Policy:
    """Parse and check a policy; raise PolicyError (one `file:line:column: message` per
    problem) and nothing else. With `secret_notes`, absent secrets are appended there (as
    `Problem`s) instead of failing the load, and placeholders stand in for them.

    A defect in the loader itself must not pass a policy nor escape as another exception (the
    reload task keeps the last good policy only on PolicyError): it becomes a problem at the
    position the loader was working on, the original exception chained for the log.
    """
    try:
        loader = _Loader(
            file,
            base_dir or Path.cwd(),
            dict(os.environ if environ is None else environ),
            secret_notes,
        )
        try:
            doc = yamlpos.load(text)
        except yamlpos.YamlError as e:
            pos = e.position or Position(1, 1)
            raise PolicyError([Problem(file, pos.line, pos.column, e.message)]) from None
        policy = loader.load(doc)
        if policy is None or loader.problems:
            raise PolicyError(sorted(loader.problems, key=lambda p: (p.line, p.column)))
        return policy
    except PolicyError:
        raise
    except Exception as e:  # the fail-closed last line, see the docstring
        pos = _position_in(e.__traceback__) or Position(1, 1)
        raise PolicyError(
            [
                Problem(
                    file,
                    pos.line,
                    pos.column,
                    f"cannot check this part of the policy (internal error "
                    f"{type(e).__name__}: {yamlpos.shown(str(e))[1:-1]})",
                )
            ]
        ) from e


def _position_in(tb: TracebackType | None) -> Position | None:
    """The position of the innermost located value a failing loader frame was handling."""
    found = None
    while tb is not None:
        for value in tb.tb_frame.f_locals.values():
            if isinstance(value, Position):
                found = value
            elif isinstance(getattr(value, "position", None), Position) and isinstance(
                value, Map | Seq | yamlpos.Str
            ):
                found = value.position
        tb = tb.tb_next
    return found


def load_policy(
    path: Path, environ: dict[str, str] | None = None, *, secret_notes: list[Problem] | None = None
) -> Policy:
    """Read and check the policy file at `path`; raise PolicyError and nothing else.

    The file must be a regular file (a directory, FIFO or device is refused without blocking),
    at most MAX_POLICY_BYTES long, in UTF-8. `secret_notes`: see `load_policy_text`.
    """
    data = _read_policy_file(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = len(data[data.rfind(b"\n", 0, e.start) + 1 : e.start].decode("utf-8", "replace"))
        raise PolicyError(
            [
                Problem(
                    str(path),
                    line,
                    column + 1,
                    f"the policy is not UTF-8 text (byte 0x{data[e.start]:02x}: {e.reason})",
                )
            ]
        ) from None
    return load_policy_text(text, str(path), path.parent, environ, secret_notes=secret_notes)


def _read_policy_file(path: Path) -> bytes:
    def refuse(message: str) -> PolicyError:
        return PolicyError([Problem(str(path), 1, 1, message)])

    try:
        data = read_regular_file(path, MAX_POLICY_BYTES)
    except OSError as e:
        raise refuse(f"cannot read policy: {e.strerror or e}") from None
    except ValueError as e:
        raise refuse(f"cannot read policy: {e}") from None
    if len(data) > MAX_POLICY_BYTES:
        tail = data[:MAX_POLICY_BYTES]
        line = tail.count(b"\n") + 1
        column = len(tail) - (tail.rfind(b"\n") + 1) + 1
        raise PolicyError(
            [
                Problem(
                    str(path),
                    line,
                    column,
                    f"the policy is larger than {MAX_POLICY_BYTES // 1024} KiB",
                )
            ]
        )
    return data
