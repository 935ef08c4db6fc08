"""`regauth replay` and `regauth trace` on a log written by real clients (skopeo, ctr) through
a real `regauth serve`, and `replay` under the shipped policies."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support.oci import archive
from tests.support.policies import PASSWORDS
from tests.support.policies import build_id
from tests.support.proxy import REGAUTH
from tests.support.proxy import ProxyProcess
from tests.support.tools import skopeo

POLICIES = Path(__file__).resolve().parents[2] / "policies"


def regauth(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(REGAUTH), *args], capture_output=True, text=True, timeout=120)


@pytest.fixture
def traffic(
    write_policy, make_registry, make_proxy, layout, containerd, tmp_path: Path
) -> tuple[ProxyProcess, Path]:
    """A day of traffic: ci pushes, anonymous pulls and a refused anonymous push, a builder
    pushes its capability repository, ctr pushes with a password (POST grant)."""
    registry = make_registry()
    policy = write_policy()
    proxy = make_proxy(policy, registry.url)
    path, _ = layout
    certs = str(proxy.certs_dir)
    source = f"oci:{path}:latest"
    assert skopeo(
        "copy",
        "--dest-cert-dir",
        certs,
        "--dest-creds",
        f"ci:{PASSWORDS['ci']}",
        source,
        f"docker://{proxy.netloc}/public/app:1",
    ).ok
    assert skopeo("inspect", "--cert-dir", certs, f"docker://{proxy.netloc}/public/app:1").ok
    assert not skopeo(
        "copy", "--dest-cert-dir", certs, source, f"docker://{proxy.netloc}/cache/app:1"
    ).ok
    assert skopeo(
        "copy", "--dest-cert-dir", certs, source, f"docker://{proxy.netloc}/builds/{build_id()}:1"
    ).ok
    ref = f"{proxy.netloc}/demo/ctr:latest"
    assert containerd.ctr(
        "images",
        "import",
        "--base-name",
        f"{proxy.netloc}/demo/ctr",
        str(archive(path, tmp_path / "image.tar")),
    ).ok
    assert containerd.ctr(
        "images",
        "push",
        *containerd.trusting(proxy.netloc, proxy.ca),
        "--user",
        f"ci:{PASSWORDS['ci']}",
        ref,
    ).ok
    return proxy, policy


def test_replay_under_the_same_policy_changes_nothing(traffic) -> None:
    proxy, policy = traffic
    done = regauth("replay", str(proxy.log_path), "--policy", str(policy))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "changed 0" in done.stdout
    assert "not re-decided" in done.stdout  # the builder's capability id is redacted


def test_replay_under_a_draft_reports_each_kind_of_change(traffic, tmp_path: Path) -> None:
    proxy, policy = traffic
    draft = tmp_path / "draft.yaml"
    text = policy.read_text()
    # Nobody pulls public/ anonymously any more; anonymous may push cache/; ci loses push on
    # demo/ (the "*" rule becomes pull-only); alice is gone (nobody used her).
    text = text.replace(
        "  - comment: anyone pulls the public area\n    account: any\n"
        '    repository: ["public/**", "demo/**"]\n    actions: [pull]\n',
        "  - comment: anyone pulls the demo area\n    account: any\n"
        '    repository: ["demo/**"]\n    actions: [pull]\n'
        "  - comment: anonymous reads the cache\n    account: anonymous\n"
        '    repository: "cache/**"\n    actions: [pull]\n',
    )
    text = text.replace(
        '    repository: ["public/**", "demo/**"]\n    actions: ["*"]\n',
        '    repository: ["public/**"]\n    actions: ["*"]\n',
    )
    draft.write_text(text)
    done = regauth("replay", str(proxy.log_path), "--policy", str(draft))
    assert done.returncode == 1, done.stdout + done.stderr
    out = done.stdout
    assert "granted→denied anonymous from 127.0.0.1 repository:public/app:pull" in out
    assert "denied→granted anonymous from 127.0.0.1 repository:cache/app:pull,push" in out
    assert "narrower ci from 127.0.0.1 repository:demo/ctr:pull,push" in out
    assert f"new [pull] by rule 3 ({draft}:" in out
    assert "old [pull,push] by rule 2 (line 25) 'CI publishes'" in out
    doc = json.loads(
        regauth("replay", str(proxy.log_path), "--policy", str(draft), "--json").stdout
    )
    assert doc["changed"]["granted→denied"] >= 1 and doc["changed"]["narrower"] >= 1
    assert doc["requests"] >= 5 and doc["unchanged"] >= 1
    change = next(c for c in doc["changes"] if c["kind"] == "narrower")
    assert change["account"] == "ci" and change["new"]["granted"] == ["pull"]


def test_replay_and_trace_run_on_the_shipped_policies(traffic) -> None:
    proxy, _ = traffic
    for policy in sorted(POLICIES.glob("*.yaml")):
        done = regauth("replay", str(proxy.log_path), "--policy", str(policy))
        assert done.returncode in (0, 1), done.stderr
        assert "re-decided" in done.stdout
    traced = json.loads(regauth("trace", str(proxy.log_path), "--json").stdout)
    steps = {s["step"] for c in traced["conversations"] for s in c["steps"]}
    assert {"challenge", "token request", "grant", "retry", "request"} <= steps
    codes = {d["code"] for c in traced["conversations"] for d in c["diagnoses"]}
    assert "partial-grant" in codes  # the refused anonymous push to cache/


def test_replay_input_errors_exit_2(traffic, tmp_path: Path) -> None:
    proxy, policy = traffic
    assert (
        regauth("replay", str(tmp_path / "absent.jsonl"), "--policy", str(policy)).returncode == 2
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules: []\n")
    done = regauth("replay", str(proxy.log_path), "--policy", str(bad))
    assert done.returncode == 2 and f"{bad}:1:1:" in done.stderr
    torn = tmp_path / "torn.jsonl"
    torn.write_text(proxy.log_path.read_text() + '{"time": "2026-')
    done = regauth("replay", str(torn), "--policy", str(policy))
    assert done.returncode == 0 and "1 lines of" in done.stderr
