"""Fixtures every kind of test uses (unit, property, integration), and the session's hooks.

Fixtures only: the test policy and its constants are in tests/support/policies.py, the
fixtures that start processes (registries, regauth, dockerd, podman, containerd) in
tests/integration/conftest.py. The session fails if a process it started outlives it
(tests/support/leftovers.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path

import pytest

from regauth.mitm.log_safety import SafeRecords
from regauth.ops import pki
from tests.support.leftovers import pytest_sessionfinish  # noqa: F401 (hook)
from tests.support.leftovers import pytest_sessionstart  # noqa: F401 (hook)
from tests.support.policies import PASSWORDS
from tests.support.policies import bcrypt_hash
from tests.support.policies import policy_text
from tests.support.scenarios import pytest_collection_modifyitems  # noqa: F401 (hook)
from tests.support.scenarios import pytest_configure  # noqa: F401 (hook)
from tests.support.scenarios import pytest_runtest_makereport  # noqa: F401 (hook)


@pytest.fixture(scope="session")
def password_hashes() -> dict[str, str]:
    return {name: bcrypt_hash(pw) for name, pw in PASSWORDS.items()}


@pytest.fixture(scope="session")
def certs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("certs")
    pki.init_certs(directory)
    return directory


@pytest.fixture
def write_policy(tmp_path: Path, password_hashes: dict[str, str]) -> Callable[..., Path]:
    """`write_policy(name="policy.yaml", text=None, **policy_text_arguments)`: a policy file
    in the test's directory (`policy_text` unless `text` is given)."""

    def write(name: str = "policy.yaml", text: str | None = None, **kwargs: object) -> Path:
        path = tmp_path / name
        path.write_text(text if text is not None else policy_text(password_hashes, **kwargs))
        return path

    return write


@pytest.fixture(autouse=True)
def _no_leftover_log_filters(request: pytest.FixtureRequest) -> Iterator[None]:
    """Take off any SafeRecords filter a test put on a handler. pytest's report handler lives
    for the whole session and a filter rewrites the shared LogRecord (message, exc_info), so a
    leftover filter would change what the next tests' caplog sees."""
    yield
    plugin = request.config.pluginmanager.get_plugin("logging-plugin")
    handlers = list(logging.getLogger().handlers)
    for name in ("report_handler", "caplog_handler", "log_cli_handler", "log_file_handler"):
        handler = getattr(plugin, name, None)
        if isinstance(handler, logging.Handler):
            handlers.append(handler)
    for handler in handlers:
        for f in [f for f in handler.filters if isinstance(f, SafeRecords)]:
            handler.removeFilter(f)
