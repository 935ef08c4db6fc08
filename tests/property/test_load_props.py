"""The policy loader (yamlpos.py, policy_loader.py): any text, any bytes in a file, any
structure raises only YamlError / PolicyError, every problem reads `file:line:col: message` on
one line, and what loads is a Policy.

Texts come from YAML's own punctuation (flow and block collections, tags, anchors, aliases,
directives, quotes, odd characters), from mutations of a valid policy, and from structured
policies (mostly-valid sections with hostile values) dumped by PyYAML.
"""

from __future__ import annotations

import re
import string
from pathlib import Path

import pytest
import yaml
from hypothesis import event
from hypothesis import given
from hypothesis import strategies as st

from regauth.policy import yamlpos
from regauth.policy.load import load_policy
from regauth.policy.load import load_policy_text
from regauth.policy.model import Policy
from regauth.policy.reader import PolicyError
from tests.property.strategies import any_text
from tests.property.strategies import json_scalars
from tests.property.strategies import json_values

PROBLEM_RE = re.compile(r"p\.yaml:\d+:\d+: [^\n]+")
HASH = "$2b$04$" + "N" * 53
VALID = f"""\
version: 1
service: svc
token:
  lifetime: 300
accounts:
  ci:
    password_hash: "{HASH}"
    groups: [ci]
    labels:
      team: [web]
capabilities:
  build-id: "[a-z0-9]{{26}}"
rules:
  - account: ci
    repository: ["public/**", "teams/${{labels.team}}/**"]
    actions: [pull, push]
  - account: any
    repository: "builds/{{build-id}}"
    actions: [pull, push]
  - group: ci
    type: registry
    name: catalog
    actions: ["*"]
    networks: [10.0.0.0/8]
"""
YAML_PIECES = [
    "[",
    "]",
    "{",
    "}",
    ":",
    ": ",
    "- ",
    ",",
    "\n",
    "  ",
    "\t",
    "&a ",
    "*a",
    "&b ",
    "*b",
    "!!int ",
    "!!str ",
    "!!set ",
    "!!omap ",
    "!!binary ",
    "!!timestamp ",
    "!!float ",
    "!!python/object:os.system ",
    "!local ",
    "!",
    "'",
    '"',
    "#",
    "<<: ",
    "? ",
    "|",
    ">",
    "%YAML 1.1\n",
    "%TAG ! tag:x,2000:\n",
    "---\n",
    "...\n",
    "version",
    "rules",
    "a",
    "1",
    "0x1f",
    "0o7",
    "1e400",
    ".nan",
    ".inf",
    "~",
    "\x00",
    "\ufeff",
    "\x85",
    "\u2028",
    "\\",
    "%",
    "@",
    "`",
    "é",
]
yaml_texts = st.lists(st.sampled_from(YAML_PIECES), max_size=60).map("".join)


@st.composite
def mutated_policies(draw: st.DrawFn) -> str:
    """The valid policy with a few pieces inserted, deleted or replaced."""
    text = VALID
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        at = draw(st.integers(min_value=0, max_value=len(text)))
        cut = draw(st.integers(min_value=0, max_value=8))
        piece = draw(st.sampled_from(YAML_PIECES) | st.text(max_size=5))
        text = text[:at] + piece + text[at + cut :]
    return text


def _mostly(valid: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    """Mostly `valid` (six in seven), else a JSON scalar of any type."""
    return st.one_of(*[valid] * 6, json_scalars)


names = st.sampled_from(
    ["ci", "alice", "any", "anonymous", "authenticated", "Bad Name", ""]
) | st.text(string.ascii_lowercase + "-_.@", max_size=10)
rules = st.fixed_dictionaries(
    {},
    optional={
        "account": _mostly(names | st.lists(names, max_size=2)),
        "group": _mostly(st.sampled_from(["ci", "dev", "nope"])),
        "labels": _mostly(
            st.dictionaries(
                st.sampled_from(["team", "x"]), st.sampled_from(["web", ["a", "b"]]), max_size=2
            )
        ),
        "type": _mostly(st.sampled_from(["repository", "registry", "blob"])),
        "repository": _mostly(
            st.sampled_from(
                [
                    "public/**",
                    "builds/{build-id}",
                    "{nope}/x",
                    "**",
                    "teams/${labels.team}/**",
                    "a/[",
                    {"regex": "a.*"},
                    {"regex": "("},
                    [],
                    ["a", "b/*"],
                ]
            )
        ),
        "name": _mostly(st.sampled_from(["catalog", "other"])),
        "networks": _mostly(st.sampled_from(["10.0.0.0/8", "10.0.0.1/8", "::1", "nope", []])),
        "actions": _mostly(
            st.lists(st.sampled_from(["pull", "push", "delete", "*", "read"]), max_size=3)
        ),
        "deny": _mostly(st.booleans()),
        "comment": _mostly(st.text(max_size=10)),
        "extra": json_scalars,
    },
)
policies = st.fixed_dictionaries(
    {"version": _mostly(st.just(1)), "service": _mostly(st.sampled_from(["svc", "a b", ""]))},
    optional={
        "issuer": _mostly(st.sampled_from(["regauth", "x" * 200])),
        "token": _mostly(
            st.fixed_dictionaries(
                {},
                optional={
                    "lifetime": _mostly(st.integers(min_value=-10, max_value=10**6)),
                    "refresh_lifetime": _mostly(st.integers(min_value=0, max_value=10**7)),
                    "algorithm": _mostly(st.sampled_from(["ES256", "RS256", "HS256"])),
                    "kid": _mostly(st.sampled_from(["libtrust", "rfc7638", "x"])),
                    "signing_key": _mostly(st.text(max_size=10)),
                },
            )
        ),
        "accounts": _mostly(
            st.dictionaries(
                names,
                _mostly(
                    st.fixed_dictionaries(
                        {"password_hash": _mostly(st.sampled_from([HASH, "plain"]))},
                        optional={
                            "groups": _mostly(
                                st.lists(st.sampled_from(["ci", "dev", "Bad"]), max_size=2)
                            ),
                            "labels": _mostly(
                                st.dictionaries(
                                    st.sampled_from(["team", "T"]),
                                    st.sampled_from(["web", ["x"]]),
                                    max_size=1,
                                )
                            ),
                            "password_hash_env": _mostly(st.sampled_from(["HASH", "UNSET"])),
                        },
                    )
                ),
                max_size=2,
            )
        ),
        "capabilities": _mostly(
            st.dictionaries(
                st.sampled_from(["build-id", "weak", "Bad"]),
                _mostly(st.sampled_from(["[a-z0-9]{26}", "[a-z]{2}", "(", "[a-z0-9]{999999}"])),
                max_size=2,
            )
        ),
        "rules": _mostly(st.lists(_mostly(rules), max_size=3)),
        "upstreams": _mostly(
            st.lists(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "url": _mostly(st.sampled_from(["*", "https://r.example", "ftp://x"])),
                        "mode": _mostly(st.sampled_from(["enforce", "delegate", "inject"])),
                        "credentials": json_values,
                    },
                ),
                max_size=2,
            )
        ),
        "trusted_issuers": _mostly(
            st.lists(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "issuer": _mostly(st.just("legacy")),
                        "audience": _mostly(st.just("svc")),
                        "algorithm": _mostly(st.sampled_from(["HS256", "ES256", "none"])),
                        "secret": _mostly(st.sampled_from(["x" * 40, "short"])),
                        "claims": _mostly(st.sampled_from(["access", "repos", "repo_access", "x"])),
                        "actions": json_values,
                    },
                ),
                max_size=2,
            )
        ),
        "unknown": json_scalars,
    },
)


def _load(text: str, base_dir: Path | None = None) -> Policy | None:
    try:
        policy = load_policy_text(
            text, file="p.yaml", base_dir=base_dir or Path("/nonexistent"), environ={"HASH": HASH}
        )
    except PolicyError as e:
        lines = str(e).split("\n")
        assert lines and all(PROBLEM_RE.fullmatch(line) for line in lines), lines
        event(f"refused ({len(lines)} problems)" if len(lines) < 3 else "refused (3+ problems)")
        return None
    assert isinstance(policy, Policy)
    event("loaded")
    return policy


@given(st.one_of(yaml_texts, any_text))
def test_yamlpos_load_raises_only_yaml_error(text: str) -> None:
    try:
        yamlpos.load(text)
    except yamlpos.YamlError as e:
        assert e.message and "\n" not in e.message
        assert e.position is None or (e.position.line >= 1 and e.position.column >= 1)


@given(st.one_of(yaml_texts, mutated_policies(), any_text))
def test_policy_texts_raise_only_policy_error(text: str) -> None:
    _load(text)


@given(policies)
def test_structured_policies_load_or_raise_policy_error(document: dict[str, object]) -> None:
    try:
        text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    except (yaml.YAMLError, ValueError):
        return
    _load(text)


@pytest.fixture(scope="module")
def policy_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("policy") / "p.yaml"


@given(
    st.one_of(
        st.binary(max_size=500),
        mutated_policies().map(lambda t: t.encode("utf-8", "surrogatepass")),
        st.just(VALID.encode()),
    )
)
def test_policy_files_raise_only_policy_error(policy_file: Path, data: bytes) -> None:
    policy_file.write_bytes(data)
    try:
        load_policy(policy_file, environ={})
    except PolicyError as e:
        assert all(problem.file == str(policy_file) for problem in e.problems)
        assert "\n" not in "".join(problem.message for problem in e.problems)


def test_the_valid_policy_loads() -> None:
    assert isinstance(load_policy_text(VALID, file="p.yaml", environ={}), Policy)
