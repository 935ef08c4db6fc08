"""An in-memory OIDC issuer for unit tests: keys, a JWK Set, and ID tokens signed with them
(no network; tests/support/oidc_issuer.py is the HTTPS one)."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from dataclasses import field

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric import rsa

ISSUER = "https://token.actions.example.test"
AUDIENCE = "https://registry.example.test"


@dataclass
class Idp:
    issuer: str = ISSUER
    keys: dict[str, object] = field(default_factory=dict)  # kid → private key
    fetches: int = 0

    def add_key(self, alg: str = "RS256") -> str:
        kid = uuid.uuid4().hex[:12]
        if alg.startswith("ES"):
            self.keys[kid] = ec.generate_private_key(ec.SECP256R1())
        else:
            self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return kid

    def jwks(self) -> bytes:
        self.fetches += 1
        out = []
        for kid, key in self.keys.items():
            if isinstance(key, rsa.RSAPrivateKey):
                jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
            else:
                jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
            jwk["kid"], jwk["use"] = kid, "sig"
            out.append(jwk)
        return json.dumps({"keys": out}).encode()

    def mint(
        self,
        claims: dict[str, object] | None = None,
        kid: str | None = None,
        alg: str | None = None,
        lifetime: int = 300,
        now: float | None = None,
        key: object = None,
        headers: dict[str, object] | None = None,
    ) -> str:
        kid = kid or next(iter(self.keys))
        private = key if key is not None else self.keys[kid]
        if alg is None:
            alg = "ES256" if isinstance(private, ec.EllipticCurvePrivateKey) else "RS256"
        issued = int(time.time() if now is None else now)
        body: dict[str, object] = {
            "iss": self.issuer,
            "aud": AUDIENCE,
            "sub": "repo:acme/app:ref:refs/heads/main",
            "iat": issued,
            "nbf": issued,
            "exp": issued + lifetime,
            "jti": uuid.uuid4().hex,
            **(claims or {}),
        }
        return jwt.encode(body, private, algorithm=alg, headers={"kid": kid, **(headers or {})})  # type: ignore[arg-type]


def github(repository: str = "acme/app", ref: str = "refs/heads/main", **extra: object) -> dict:
    owner = repository.split("/")[0]
    return {
        "sub": f"repo:{repository}:ref:{ref}",
        "repository": repository,
        "repository_owner": owner,
        "ref": ref,
        "ref_type": "branch",
        "workflow": "build",
        "event_name": "push",
        "actor": "octocat",
        **extra,
    }
