"""The unit tests mirror the package: `addons/regauth/<path>/<module>.py` is tested by
`tests/unit/<path>/test_<module>.py` (or `test_<module>_<aspect>.py` when one file would be too
long). This is how mitmproxy checks its own tree (`test/filename_matching.py`).

Modules tested only through their neighbours or the integration suite are listed in
`UNMIRRORED`. The list may only shrink: a listed module that gains its test file fails here
until it is taken off the list, so the list always says what is still owed.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "addons" / "regauth"
UNIT = ROOT / "tests" / "unit"

# Tested today through the integration suite (real mitmproxy, real clients) or through the
# adapter that wires them; each still owes a unit test file of its own.
UNMIRRORED = frozenset(
    {
        "mitm/addons_list.py",
        "mitm/admin.py",
        "mitm/jwt_view.py",
        "mitm/listener.py",
        "mitm/login_store.py",
        "mitm/metrics_observer.py",
        "mitm/patches/body_limits.py",
        "mitm/patches/framing.py",
        "mitm/patches/h2_limits.py",
        "mitm/patches/head_limits.py",
        "mitm/patches/stream_isolation.py",
        "mitm/refusal_sink.py",
    }
)


def modules() -> list[str]:
    """Every module of the package as a path relative to it, `__init__`/`__main__` aside."""
    return sorted(
        str(m.relative_to(PACKAGE))
        for m in PACKAGE.rglob("*.py")
        if m.name not in ("__init__.py", "__main__.py")
    )


def has_test(module: str) -> bool:
    """`test_<module>.py`, or `test_<module>_<aspect>.py` unless `<module>_<aspect>` is itself
    a module there (`test_admin_job_tokens.py` tests admin_job_tokens.py, not admin.py)."""
    path = Path(module)
    directory = UNIT / path.parent
    if (directory / f"test_{path.stem}.py").exists():
        return True
    siblings = {m.stem for m in (PACKAGE / path.parent).glob("*.py")}
    return any(
        t.stem.removeprefix("test_") not in siblings
        for t in directory.glob(f"test_{path.stem}_*.py")
    )


def test_every_module_has_its_unit_test_file() -> None:
    missing = [m for m in modules() if not has_test(m) and m not in UNMIRRORED]
    assert missing == [], "modules without tests/unit/<path>/test_<module>.py: " + ", ".join(
        missing
    )


def test_the_allow_list_only_shrinks() -> None:
    present = set(modules())
    stale = sorted(m for m in UNMIRRORED if m not in present or has_test(m))
    assert stale == [], "take these off UNMIRRORED (tested now, or gone): " + ", ".join(stale)


def test_the_check_sees_the_package() -> None:
    # A check that finds no modules would pass on anything.
    assert len(modules()) > 80
    assert has_test("protocol/challenge.py")
    assert not has_test("mitm/admin.py")
