"""Client × scenario bookkeeping behind the README's compatibility matrix.

A client test declares what it demonstrates with `@client_scenario(CLIENT, SCENARIO, ...)`
(on the function, or on one `pytest.param` of it). The hooks below (imported by
tests/conftest.py) record which (client, scenario) pairs passed in this session, and run the
matrix check (marked `runs_last`) after every other test. test_clients_matrix.py compares the
README table with the declarations (read from the test sources, so a partial run still checks
them) and with the outcomes of this session.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

CLIENTS = ("docker", "BuildKit", "podman", "skopeo", "containerd")
SCENARIOS = {
    "login": "log in with a password",
    "login-refused": "a wrong password is refused (at login, or at push without a login command)",
    "push": "push to a private repository with credentials",
    "pull": "pull from a private repository with credentials (BuildKit: build FROM it)",
    "logout": "log out; a private pull is refused again",
    "identity-token": "after login, the refresh (identity) token is used, never the password",
    "build-private": "10 builds FROM distinct private repositories within a minute after login",
    "anon-pull-public": "anonymous pull of a public repository",
    "anon-pull-refused": "anonymous pull of a private repository is refused",
    "anon-push-build": "anonymous push to `builds/<id>` (a capability repository)",
    "anon-push-cache-refused": "anonymous push to `cache/…` is refused",
    "delegate": "log in, push, pull in delegate mode (the registry checks regauth's tokens)",
}

client_scenario = pytest.mark.client_scenario
runs_last = pytest.mark.runs_last

# (client, scenario) → passed, for every pair some test of this session demonstrated.
RESULTS: dict[tuple[str, str], bool] = {}


def pairs(mark: pytest.Mark) -> Iterator[tuple[str, str]]:
    client, *scenarios = mark.args
    for scenario in scenarios:
        yield client, scenario


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "client_scenario(client, *scenarios): the README "
        "compatibility-matrix cells this test demonstrates",
    )
    config.addinivalue_line("markers", "runs_last: run after every other test")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.get_closest_marker("runs_last") is not None)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.when != "call" and not report.failed:
        return
    for mark in item.iter_markers("client_scenario"):
        for pair in pairs(mark):
            RESULTS[pair] = RESULTS.get(pair, True) and report.passed


def declared_in_sources(directory: Path) -> dict[tuple[str, str], list[str]]:
    """Every (client, scenario) some `client_scenario(...)` call in test_clients_*.py
    declares, with the test files declaring it (read statically: nothing has to run)."""
    found: dict[tuple[str, str], list[str]] = {}
    for path in sorted(directory.glob("test_clients_*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.Call) and _name(node.func) == "client_scenario"):
                continue
            args = [a.value for a in node.args if isinstance(a, ast.Constant)]
            if len(args) != len(node.args) or len(args) < 2:
                raise ValueError(f"{path}:{node.lineno}: client_scenario takes string literals")
            for scenario in args[1:]:
                found.setdefault((args[0], scenario), []).append(path.name)
    return found


def _name(func: ast.expr) -> str:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return ""
