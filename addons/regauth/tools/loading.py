"""Loading policies for the tools: decisions only, so absent secrets never stop a tool.

`policy test`, `policy diff` and `replay` decide scopes; passwords and upstream credentials
play no part in a decision, and a policy repository's CI has none of them. Absent secrets are
therefore tolerated (the loader's `secret_notes`) and everything else is validated as usual.
"""

from __future__ import annotations

from pathlib import Path

from regauth.policy.load import load_policy
from regauth.policy.model import Policy
from regauth.policy.reader import PolicyError
from regauth.policy.reader import Problem


def load_for_decisions(path: Path) -> Policy:
    """The policy at `path`; raises PolicyError (file:line:column problems) if it is invalid."""
    notes: list[Problem] = []
    return load_policy(path, secret_notes=notes)


def rule_location(policy: Policy, rule_index: int | None) -> str:
    """`file:line` of a rule (1-based index), or `default deny`."""
    if rule_index is None:
        return "default deny"
    rule = policy.rules[rule_index - 1]
    return f"{policy.source}:{rule.line}"


__all__ = ["PolicyError", "load_for_decisions", "rule_location"]
