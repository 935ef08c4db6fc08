"""The sans-IO boundary: the core under addons/regauth/ never imports mitmproxy (ruff TID251)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUFF = Path(sys.executable).with_name("ruff")


def _ruff_on(path: str, source: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(RUFF), "check", "--no-cache", "--select", "TID251",
                           "--stdin-filename", path, "-"], input=source, text=True,
                          capture_output=True, cwd=REPO)


@pytest.mark.parametrize("source", ["from mitmproxy import http\n", "import mitmproxy.ctx\n",
                                    "from mitmproxy.proxy import layers\n"])
def test_a_mitmproxy_import_in_the_core_fails_the_lint(source):
    result = _ruff_on("addons/regauth/new_module.py", source)
    assert result.returncode == 1
    assert "TID251" in result.stdout and "sans-IO" in result.stdout


@pytest.mark.parametrize("path", ["addons/regauth/mitm/new_adapter.py", "addons/regauth/cli.py",
                                  "tests/unit/test_x.py"])
def test_adapters_cli_and_tests_may_import_mitmproxy(path):
    assert _ruff_on(path, "from mitmproxy import http\n").returncode == 0
