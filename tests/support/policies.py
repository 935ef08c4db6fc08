"""The test policy and its accounts, shared by unit, property and integration tests.

`policy_text(hashes, ...)` is the policy most tests run (its accounts are `PASSWORDS`, hashed by
the `password_hashes` fixture in tests/conftest.py); `CLIENT_RULES` adds the client tests'
private repositories; `htpasswd_file` writes an htpasswd for a registry of its own.
"""

from __future__ import annotations

import secrets
import string
import subprocess
from pathlib import Path

import bcrypt

SERVICE = "regauth-test"
ISSUER = "regauth-test-issuer"
PASSWORDS = {"ci": "ci-secret-9f2", "alice": "alice-secret-7c1"}


def build_id() -> str:
    """A fresh capability id for `builds/{build-id}` (26 characters of [a-z0-9])."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(26))


def bcrypt_hash(password: str) -> str:
    """A bcrypt hash of cost 4 (the lowest: tests stay fast)."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()


def policy_text(
    hashes: dict[str, str],
    mode: str = "enforce",
    lifetime: int = 120,
    extra_rules: str = "",
    upstream_extra: str = "",
    top_extra: str = "",
) -> str:
    """The integration-test policy; `mode` is the upstream mode (enforce or delegate)."""
    return f"""version: 1
service: {SERVICE}
issuer: {ISSUER}
token:
  lifetime: {lifetime}
accounts:
  ci:
    password_hash: "{hashes["ci"]}"
    groups: [ci]
  alice:
    password_hash: "{hashes["alice"]}"
    groups: [dev]
    labels:
      team: [web]
capabilities:
  build-id: "[a-z0-9]{{26}}"
upstreams:
  - url: "*"
    mode: {mode}
{upstream_extra}{top_extra}rules:
{extra_rules}  - comment: CI writes the build cache
    account: ci
    repository: "cache/**"
    actions: [pull, push]
  - comment: CI publishes
    account: ci
    repository: ["public/**", "demo/**"]
    actions: ["*"]
  - comment: anyone pulls the public area
    account: any
    repository: ["public/**", "demo/**"]
    actions: [pull]
  - comment: builders push their own build repository
    account: any
    repository: "builds/{{build-id}}"
    actions: [pull, push]
  - comment: team namespaces
    account: authenticated
    repository: "teams/${{labels.team}}/**"
    actions: [pull, push]
  - comment: CI lists the catalog
    account: ci
    type: registry
    name: catalog
    actions: ["*"]
"""


# Client tests: private repositories under apps/ for CI, on top of the usual policy.
CLIENT_RULES = """  - comment: CI owns its applications
    account: ci
    repository: "apps/**"
    actions: [pull, push]
"""


def htpasswd_file(path: Path, users: dict[str, str]) -> Path:
    """An htpasswd file (bcrypt, by Apache's `htpasswd`) for a registry's own accounts."""
    path.write_text("")
    for user, password in users.items():
        subprocess.run(
            ["htpasswd", "-bB", str(path), user, password], check=True, capture_output=True
        )
    return path
