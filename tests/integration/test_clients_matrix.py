"""The README's client compatibility matrix says exactly what the client tests show.

- Every row is a known scenario and every column a known client.
- ✅ ⇔ some `client_scenario(...)` in tests/integration/test_clients_*.py declares the cell
  (read from the sources, so this holds for any subset of the suite).
- Every cell declared by a test of this session passed (this test runs last).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.scenarios import CLIENTS
from tests.support.scenarios import RESULTS
from tests.support.scenarios import SCENARIOS
from tests.support.scenarios import declared_in_sources
from tests.support.scenarios import pairs
from tests.support.scenarios import runs_last

ROOT = Path(__file__).resolve().parents[2]
CELL_VALUES = {"✅", "n/a", "—"}


def readme_matrix(text: str) -> dict[tuple[str, str], str]:
    section = text.split("\n## Client compatibility\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in rows[0].strip("|").split("|")]
    assert header[:2] == ["id", "scenario"] and tuple(header[2:]) == CLIENTS, header
    matrix: dict[tuple[str, str], str] = {}
    for row in rows[2:]:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        match = re.fullmatch(r"`([a-z-]+)`", cells[0])
        assert match, f"README matrix row without a `scenario-id`: {row}"
        scenario = match.group(1)
        assert scenario in SCENARIOS, f"README names an unknown scenario {scenario!r}"
        assert cells[1] == SCENARIOS[scenario], (cells[1], SCENARIOS[scenario])
        assert len(cells) == 2 + len(CLIENTS), row
        for client, value in zip(CLIENTS, cells[2:], strict=True):
            assert value in CELL_VALUES, f"{scenario} × {client}: {value!r}"
            matrix[(client, scenario)] = value
    return matrix


def test_readme_matrix_parser_reads_what_it_is_given():
    rows = "\n".join(f"| `{s}` | {d} | ✅ | n/a | — | ✅ | ✅ |" for s, d in SCENARIOS.items())
    text = (
        "\n## Client compatibility\n\n| id | scenario | "
        + " | ".join(CLIENTS)
        + " |\n|---|---|---|---|---|---|---|\n"
        + rows
        + "\n\n## Next\n"
    )
    matrix = readme_matrix(text)
    assert matrix[("docker", "login")] == "✅" and matrix[("BuildKit", "login")] == "n/a"
    with pytest.raises(AssertionError):
        readme_matrix(text.replace("| ✅ | n/a |", "| yes | n/a |", 1))


@runs_last
def test_readme_matrix_matches_the_client_tests(request):
    matrix = readme_matrix((ROOT / "README.md").read_text())
    assert {s for _, s in matrix} == set(SCENARIOS), "every scenario has a README row"
    declared = declared_in_sources(Path(__file__).parent)
    unknown = [pair for pair in declared if pair not in matrix]
    assert not unknown, f"tests declare cells the README does not have: {unknown}"
    for pair, value in matrix.items():
        if pair in declared:
            assert value == "✅", f"{pair} is tested ({declared[pair]}) but README says {value}"
        else:
            assert value != "✅", f"README claims {pair} but no test declares it"
    # Cells demonstrated by tests of this session must have passed.
    ran = {
        pair
        for item in request.session.items
        for mark in item.iter_markers("client_scenario")
        for pair in pairs(mark)
    }
    missing = sorted(pair for pair in ran if pair not in RESULTS)
    failed = sorted(pair for pair in ran if RESULTS.get(pair) is False)
    assert not missing and not failed, f"not run: {missing}; failed: {failed}"
