"""regauth.tools.completion: bash and zsh completion scripts generated from the parser."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from regauth.cli import build_parser
from regauth.cli import main
from regauth.tools.completion import script


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_the_script_is_valid_shell(shell: str, tmp_path: Path) -> None:
    assert shutil.which(shell), f"{shell} is not installed (tests/run.sh installs it)"
    path = tmp_path / f"regauth.{shell}"
    path.write_text(script(build_parser(), shell))
    checked = subprocess.run([shell, "-n", str(path)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_the_script_knows_every_command_and_option(shell: str) -> None:
    text = script(build_parser(), shell)
    for word in ("serve", "certs", "policy", "explain", "completion", "--admin-listen",
                 "--certs-dir", "--dry-run", "--json"):  # fmt: skip
        assert word in text, word


def test_bash_completes_subcommands_and_options(tmp_path: Path) -> None:
    assert shutil.which("bash"), "bash is not installed"
    path = tmp_path / "regauth.bash"
    path.write_text(script(build_parser(), "bash"))

    def complete(*words: str) -> set[str]:
        line = " ".join(["regauth", *words])
        program = (
            f"source {path}; COMP_WORDS=(regauth {' '.join(words)}); "
            f"COMP_CWORD={len(words)}; COMP_LINE='{line}'; COMP_POINT={len(line)}; "
            "_shtab_regauth; printf '%s\\n' \"${COMPREPLY[@]}\""
        )
        done = subprocess.run(["bash", "-c", program], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return set(done.stdout.split())

    assert {"serve", "certs", "policy", "completion"} <= complete("")
    assert {"check", "explain"} <= complete("policy", "")
    assert "--admin-listen" in complete("serve", "--adm")


def test_regauth_completion_prints_it(capsys) -> None:
    assert main(["completion", "bash"]) == 0
    assert "_shtab_regauth" in capsys.readouterr().out


def test_another_shell_is_refused() -> None:
    with pytest.raises(ValueError, match="bash or zsh"):
        script(build_parser(), "fish")
