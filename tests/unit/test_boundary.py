"""The sans-IO boundary (the package map in addons/regauth/__init__.py), enforced by ruff's
banned-api rule (TID251, pyproject.toml and addons/regauth/ops/ruff.toml) and checked here:

- the core never imports mitmproxy;
- network and process I/O (`subprocess`, `socket`, `ssl`, `urllib.request`, `http.client`,
  `redis`) only in `ops/`, `logins/redis_store.py`, `mitm/`, `cli.py`, tests and benchmarks;
- and the tree as it is keeps both rules (an AST walk, independent of ruff's configuration).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "addons" / "regauth"
RUFF = Path(sys.executable).with_name("ruff")
BANNED_IO = ("subprocess", "socket", "ssl", "urllib.request", "http.client", "redis")
IO_ALLOWED = ("ops/", "logins/redis_store.py", "mitm/", "cli.py")
MITMPROXY_ALLOWED = ("mitm/", "cli.py")


def _ruff_on(path: str, source: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(RUFF), "check", "--no-cache", "--select", "TID251", "--stdin-filename", path, "-"],
        input=source,
        text=True,
        capture_output=True,
        cwd=REPO,
    )


def _import_of(module: str) -> str:
    top, _, rest = module.partition(".")
    return f"from {top} import {rest}\n" if rest else f"import {module}\n"


@pytest.mark.parametrize(
    "source",
    [
        "from mitmproxy import http\n",
        "import mitmproxy.ctx\n",
        "from mitmproxy.proxy import layers\n",
    ],
)
@pytest.mark.parametrize(
    "path",
    [
        "addons/regauth/new_module.py",
        "addons/regauth/protocol/new.py",
        "addons/regauth/ops/new.py",
        "addons/regauth/tools/new.py",
    ],
)
def test_a_mitmproxy_import_outside_the_adapters_fails_the_lint(path, source):
    result = _ruff_on(path, source)
    assert result.returncode == 1
    assert "TID251" in result.stdout and "mitmproxy" in result.stdout


@pytest.mark.parametrize(
    "path", ["addons/regauth/mitm/new_adapter.py", "addons/regauth/cli.py", "tests/unit/test_x.py"]
)
def test_adapters_cli_and_tests_may_import_mitmproxy(path):
    assert _ruff_on(path, "from mitmproxy import http\n").returncode == 0


@pytest.mark.parametrize("module", BANNED_IO)
@pytest.mark.parametrize(
    "path",
    [
        "addons/regauth/front.py",
        "addons/regauth/protocol/new.py",
        "addons/regauth/policy/new.py",
        "addons/regauth/tokens/new.py",
        "addons/regauth/logins/new.py",
        "addons/regauth/tools/new.py",
    ],
)
def test_io_in_the_sans_io_core_fails_the_lint(module, path):
    for source in (_import_of(module), f"def f():\n    import {module}\n"):
        result = _ruff_on(path, source)
        assert result.returncode == 1, (path, source)
        assert "sans-IO" in result.stdout


@pytest.mark.parametrize("module", BANNED_IO)
@pytest.mark.parametrize(
    "path",
    [
        "addons/regauth/ops/new.py",
        "addons/regauth/mitm/new.py",
        "addons/regauth/logins/redis_store.py",
        "addons/regauth/cli.py",
        "tests/integration/test_x.py",
        "bench/x.py",
    ],
)
def test_io_is_allowed_where_the_map_says(module, path):
    assert _ruff_on(path, _import_of(module)).returncode == 0


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def _banned(imports: set[str], banned: tuple[str, ...]) -> list[str]:
    return sorted(i for i in imports for b in banned if i == b or i.startswith(b + "."))


def test_the_tree_keeps_the_boundary():
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        where = path.relative_to(PACKAGE).as_posix()
        imports = _imports(path)
        if not where.startswith(MITMPROXY_ALLOWED):
            problems += [f"{where}: {i}" for i in _banned(imports, ("mitmproxy",))]
        if not where.startswith(IO_ALLOWED):
            problems += [f"{where}: {i}" for i in _banned(imports, BANNED_IO)]
    assert problems == []
