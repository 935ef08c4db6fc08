"""The local registry process (`regauth.ops.registry_process`), without starting a registry:
the configuration it writes for distribution, its URL, the access-log lines it reports, and a
process that dies at start being reported with its log. Real registries run in the integration
tests (tests/integration/conftest.py `make_registry`)."""

from __future__ import annotations

import shutil
import socket

import pytest

from regauth.ops import registry_process
from regauth.ops.registry_process import RegistryProcess
from regauth.ops.registry_process import TokenAuth
from regauth.ops.registry_process import registry_config


def test_the_configuration_for_each_auth_mode(tmp_path):
    plain = registry_config(tmp_path / "data", 5000, secret="s")
    assert plain["http"]["addr"] == "127.0.0.1:5000" and plain["http"]["secret"] == "s"
    assert plain["storage"]["filesystem"]["rootdirectory"] == str(tmp_path / "data")
    assert plain["storage"]["delete"] == {"enabled": True}
    assert "auth" not in plain and "tls" not in plain["http"]
    assert "draintimeout" not in plain["http"]
    token = TokenAuth("https://localhost:5443/v2/token", "svc", "iss", tmp_path / "b.pem")
    with_token = registry_config(
        tmp_path,
        5000,
        token=token,
        htpasswd=tmp_path / "h",
        tls=(tmp_path / "c", tmp_path / "k"),
        drain_timeout=30,
        host="::1",
    )
    assert with_token["auth"] == {
        "token": {
            "realm": "https://localhost:5443/v2/token",
            "service": "svc",
            "issuer": "iss",
            "rootcertbundle": str(tmp_path / "b.pem"),
        }
    }  # token mode wins over htpasswd
    assert with_token["http"]["addr"] == "[::1]:5000"
    assert with_token["http"]["tls"] == {
        "certificate": str(tmp_path / "c"),
        "key": str(tmp_path / "k"),
    }
    assert with_token["http"]["draintimeout"] == "30s"
    htpasswd = registry_config(tmp_path, 5000, htpasswd=tmp_path / "h")
    assert htpasswd["auth"] == {
        "htpasswd": {"realm": "staging-registry", "path": str(tmp_path / "h")}
    }
    assert (
        registry_config(tmp_path, 1)["http"]["secret"]
        != registry_config(tmp_path, 1)["http"]["secret"]
    )  # random unless given


def test_the_url_and_a_free_port(tmp_path):
    assert RegistryProcess(tmp_path, port=5000).url == "http://127.0.0.1:5000"
    assert (
        RegistryProcess(tmp_path, port=5000, host="::1", tls=(tmp_path, tmp_path)).url
        == "https://[::1]:5000"
    )
    port = registry_process.free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # it was free


def test_requests_seen_reads_the_access_log_lines_only(tmp_path):
    registry = RegistryProcess(tmp_path, port=5000)
    assert registry.requests_seen() == []
    registry.log_path.write_text(
        'time="2026-01-01T00:00:00Z" level=info msg="response completed" http.request.uri="/v2/"\n'
        '127.0.0.1 - - [01/Jan/2026:00:00:00 +0000] "GET /v2/ HTTP/1.1" 401 87 "" "regauth"\n'
        "garbage\n"
        '127.0.0.1 - - [01/Jan/2026:00:00:01 +0000] "PUT /v2/a/manifests/1 HTTP/1.1" 201 0 "" '
        '"containerd/1.7"\n'
    )
    assert registry.requests_seen() == ["GET /v2/ HTTP/1.1", "PUT /v2/a/manifests/1 HTTP/1.1"]


def test_a_registry_that_exits_at_start_is_reported_with_its_log(tmp_path, monkeypatch):
    monkeypatch.setattr(registry_process, "find_binary", lambda: shutil.which("false"))
    registry = RegistryProcess(tmp_path / "registry")
    with pytest.raises(RuntimeError, match="docker-registry exited with 1; see .*registry.log"):
        registry.start(timeout=10)
    assert (tmp_path / "registry" / "config.yml").exists()
    registry.stop()


def test_a_missing_binary_names_the_package(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(FileNotFoundError, match="apt-get install docker-registry"):
        registry_process.find_binary()
