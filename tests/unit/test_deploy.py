"""The deployment files under deploy/: Kubernetes manifests (kubernetes-validate), the HAProxy
config (`haproxy -c`), the systemd units (`systemd-analyze verify`), and that they agree with
regauth's own options, and the logrotate file (run by `logrotate`). The HAProxy config also runs
for real in test_scale_out.py."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from regauth.cli import build_parser
from regauth.tools.check import check_files

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S = DEPLOY / "kubernetes"
VERSIONS = ("1.29.0", kubernetes_validate.latest_version())


def _documents() -> list[tuple[str, dict]]:
    return [
        (f"{path.name}#{i}", doc)
        for path in sorted(K8S.glob("*.yaml"))
        for i, doc in enumerate(yaml.safe_load_all(path.read_text()))
        if doc
    ]


def _kind(kind: str, name: str | None = None) -> dict:
    found = [
        d
        for _, d in _documents()
        if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("where, document", _documents(), ids=[w for w, _ in _documents()])
def test_every_manifest_validates(where, document, version):
    kubernetes_validate.validate(document, version, strict=True)


def test_validation_catches_a_mistake():
    deployment = _kind("Deployment", "regauth")
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["pathh"] = (
        "/readyz"
    )
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)


def _serve_args() -> dict[str, str]:
    container = _kind("Deployment", "regauth")["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    assert args[0] == "serve"
    parsed = build_parser().parse_args(args)  # regauth itself accepts these arguments
    assert parsed.func.__name__ == "serve"
    return {k: v for k, _, v in (a.partition("=") for a in args[1:])}


def test_the_deployment_runs_replicas_with_probes_on_the_admin_port():
    deployment = _kind("Deployment", "regauth")
    assert deployment["spec"]["replicas"] >= 2
    template = deployment["spec"]["template"]
    container = template["spec"]["containers"][0]
    args = _serve_args()
    admin_port = int(args["--admin-listen"].rpartition(":")[2])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["admin"] == admin_port
    assert int(args["--listen"].rpartition(":")[2]) == ports["https"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    # Liveness, as HAProxy checks: a registry outage reaches clients as regauth's 503.
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(admin_port)
    assert annotations["prometheus.io/path"] == "/metrics"
    assert args["--state"].startswith("redis://regauth-redis:")
    assert _kind("Service", "regauth-redis")["spec"]["ports"][0]["port"] == int(
        args["--state"].rpartition(":")[2].split("/")[0]
    )


def test_the_certs_secret_and_the_policy_configmap_are_mounted_where_regauth_reads():
    spec = _kind("Deployment", "regauth")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["certs-secret"]["secret"]["secretName"] == "regauth-certs"
    assert volumes["policy"]["configMap"]["name"] == "regauth-policy"
    mounts = {m["name"]: m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
    args = _serve_args()
    assert args["--certs-dir"] == mounts["certs"]
    policy_key = next(iter(_kind("ConfigMap", "regauth-policy")["data"]))
    assert args["--policy"] == f"{mounts['policy']}/{policy_key}"
    # The init container lays the flat Secret out as regauth's certs directory.
    secret_keys = set(_kind("Secret", "regauth-certs")["stringData"])
    script = spec["initContainers"][0]["args"][0]
    for key in secret_keys:
        assert f"/secret/{key}" in script
    assert _kind("Service", "regauth")["spec"]["ports"][0]["targetPort"] == "https"


def test_the_shipped_policy_is_valid(tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text(_kind("ConfigMap", "regauth-policy")["data"]["policy.yaml"])
    assert check_files([str(policy)], no_secrets=True) == 0
    env_names = {k for k in _kind("Secret", "regauth-accounts")["stringData"]}
    assert "password_hash_env: REGAUTH_CI_PASSWORD_HASH" in policy.read_text()
    assert env_names == {"REGAUTH_CI_PASSWORD_HASH"}


def test_the_haproxy_config_is_valid_and_checks_liveness():
    env = {
        **os.environ,
        "REGAUTH_FRONTEND": "127.0.0.1:1443",
        "REGAUTH_STATS": "127.0.0.1:1404",
        "REGAUTH_REPLICA_1": "127.0.0.1:5441",
        "REGAUTH_REPLICA_1_ADMIN": "9091",
        "REGAUTH_REPLICA_2": "127.0.0.1:5442",
        "REGAUTH_REPLICA_2_ADMIN": "9092",
    }
    config = DEPLOY / "haproxy" / "haproxy.cfg"
    done = subprocess.run(
        [shutil.which("haproxy") or "/usr/sbin/haproxy", "-c", "-f", str(config)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[WARNING]" not in done.stdout + done.stderr
    text = config.read_text()
    # Liveness, not readiness: a registry outage must not take every replica out (issue 26).
    assert "mode tcp" in text and "uri /healthz" in text and "http-check expect status 200" in text
    assert "uri /readyz" not in text


def test_haproxy_names_clients_with_the_proxy_protocol_and_checks_without():
    """Every connection to a replica starts with a PROXY v2 header (the replicas run with
    --proxy-protocol); the readiness checks go to the admin port without one (HAProxy sends it
    on checks only with `check-send-proxy`, or without a check `port`).
    tests/integration/test_proxy_protocol_haproxy.py runs this for real."""
    lines = [
        line.split("#", 1)[0].split()
        for line in (DEPLOY / "haproxy" / "haproxy.cfg").read_text().splitlines()
    ]
    [default_server] = [words for words in lines if words[:1] == ["default-server"]]
    assert "send-proxy-v2" in default_server
    servers = [words for words in lines if words[:1] == ["server"]]
    assert len(servers) >= 2
    for words in servers + [default_server]:
        assert not any(
            w.startswith("check-send-proxy") or w == "no-send-proxy-v2" for w in words
        ), words
    for words in servers:
        assert "check" in words and words[words.index("port") + 1].endswith('_ADMIN}"'), words
    assert "--proxy-protocol" in (DEPLOY / "haproxy" / "haproxy.cfg").read_text()


def test_the_systemd_units_verify(tmp_path):
    regauth = Path(sys.executable).with_name("regauth")
    for unit in (DEPLOY / "systemd").glob("*.service"):
        text = unit.read_text().replace("/opt/regauth/.venv/bin/regauth", str(regauth))
        (tmp_path / unit.name).write_text(text)
    done = subprocess.run(
        [
            "systemd-analyze",
            "verify",
            "--man=no",
            str(tmp_path / "regauth@1.service"),
            str(tmp_path / "regauth-init.service"),
        ],
        env={**os.environ, "SYSTEMD_UNIT_PATH": f"{tmp_path}:"},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


def test_the_systemd_replicas_trust_haproxy_on_their_host():
    """HAProxy (deploy/haproxy/haproxy.cfg) sends a PROXY header from the replicas' host: the
    shared environment names that address, and nothing broader."""
    import ipaddress

    from regauth.mitm.patches.proxy_header import parse_networks

    values = dict(
        line.split("=", 1)
        for line in (DEPLOY / "systemd" / "regauth.env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    networks = parse_networks(values["REGAUTH_PROXY_PROTOCOL"])
    assert networks == (ipaddress.ip_network("127.0.0.1/32"),)
    replica = dict(
        line.split("=", 1)
        for line in (DEPLOY / "systemd" / "replica-1.env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert ipaddress.ip_address(replica["REGAUTH_LISTEN"].rpartition(":")[0]) in networks[0]


def test_the_systemd_environment_examples_name_variables_regauth_reads():
    import regauth.cli

    source = Path(regauth.cli.__file__).read_text()
    for example in (DEPLOY / "systemd").glob("*.env.example"):
        for line in example.read_text().splitlines():
            if line and not line.startswith("#"):
                name = shlex.split(line)[0].partition("=")[0]
                assert f'_env("{name}"' in source, (example.name, name)


def test_the_deployment_sends_no_proxy_protocol_by_default_and_the_alternative_is_valid():
    """The default Service keeps client addresses (externalTrafficPolicy: Local), so the pods
    run without --proxy-protocol (a header would be required from the peers it names). The
    commented alternative (NLB annotations, the --proxy-protocol argument) is valid once
    uncommented."""
    from regauth.mitm.patches.proxy_header import parse_networks

    service = _kind("Service", "regauth")
    assert service["spec"]["externalTrafficPolicy"] == "Local"
    args = _serve_args()
    assert "--proxy-protocol" not in args
    text = (K8S / "regauth.yaml").read_text()
    lines = text.splitlines()
    start = lines.index("  # annotations:")
    block = [lines[start].replace("# ", "", 1)]
    for line in lines[start + 1 :]:
        if not line.startswith("  #   "):
            break
        block.append(line.replace("#", " ", 1))
    annotations = yaml.safe_load("\n".join(block))["annotations"]
    assert annotations["service.beta.kubernetes.io/aws-load-balancer-proxy-protocol"] == "*"
    assert annotations["service.beta.kubernetes.io/aws-load-balancer-healthcheck-port"] == str(
        int(args["--admin-listen"].rpartition(":")[2])
    )
    alternative = yaml.safe_load(yaml.safe_dump(service))
    alternative["metadata"]["annotations"] = annotations
    for version in VERSIONS:
        kubernetes_validate.validate(alternative, version, strict=True)
    [commented] = [
        line.split("# - ", 1)[1]
        for line in lines
        if line.strip().startswith("# - --proxy-protocol=")
    ]
    container = _kind("Deployment", "regauth")["spec"]["template"]["spec"]["containers"][0]
    parsed = build_parser().parse_args([*container["args"], commented])
    assert parse_networks(parsed.proxy_protocol)


LOGROTATE = DEPLOY / "logrotate" / "regauth"
RELOAD = "systemctl reload 'regauth@*.service' >/dev/null 2>&1 || true"


def test_logrotate_rotates_the_units_logs_and_reloads_the_units():
    """The logrotate file names the logs the unit writes, and its postrotate reloads the
    units, whose ExecReload= sends the signal that reopens the log (SIGHUP)."""
    text = LOGROTATE.read_text()
    unit = (DEPLOY / "systemd" / "regauth@.service").read_text()
    assert "Environment=REGAUTH_LOG=/var/log/regauth/exchange-%i.jsonl" in unit
    assert "/var/log/regauth/exchange-*.jsonl {" in text
    assert "ExecReload=/bin/kill -HUP $MAINPID" in unit
    assert RELOAD in text
    directives = {line.split()[0] for line in text.splitlines() if line.startswith("    ")}
    assert "copytruncate" not in directives  # rename and reopen: nothing lost
    assert {"delaycompress", "nocreate", "sharedscripts"} <= directives


def test_logrotate_runs_the_shipped_file(tmp_path):
    """The shipped file, its log directory moved to tmp_path and its reload replaced by a
    marker: two forced rotations rename the log (no copy, no new file: regauth creates it
    on reopen), run the reload once per rotation, and compress the older one only."""
    logs = tmp_path / "logs"
    logs.mkdir()
    marker = tmp_path / "reloaded"
    config = tmp_path / "regauth.logrotate"
    config.write_text(
        LOGROTATE.read_text()
        .replace("/var/log/regauth/", f"{logs}/")
        .replace(RELOAD, f"echo reloaded >> {marker}")
    )
    log = logs / "exchange-1.jsonl"
    for n in (1, 2):
        log.write_text(f'{{"n":{n}}}\n')
        done = subprocess.run(
            [
                shutil.which("logrotate") or "/usr/sbin/logrotate",
                "-f",
                "-s",
                str(tmp_path / "state"),
                str(config),
            ],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        assert not log.exists()
        if n == 1:
            time.sleep(1.1)  # the rotated names carry the second (dateformat %s)
    names = sorted(p.name for p in logs.iterdir())
    assert len(names) == 2
    assert names[0].startswith("exchange-1.jsonl-") and names[0].endswith(".gz")
    assert names[1].startswith("exchange-1.jsonl-") and not names[1].endswith(".gz")
    assert (logs / names[1]).read_text() == '{"n":2}\n'
    assert marker.read_text() == "reloaded\nreloaded\n"
