"""`regauth certs client` and `regauth certs revoke`: per-build and per-account client
certificates, and the deny list a running regauth reloads.

`client` writes `client.key`, `client.cert` and `ca.crt` into DIR: the names docker's
`certs.d/HOST:PORT/`, containers' `--cert-dir` (skopeo, podman, buildah) and containerd's
hosts.toml read (`ca.crt` there is regauth's *server* CA, which clients trust; the client CA
stays with regauth). It prints the snippet for each client with the host filled in.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path

from regauth.mtls.identity import parse_subject
from regauth.mtls.revocations import Revocations
from regauth.mtls.revocations import normalize_serial
from regauth.ops import client_ca
from regauth.ops import pki
from regauth.tools import EXIT_FAILED
from regauth.tools import EXIT_INPUT
from regauth.tools import EXIT_OK
from regauth.tools import usage
from regauth.tools.trace import parse_duration


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    path.chmod(mode)


def snippets(out: Path, host: str) -> str:
    """How each client is pointed at the files in `out` for registry `host` (HOST:PORT)."""
    d = out.resolve()
    return f"""\
docker, and BuildKit inside dockerd (a host name that does not resolve to 127.0.0.0/8:
dockerd sends no certificate to loopback registries):
  sudo mkdir -p /etc/docker/certs.d/{host} && sudo cp {d}/ca.crt {d}/client.cert \\
    {d}/client.key /etc/docker/certs.d/{host}/
skopeo, podman, buildah:
  skopeo copy --dest-cert-dir {d} oci:./layout docker://{host}/builds/ID:tag
  podman push --cert-dir {d} IMAGE {host}/builds/ID:tag
buildkitd (buildkitd.toml):
  [registry."{host}"]
    ca = ["{d}/ca.crt"]
    [[registry."{host}".keypair]]
      key = "{d}/client.key"
      cert = "{d}/client.cert"
containerd, ctr (HOSTS_DIR/{host}/hosts.toml, then `ctr images push --hosts-dir HOSTS_DIR`):
  server = "https://{host}"
  [host."https://{host}"]
    capabilities = ["pull", "resolve", "push"]
    ca = "{d}/ca.crt"
    client = [["{d}/client.cert", "{d}/client.key"]]
"""


def issue(args: argparse.Namespace) -> int:
    certs_dir = Path(args.dir)
    try:
        kind, name = ("build", args.build) if args.build else ("account", args.account)
        subject = parse_subject(kind, name)
        ttl = parse_duration(args.ttl)
        if ttl <= dt.timedelta(0) or ttl > client_ca.MAX_TTL:
            raise ValueError(f"--ttl must be more than 0 and at most {client_ca.MAX_TTL.days}d")
    except ValueError as e:
        print(f"regauth certs client: {e}", file=sys.stderr)
        return EXIT_INPUT
    out = Path(args.out)
    try:
        client_ca.init_client_ca(certs_dir)
        issued = client_ca.issue_client_certificate(certs_dir, subject, ttl)
        server_ca = (certs_dir / pki.CA_CERT).read_bytes()
        out.mkdir(parents=True, exist_ok=True)
        _write(out / "client.key", issued.key_pem, 0o600)
        _write(out / "client.cert", issued.cert_pem, 0o644)
        _write(out / "ca.crt", server_ca, 0o644)
    except (OSError, ValueError) as e:
        print(f"regauth certs client: {e}", file=sys.stderr)
        return EXIT_FAILED
    if getattr(args, "json", False):
        from regauth.tools.render import print_json

        print_json(
            {
                "serial": issued.serial,
                "subject": subject.uri,
                "not_after": f"{issued.not_after:%Y-%m-%dT%H:%M:%SZ}",
                "key": str(out / "client.key"),
                "cert": str(out / "client.cert"),
                "ca": str(out / "ca.crt"),
            }
        )
        return EXIT_OK
    print(
        f"wrote {out}/client.key, client.cert (serial {issued.serial}, {subject.uri}, "
        f"valid until {issued.not_after:%Y-%m-%dT%H:%M:%SZ}) and ca.crt",
        file=sys.stderr,
    )
    if not args.quiet:
        sys.stdout.write(snippets(out, args.host))
    return EXIT_OK


def revoke(args: argparse.Namespace) -> int:
    certs_dir = Path(args.dir)
    try:
        serials = {normalize_serial(s) for s in args.serial or ()}
        builds = {parse_subject("build", b).name for b in args.build or ()}
        current = client_ca.read_revocations(certs_dir)
    except ValueError as e:
        print(f"regauth certs revoke: {e}", file=sys.stderr)
        return EXIT_INPUT
    if not serials and not builds:
        print("regauth certs revoke: give --serial or --build", file=sys.stderr)
        return EXIT_INPUT
    updated = Revocations(current.serials | serials, current.builds | builds)
    path = client_ca.write_revocations(certs_dir, updated)
    print(
        f"{path}: {len(updated.serials)} serials, {len(updated.builds)} builds revoked; "
        "a running regauth applies it within a second (also to open connections)"
    )
    return EXIT_OK


def add_parsers(certs: argparse._SubParsersAction, certs_default: str) -> None:
    client = certs.add_parser(
        "client",
        help="issue a short-lived client certificate for a build or an account",
        description="Write client.key, client.cert and ca.crt into --out and print how each "
        "client uses them.",
    )
    who = client.add_mutually_exclusive_group(required=True)
    who.add_argument("--build", metavar="ID", help="binds ${build} in policy patterns")
    who.add_argument("--account", metavar="NAME", help="an account of the policy")
    client.add_argument("--ttl", default="30m", help="lifetime: 90s, 30m, 2h, 1d (at most 30d)")
    client.add_argument("--out", required=True, metavar="DIR")
    usage.certs_dir_option(client, certs_default, "regauth's certs directory")
    client.add_argument(
        "--host", default="localhost:5443", help="registry HOST:PORT for the printed snippets"
    )
    client.add_argument("--quiet", action="store_true", help="print no snippets")
    client.add_argument(
        "--json",
        action="store_true",
        help="print the serial, subject, expiry and paths as JSON instead of the snippets",
    )
    client.set_defaults(func=issue)
    rev = certs.add_parser(
        "revoke", help="refuse client certificates by serial or build (a running regauth reloads)"
    )
    rev.add_argument("--serial", action="append", metavar="HEX")
    rev.add_argument("--build", action="append", metavar="ID")
    usage.certs_dir_option(rev, certs_default, "regauth's certs directory")
    rev.set_defaults(func=revoke)
