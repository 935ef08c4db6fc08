"""`regauth replay LOG --policy NEW` (`regauth.tools.replay`): every token request the log shows
decided is decided again under NEW, as the same account from the same address; per scope the
old and new grants compare as unchanged, granted→denied, denied→granted, narrower, wider or
different; what was refused before a decision, or names a redacted capability id, is counted
apart. Untrusted text in its output is test_render.py."""

from __future__ import annotations

import io
import json

from regauth.policy.load import load_policy_text
from regauth.tools.log_records import parse_lines
from regauth.tools.render import Printer
from regauth.tools.replay import as_json
from regauth.tools.replay import classify
from regauth.tools.replay import replay
from regauth.tools.replay import report

HASH = "$2b$04$" + "a" * 53
NEW = load_policy_text(
    f"""version: 1
service: s
accounts:
  ci: {{password_hash: "{HASH}"}}
rules:
  - comment: CI reads the cache
    account: ci
    repository: "cache/**"
    actions: [pull]
  - comment: anyone pulls public
    account: any
    repository: "public/**"
    networks: [10.0.0.0/8]
    actions: [pull]
""",
    "new.yaml",
)


def _token(
    line: int,
    account: str | None,
    client: str,
    *decisions: tuple[str, list[str]],
    status: int = 200,
) -> str:
    response: dict[str, object] = {
        "decisions": [
            {
                "scope": scope,
                "granted": granted,
                "outcome": "granted" if granted else "denied",
                "rule": 1,
                "line": 7,
            }
            for scope, granted in decisions
        ]
    }
    if account is not None:
        response["account"] = account
    return json.dumps(
        {
            "time": f"2026-01-01T00:00:0{line}+00:00",
            "conversation": f"c{line}",
            "client": f"{client}:4000",
            "kind": "token",
            "status": status,
            "token_response": response,
        }
    )


def test_replay_classification() -> None:
    assert classify({"pull"}, {"pull"}) is None
    assert classify({"pull"}, set()) == "granted→denied"
    assert classify(set(), {"pull"}) == "denied→granted"
    assert classify({"pull", "push"}, {"pull"}) == "narrower"
    assert classify({"pull"}, {"pull", "push"}) == "wider"
    assert classify({"pull"}, {"push"}) == "different"


def test_each_recorded_decision_is_decided_again_under_the_new_policy():
    entries = parse_lines(
        [
            _token(
                1,
                "ci",
                "10.0.0.1",
                ("repository:cache/go:pull,push", ["pull", "push"]),
                ("repository:cache/go:pull", ["pull"]),
            ),
            _token(2, "anonymous", "10.0.0.2", ("repository:public/a:pull", [])),
            _token(3, "anonymous", "192.0.2.1", ("repository:public/a:pull", ["pull"])),
            _token(4, "bob", "10.0.0.3", ("repository:cache/go:pull", ["pull"])),
            _token(
                5, "anonymous", "10.0.0.4", ("repository:builds/<id:0123456789>:push", ["push"])
            ),
            _token(6, None, "10.0.0.5", status=401),  # refused before any decision
            json.dumps({"time": "2026-01-01T00:00:07+00:00", "kind": "registry", "status": 200}),
        ]
    ).entries
    result = replay(entries, NEW)
    assert (
        result.requests,
        result.not_decided,
        result.redacted,
        result.decisions,
        result.unchanged,
    ) == (5, 1, 1, 5, 1)
    assert dict(result.kinds) == {"narrower": 1, "denied→granted": 1, "granted→denied": 2}
    changes = {(c.kind, c.account, c.scope): c for c in result.changed}
    bob = changes[("granted→denied", "bob", "repository:cache/go:pull")]
    assert bob.new_rule == "account 'bob' is not in new.yaml" and bob.new_granted == ()
    narrower = changes[("narrower", "ci", "repository:cache/go:pull,push")]
    assert narrower.new_granted == ("pull",) and narrower.address == "10.0.0.1"
    assert narrower.new_rule.startswith("rule 1 (new.yaml:")
    outside = changes[("granted→denied", "anonymous", "repository:public/a:pull")]
    assert outside.address == "192.0.2.1" and outside.new_rule == "default deny"


def test_the_report_and_json_say_the_same_and_the_exit_code_is_the_finding():
    entries = parse_lines(
        [
            _token(1, "ci", "10.0.0.1", ("repository:cache/go:pull", ["pull"])),
            _token(2, "ci", "10.0.0.1", ("repository:cache/go:pull", ["pull", "push"])),
            _token(3, "ci", "10.0.0.1", ("repository:cache/go:pull", ["pull", "push"])),
        ]
    ).entries
    result = replay(entries, NEW)
    out = io.StringIO()
    assert report(result, Printer(out, color=False)) == 1
    lines = out.getvalue().splitlines()
    assert lines[0] == (
        "replay under new.yaml: 3 token requests (3 scopes) re-decided, "
        "0 refused before any decision"
    )
    assert lines[1] == "  unchanged 1, changed 2 (narrower 2)"
    assert lines[2] == "narrower ci from 10.0.0.1 repository:cache/go:pull ×2"
    assert lines[3].startswith("    old [pull,push] by rule 1")
    assert lines[4].startswith("    new [pull] by rule 1 (new.yaml:")
    doc = as_json(result)
    assert doc["changed"] == {"narrower": 2} and doc["unchanged"] == 1
    [change] = doc["changes"]
    assert change["count"] == 2 and change["new"]["granted"] == ["pull"]
    unchanged = replay(entries[:1], NEW)
    assert report(unchanged, Printer(io.StringIO(), color=False)) == 0
