"""Ready-to-paste instructions that make clients trust regauth's CA."""

from __future__ import annotations

from pathlib import Path

from regauth.protocol.urls import Origin


def trust_instructions(public: Origin, ca_path: Path) -> str:
    hostport = public.netloc if ":" in public.netloc else f"{public.netloc}:443"
    ca = ca_path.resolve()
    certs_dir = ca.parent
    return f"""\
regauth is serving {public.url}  (token realm {public.url}/v2/token)
CA certificate: {ca}

Trust it:
  curl        curl --cacert {ca} {public.url}/v2/
  skopeo      skopeo copy --dest-cert-dir {certs_dir} oci:./layout:latest \\
                docker://{public.netloc}/demo/app:1
              (and --src-cert-dir {certs_dir} when pulling)
  docker      sudo mkdir -p /etc/docker/certs.d/{public.netloc}
              sudo cp {ca} /etc/docker/certs.d/{public.netloc}/ca.crt
  containerd  /etc/containerd/certs.d/{public.netloc}/hosts.toml:
                server = "{public.url}"
                [host."{public.url}"]
                  capabilities = ["pull", "resolve", "push"]
                  ca = "{ca}"
              (ctr: --hosts-dir /etc/containerd/certs.d, or --tlscacert {ca})
  BuildKit    buildkitd.toml:
                [registry."{public.netloc}"]
                  ca = ["{ca}"]
              (buildx/buildctl fetch tokens themselves: the client host must trust it too)
  port        clients that need host:port spell it {hostport}
"""
