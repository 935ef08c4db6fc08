"""The trust snippets `trace` prints for a client that failed the TLS handshake
(`regauth.tools.trust_snippets`): per TLS library, for the exact registry address, and never
with a client's odd server name copied into a command."""

from __future__ import annotations

from regauth.tools.trust_snippets import registry_name
from regauth.tools.trust_snippets import safe_host
from regauth.tools.trust_snippets import snippets

CA = "/srv/regauth/certs/ca.crt"


def test_go_clients_get_the_container_tools_snippets_for_their_address() -> None:
    found = dict(snippets("regauth.test", 5443, CA, "go"))
    assert list(found) == [
        "docker",
        "podman, buildah, skopeo",
        "containerd (ctr --hosts-dir /etc/containerd/certs.d, CRI config_path)",
        "BuildKit client (docker build/buildx/buildctl fetch tokens on the client host)",
    ]
    assert found["docker"] == (
        "sudo mkdir -p /etc/docker/certs.d/regauth.test:5443 && "
        "sudo cp /srv/regauth/certs/ca.crt /etc/docker/certs.d/regauth.test:5443/ca.crt"
    )
    assert found["podman, buildah, skopeo"].startswith("--cert-dir /srv/regauth/certs ")
    containerd = found["containerd (ctr --hosts-dir /etc/containerd/certs.d, CRI config_path)"]
    assert containerd.splitlines() == [
        "/etc/containerd/certs.d/regauth.test:5443/hosts.toml:",
        'server = "https://regauth.test:5443"',
        '[host."https://regauth.test:5443"]',
        '  capabilities = ["pull", "resolve", "push"]',
        '  ca = "/srv/regauth/certs/ca.crt"',
    ]


def test_openssl_clients_get_curl_and_the_system_store_and_unknown_ones_everything() -> None:
    openssl = dict(snippets("localhost", 443, CA, "openssl"))
    assert openssl["curl"] == "curl --cacert /srv/regauth/certs/ca.crt https://localhost/v2/"
    assert len(snippets("localhost", 5443, CA, None)) == 6


def test_names() -> None:
    assert registry_name("::1", 5443) == "[::1]:5443"
    assert registry_name("regauth.test", 443) == "regauth.test"
    assert safe_host("regauth.test") == "regauth.test"
    assert safe_host("127.0.0.1") == "127.0.0.1"
    assert safe_host("evil.test; rm -rf /") == "REGISTRY-HOST"
    assert safe_host("a\nb", "127.0.0.1") == "127.0.0.1"
    assert safe_host(None) == "REGISTRY-HOST"
