"""`regauth completion bash|zsh`: the shell completion script, generated from the argument
parser by shtab (so it always matches the commands and options), with file and directory
completion for the arguments that name them."""

from __future__ import annotations

import argparse

import shtab

from regauth.tools import usage

# Arguments (by dest) that name a file or a directory, whatever the command.
FILES = frozenset({"policy", "log", "files", "file", "tests", "old", "new", "junit", "upstream_ca"})
DIRECTORIES = frozenset({"dir", "certs_dir", "out", "registry_dir"})


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script for `shell` ("bash" or "zsh"); ValueError for another shell."""
    if shell not in ("bash", "zsh"):
        raise ValueError(f"no completion for {shell!r}: bash or zsh")
    for _, command in usage.commands(parser):
        for action in command._actions:
            if action.dest in FILES:
                action.complete = shtab.FILE  # type: ignore[attr-defined]
            elif action.dest in DIRECTORIES:
                action.complete = shtab.DIRECTORY  # type: ignore[attr-defined]
    return shtab.complete(parser, shell=shell)
