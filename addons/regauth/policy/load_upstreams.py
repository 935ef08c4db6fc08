"""Reading `upstreams` and `trusted_issuers` (README "upstreams", "trusted_issuers"): modes,
injected credentials, realm hosts, and other issuers' keys, claims and action mappings."""

from __future__ import annotations

from regauth.policy.load_keys import MAX_KEY_FILE_BYTES
from regauth.policy.load_keys import public_keys
from regauth.policy.model import CLAIM_SHAPES
from regauth.policy.model import CREDENTIAL_KINDS
from regauth.policy.model import UPSTREAM_MODES
from regauth.policy.model import TrustedIssuer
from regauth.policy.model import UpstreamCredentials
from regauth.policy.model import UpstreamEntry
from regauth.policy.model import one_of
from regauth.policy.reader import Reader
from regauth.policy.reader import read_small
from regauth.policy.yamlpos import Map
from regauth.policy.yamlpos import Position
from regauth.protocol.scope import ACTIONS
from regauth.protocol.urls import normalize_url
from regauth.tokens.keyids import PublicKey
from regauth.tokens.keyids import VerificationKey

SAFE_ISSUER_ACTIONS = ("pull", "push")


class UpstreamsReader(Reader):
    """The sections about registries and other issuers."""

    def upstreams(self, root: Map) -> list[UpstreamEntry]:
        return self.items(root, "upstreams", self.upstream)

    def upstream(self, spec: object, where: Position) -> UpstreamEntry:
        u = self.mapping(spec, where, "upstream")
        self.check_keys(u, {"url", "mode", "credentials", "comment"}, "upstream")
        self.string(u, "comment", "upstream")
        url = self.string(u, "url", "upstream", required=True)
        assert url is not None
        if url != "*":
            try:
                url = normalize_url(url)
            except ValueError as e:
                raise self.fail(u.where("url"), f"upstream url: {e}") from None
        mode = one_of(self.string(u, "mode", "upstream", default="enforce"), UPSTREAM_MODES)
        if mode is None:
            raise self.fail(
                u.where("mode"),
                "upstream mode must be 'enforce' (regauth checks "
                "every request) or 'delegate' (the registry checks "
                "regauth's tokens itself)",
            )
        credentials = None
        if "credentials" in u:
            if mode != "enforce":
                raise self.fail(
                    u.key_positions["credentials"],
                    "injecting upstream credentials requires mode: enforce, or "
                    "every client would act with them unchecked",
                )
            c = self.mapping(u["credentials"], u.where("credentials"), "upstream credentials")
            self.check_keys(
                c,
                {"type", "username", "password", "password_env", "password_file", "realm_hosts"},
                "upstream credentials",
            )
            kind = one_of(
                self.string(c, "type", "upstream credentials", default="basic"), CREDENTIAL_KINDS
            )
            if kind is None:
                raise self.fail(c.where("type"), "credentials type must be 'basic' or 'bearer'")
            username = self.string(c, "username", "upstream credentials", required=True)
            password, source = self.secret(c, "password", "upstream credentials")
            hosts = tuple(
                h.lower() for h, _ in self.string_list(c, "realm_hosts", "upstream credentials")
            )
            assert username is not None
            credentials = UpstreamCredentials(kind, username, source, password, hosts)
        return UpstreamEntry(url, mode, credentials, where.line)

    def trusted_issuers(self, root: Map) -> list[TrustedIssuer]:
        return self.items(root, "trusted_issuers", self.trusted_issuer)

    def trusted_issuer(self, spec: object, where: Position) -> TrustedIssuer:
        what = "trusted issuer"
        t = self.mapping(spec, where, what)
        self.check_keys(
            t,
            {
                "issuer",
                "audience",
                "algorithm",
                "secret",
                "secret_env",
                "secret_file",
                "public_key_file",
                "jwks_file",
                "claims",
                "actions",
                "repos_actions",
                "comment",
            },
            what,
        )
        issuer = self.string(t, "issuer", what, required=True)
        audience = self.string(t, "audience", what, required=True)
        algorithm = self.string(t, "algorithm", what, required=True)
        assert issuer is not None and audience is not None and algorithm is not None
        if algorithm not in ("HS256", "RS256", "ES256"):
            raise self.fail(
                t.where("algorithm"), f"{what}: algorithm must be HS256, RS256 or ES256"
            )
        keys: list[VerificationKey] = []
        kids: list[str | None] = []
        wrong = [
            k
            for k in t
            if k
            in (
                ("public_key_file", "jwks_file")
                if algorithm == "HS256"
                else ("secret", "secret_env", "secret_file")
            )
        ]
        if wrong:
            raise self.fail(
                t.key_positions[wrong[0]], f"{what}: {wrong[0]} does not fit algorithm {algorithm}"
            )
        if algorithm == "HS256":
            secret, _ = self.secret(t, "secret", what)
            if len(secret.encode()) < 32:
                raise self.fail(t.position, f"{what}: an HS256 secret needs at least 32 bytes")
            keys.append(secret.encode())
            kids.append(None)
        else:
            for key, kid in self.public_keys(t, what, algorithm):
                keys.append(key)
                kids.append(kid)
        claims = one_of(self.string(t, "claims", what, default="access"), CLAIM_SHAPES)
        if claims is None:
            raise self.fail(
                t.where("claims"), f"{what}: claims must be 'access', 'repos' or 'repo_access'"
            )
        # delete and `*` only when the operator names them: an issuer's key is as powerful as
        # the actions it may grant, and destructive ones must never come by default.
        action_map: dict[str, tuple[str, ...]] = {a: (a,) for a in SAFE_ISSUER_ACTIONS}
        if "actions" in t:
            am = self.mapping(t["actions"], t.where("actions"), f"{what} actions")
            for key in am:
                mapped = tuple(v for v, _ in self.string_list(am, key, f"{what} actions"))
                for v in mapped:
                    if v not in ACTIONS:
                        self.problem(am.where(key), f"{what}: {v!r} is not a registry action")
                action_map[key] = mapped
        repos_actions = tuple(v for v, _ in self.string_list(t, "repos_actions", what)) or ("pull",)
        for v in repos_actions:
            if v not in ACTIONS:
                self.problem(t.where("repos_actions"), f"{what}: {v!r} is not a registry action")
        comment = self.string(t, "comment", what, default="") or ""
        return TrustedIssuer(
            issuer,
            audience,
            (algorithm,),
            tuple(keys),
            tuple(kids),
            claims,
            action_map,
            repos_actions,
            comment,
            where.line,
        )

    def public_keys(self, t: Map, what: str, algorithm: str) -> list[tuple[PublicKey, str | None]]:
        given = [k for k in ("public_key_file", "jwks_file") if k in t]
        if len(given) != 1:
            raise self.fail(
                t.position, f"{what}: {algorithm} needs exactly one of public_key_file or jwks_file"
            )
        key = given[0]
        ref = self.string(t, key, what, required=True)
        assert ref is not None
        path = self.resolve(ref)
        try:
            data = read_small(path, MAX_KEY_FILE_BYTES)
        except OSError as e:
            raise self.fail(
                t.where(key), f"{what}: cannot read {path}: {e.strerror or e}"
            ) from None
        except ValueError as e:
            raise self.fail(t.where(key), f"{what}: cannot use {path}: {e}") from None
        try:
            return public_keys(data, key, algorithm)
        except ValueError as e:
            message = str(e)
            if message == "no keys":
                raise self.fail(t.where(key), f"{what}: no keys in {path}") from None
            if message.startswith("a key does not fit"):
                raise self.fail(
                    t.where(key), f"{what}: a key in {path} does not fit {algorithm}"
                ) from None
            raise self.fail(t.where(key), f"{what}: {message} from {path}") from None
