"""How each container client trusts regauth's CA, as commands and files for one registry address:
what `trace` prints when a client failed the TLS handshake (README "Trusting regauth's CA" has
the same snippets, with why).

`snippets(host, port, ca, library)` gives the snippets of the clients that use that TLS library
(`ops.tls_failures.library`: `go` is docker, podman, buildah, skopeo, containerd and BuildKit;
`openssl` is curl and other OpenSSL clients), or of all of them when the library is unknown.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

# A host name or an IP address: anything else (a client's odd SNI) is not copied into commands.
_HOST = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})$|^\[?[0-9A-Fa-f:.]{2,45}\]?$")


def registry_name(host: str, port: int | None) -> str:
    """`host:port` as docker and containers/image name a registry's certs.d directory (no port
    for 443)."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address
    return host if port in (None, 443) else f"{host}:{port}"


def safe_host(candidate: str | None, fallback: str = "REGISTRY-HOST") -> str:
    return candidate if candidate and _HOST.match(candidate) else fallback


def snippets(host: str, port: int | None, ca: str, library: str | None) -> list[tuple[str, str]]:
    """[(client, snippet)] for the clients of `library` (all when None): `host`, `port` the
    address the client connected to, `ca` regauth's CA file. The snippets are shell commands or
    config file text, lines separated by newlines."""
    name = registry_name(host, port)
    url = f"https://{name}"
    ca_dir = str(PurePosixPath(ca).parent)
    go = [
        (
            "docker",
            f"sudo mkdir -p /etc/docker/certs.d/{name} && "
            f"sudo cp {ca} /etc/docker/certs.d/{name}/ca.crt",
        ),
        (
            "podman, buildah, skopeo",
            f"--cert-dir {ca_dir} (skopeo copy: --src-cert-dir/--dest-cert-dir), or for every "
            f"user: sudo mkdir -p /etc/containers/certs.d/{name} && "
            f"sudo cp {ca} /etc/containers/certs.d/{name}/ca.crt",
        ),
        (
            "containerd (ctr --hosts-dir /etc/containerd/certs.d, CRI config_path)",
            f"/etc/containerd/certs.d/{name}/hosts.toml:\n"
            f'server = "{url}"\n'
            f'[host."{url}"]\n'
            f'  capabilities = ["pull", "resolve", "push"]\n'
            f'  ca = "{ca}"',
        ),
        (
            "BuildKit client (docker build/buildx/buildctl fetch tokens on the client host)",
            f"cat /etc/ssl/certs/ca-certificates.crt {ca} > ~/.regauth-bundle.pem && "
            "export SSL_CERT_FILE=~/.regauth-bundle.pem",
        ),
    ]
    openssl = [
        ("curl", f"curl --cacert {ca} {url}/v2/"),
        (
            "the system's trust store (Debian, Ubuntu)",
            f"sudo cp {ca} /usr/local/share/ca-certificates/regauth.crt && "
            "sudo update-ca-certificates",
        ),
    ]
    if library == "go":
        return go
    if library == "openssl":
        return openssl
    return go + openssl
