"""Build OCI image layouts on disk for skopeo and ctr (no network, no docker)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def _write_blob(layout: Path, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    path = layout / "blobs" / "sha256" / digest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return f"sha256:{digest}"


def _write_blob_file(layout: Path, source: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    with source.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    target = layout / "blobs" / "sha256" / h.hexdigest()
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, target)
    return f"sha256:{h.hexdigest()}", target.stat().st_size


def tar_layer(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mtime = 0
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def random_blob_file(path: Path, size: int) -> None:
    """Incompressible content written in 8 MiB pieces (memory stays flat)."""
    with path.open("wb") as f:
        remaining = size
        while remaining:
            n = min(remaining, 8 << 20)
            f.write(os.urandom(n))
            remaining -= n


def random_gzip_file(path: Path, size: int) -> None:
    """A valid gzip stream of `size` incompressible bytes. skopeo sniffs layer content and
    compresses anything that is not compressed yet, which would change the digest."""
    with gzip.open(path, "wb", compresslevel=1) as f:
        remaining = size
        while remaining:
            n = min(remaining, 8 << 20)
            f.write(os.urandom(n))
            remaining -= n


def make_layout(
    layout: Path,
    tag: str = "latest",
    files: dict[str, bytes] | None = None,
    big_layer: Path | None = None,
) -> str:
    """Write an OCI layout with one image; return the manifest digest.

    `files` become a gzip tar layer (unpackable by containerd); `big_layer` (a file, moved
    into the layout, e.g. from random_gzip_file) becomes an extra gzip layer that skopeo
    copies as it is (it never unpacks layers).
    """
    layout.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    raw = tar_layer(files or {"hello.txt": b"hello from regauth tests\n" + os.urandom(16)})
    layers = []
    diff_ids = []
    compressed = gzip.compress(raw, mtime=0)
    layers.append(
        {
            "mediaType": OCI_LAYER_GZIP,
            "digest": _write_blob(layout, compressed),
            "size": len(compressed),
        }
    )
    diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
    if big_layer is not None:
        digest, size = _write_blob_file(layout, big_layer)
        layers.append({"mediaType": OCI_LAYER_GZIP, "digest": digest, "size": size})
        diff_ids.append(digest)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": _write_blob(layout, config),
                "size": len(config),
            },
            "layers": layers,
        }
    ).encode()
    manifest_digest = _write_blob(layout, manifest)
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": len(manifest),
                "annotations": {"org.opencontainers.image.ref.name": tag},
                "platform": {"architecture": "amd64", "os": "linux"},
            }
        ],
    }
    (layout / "index.json").write_text(json.dumps(index))
    return manifest_digest


def archive(layout: Path, target: Path) -> Path:
    """The layout as a tar archive, as `ctr images import` reads it."""
    with tarfile.open(target, "w") as tar:
        for item in layout.iterdir():
            tar.add(item, arcname=item.name)
    return target
