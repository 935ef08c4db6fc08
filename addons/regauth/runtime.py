"""Everything a loaded policy implies, built in one step and swapped atomically on reload."""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from pathlib import Path

from regauth.ops import client_ca
from regauth.ops import pki
from regauth.ops.client_ca import ClientTrust
from regauth.policy.load import load_policy
from regauth.policy.model import Policy
from regauth.policy.model import UpstreamEntry
from regauth.protocol.routes import TOKEN_PATH
from regauth.protocol.urls import Origin
from regauth.tokens import keystate
from regauth.tokens.issue import TokenIssuer
from regauth.tokens.keyring import KeyRing
from regauth.tokens.verify import TokenVerifier
from regauth.upstream_auth import UpstreamAuth


@dataclass(frozen=True)
class Runtime:
    """What a loaded policy and the signing keys imply, checked together (`build_runtime`).

    Immutable; a reload builds a new one, and `Active` carries it with the origins.
    """

    policy: Policy
    keyring: KeyRing  # the signing keys: regauth's own trust store, and the one that signs
    issuer: TokenIssuer  # signs access and refresh tokens with the keyring's signer
    verifier: TokenVerifier  # checks tokens presented to regauth (its own, trusted issuers')
    upstream_entry: UpstreamEntry  # the policy's `upstreams:` entry for the guarded registry
    redactor: re.Pattern[str] | None  # capability ids in paths (None: the policy has none)
    # The client CA and deny list client certificates are checked against (None: no client CA,
    # so no certificate is an identity).
    client_trust: ClientTrust | None = None
    # Epoch seconds of the next scheduled key activation (`rotate --activate-after`): the
    # snapshot must be rebuilt then, since another key signs from that moment.
    key_change_at: float | None = None

    def redact(self, text: str) -> str:
        """Replace capability ids (anonymous write secrets) with a short, stable hash."""
        if self.redactor is None:
            return text
        return self.redactor.sub(_hide, text)


def _hide(m: re.Match[str]) -> str:
    return "<id:" + hashlib.sha256(m.group(0).encode()).hexdigest()[:10] + ">"


def build_runtime(
    policy_path: Path, certs_dir: Path, upstream_url: str, now: float | None = None
) -> Runtime:
    """Load and cross-check policy, keys and upstream; raise ValueError (or PolicyError).
    The signing key is the one the key lifecycle (`regauth.tokens.keystate`) names at `now`."""
    policy = load_policy(policy_path)
    keys = pki.load_signing_keys(certs_dir)
    lifecycle = keystate.resolve(
        certs_dir, keys, policy.token.signing_key, time.time() if now is None else now
    )
    keyring = KeyRing(keys, lifecycle.signer.name)
    issuer = TokenIssuer(keyring, policy.token, policy.service, policy.issuer)
    verifier = TokenVerifier(keyring, policy.service, policy.issuer, policy.trusted_issuers)
    entry = policy.upstream_entry_for(upstream_url)
    if entry is None:
        raise ValueError(
            f"{policy_path}: no `upstreams:` entry matches {upstream_url} (add one, "
            "or a catch-all with url: '*')"
        )
    return Runtime(
        policy,
        keyring,
        issuer,
        verifier,
        entry,
        policy.capability_redactor(),
        client_ca.load_client_trust(certs_dir),
        lifecycle.next_change,
    )


@dataclass(frozen=True)
class Active:
    """The configuration one request is decided with, swapped as a whole on reload.

    `runtime` is what the policy and keys imply; `public` is the origin clients use (the realm
    and rewritten URLs point there); `upstream` is the registry regauth guards; `upstream_auth`
    presents regauth's own credentials to it (inject mode) or is None; `stream_threshold` is the
    body size in bytes above which bodies stream through instead of being kept.
    """

    runtime: Runtime
    public: Origin
    upstream: Origin
    upstream_auth: UpstreamAuth | None = None
    stream_threshold: int = 1024 * 1024

    @property
    def realm(self) -> str:
        return self.public.url + TOKEN_PATH
