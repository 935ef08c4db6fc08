"""The token-signing keys regauth trusts, and the one that signs (`KeyRing`).

Keys are found by `kid` in both forms distribution uses (libtrust for 2.x, the RFC 7638 JWK
thumbprint for 3.x) and by their certificate (`x5c`); `/.well-known/jwks.json` publishes every
trusted key under both kids.
"""

from __future__ import annotations

from regauth.ops.pki import SigningKey
from regauth.tokens.keyids import key_id
from regauth.tokens.keyids import libtrust_kid
from regauth.tokens.keyids import public_jwk
from regauth.tokens.keyids import rfc7638_thumbprint


class KeyRing:
    """The trusted signing keys and the one that signs: `pinned` (the key lifecycle's choice,
    `regauth.tokens.keystate`), else the newest with a private key."""

    def __init__(self, keys: list[SigningKey], pinned: str | None = None) -> None:
        if not keys:
            raise ValueError("no token-signing keys found (run `regauth certs init`)")
        self.keys = keys
        self.by_kid: dict[str, SigningKey] = {}
        for k in keys:
            self.by_kid[libtrust_kid(k.public_key)] = k
            self.by_kid[rfc7638_thumbprint(k.public_key)] = k
        self.by_der = {k.certificate_der(): k for k in keys}
        candidates = [k for k in keys if k.private_key is not None]
        if pinned is not None:
            candidates = [k for k in candidates if k.name == pinned]
            if not candidates:
                raise ValueError(f"signing key {pinned!r} not found or has no private key")
        if not candidates:
            raise ValueError("no token-signing private key found")
        self.signer = candidates[-1]

    def jwks(self, kid_format: str) -> dict[str, object]:
        entries = []
        for k in self.keys:
            for fmt in dict.fromkeys((kid_format, "libtrust", "rfc7638")):
                entries.append(
                    {
                        **public_jwk(k.public_key),
                        "kid": key_id(k.public_key, fmt),
                        "alg": k.algorithm,
                        "use": "sig",
                    }
                )
        return {"keys": entries}
