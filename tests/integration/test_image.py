"""The container image never holds secrets (issue 20, A1).

A developer's checkout holds `certs/private/` (the CA key, the token-signing keys, the ci
password), `logs/`, `var/` and `.venv/`. The old `deploy/Containerfile` did `COPY . /src` with no
ignore file and removed `/src` in a later layer, so the COPY layer carried all of them. This
module builds the image the way an operator does, from a copy of this checkout with such
secrets planted exactly where a developer has them (and stray keys inside the package's own
directory), then exports every image and walks every layer tar:

- the build context, as podman (`.containerignore`) and docker (`.dockerignore`, classic builder
  and BuildKit) each send it, is pyproject.toml, README.md and addons/regauth/ and nothing else;
- no layer of the builder stage or of the final image (base layers included) holds a planted
  secret (a line of each planted key, the password and its hash, the contents of logs/, var/,
  .venv/), a planted path, a path under .venv/, logs/ or certs/private/, or any PEM private key
  block besides the two public ones dependencies ship (PUBLIC_KEYS); wheels and zip files in a
  layer are opened and walked too. (Not the bare words "PRIVATE KEY": OpenSSL, cryptography and
  mitmproxy contain them as PEM labels in code.)
- the final image adds only /opt/regauth and its passwd/group entries to the base (no /src, no
  wheels, no pip, no setuptools), runs as uid 10001 with `regauth` as entrypoint, and the
  Kubernetes init container's script lays out the certs directory in it as uid 10001 on a
  read-only root, where regauth then reads it;
- the same walk finds the planted keys in an image built the old way (negative control), and
  the walker itself finds keys in a synthetic layer (so the checks can fail).

Offline by construction: the base image is made here from this machine's own Python 3.12 and
the shared libraries it needs (`podman import`, no registry), the dependencies come as a
wheelhouse built on the host (`pip wheel`) through the Containerfile's `wheels` build context,
and every build and container runs with `--network=none`. Podman uses storage of its own in a
temporary directory that is removed afterwards (overlay, or vfs where overlay cannot mount);
docker is the session's private dockerd (tests/support/docker.py).
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from importlib import metadata
from pathlib import Path

import bcrypt
import pytest
import yaml

from regauth.ops import pki
from tests.support.docker import DockerClient
from tests.support.docker import Dockerd
from tests.support.podman import PODMAN
from tests.support.tools import Result

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CONTAINERFILE = Path("deploy/Containerfile")
MANIFEST = REPO / "deploy" / "kubernetes" / "regauth.yaml"
USER = "10001"
# podman asks runc for RLIMIT_NOFILE/NPROC above what this machine grants ("error setting
# rlimits for ready process: operation not permitted"): ask for modest limits instead.
ULIMITS = ("--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096")
# A PEM private key block with a body (a header alone, as in code that parses PEM, is no key).
PEM_KEY = re.compile(
    rb"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----\r?\n"
    rb"((?:[A-Za-z-]+: [^\r\n]*\r?\n)*\r?\n?[A-Za-z0-9+/=\r\n]{40,}?)"
    rb"-----END \1PRIVATE KEY-----"
)
# Private keys that are public knowledge, shipped inside dependencies, by SHA-256 of the key's
# base64 body. Any other PEM private key anywhere in any layer fails the test.
PUBLIC_KEYS = {
    "9defef65c7905f4510de25629fd4bf266a57ca512a6eea7e03599832ace50b1f": (
        "mitmproxy/certs.py: the compromised eMudhra CA key (d=4) mitmproxy recognises"
    ),
    "ee0fcbd6b7e5f26e20efb37bc0b5077cc5b0b4e593f86813fa1f6458aeb29d44": (
        "tornado/test/test.key: the key of tornado's own test suite"
    ),
}
ZIP_MAGIC = b"PK\x03\x04"


# --- the walker -----------------------------------------------------------------------------


@dataclass
class Secrets:
    """What was planted in a checkout: paths (relative to it) and byte strings that must never
    appear in a build context or an image layer."""

    paths: list[str] = field(default_factory=list)
    needles: dict[bytes, str] = field(default_factory=dict)  # bytes → what they are


def key_digest(body: bytes) -> str:
    """SHA-256 of a PEM body without its whitespace (the same key however it is wrapped)."""
    return hashlib.sha256(re.sub(rb"\s", b"", body)).hexdigest()


def content_findings(data: bytes, where: str, planted: Secrets) -> list[str]:
    """Private keys (other than PUBLIC_KEYS) and planted secrets in one file's content."""
    found = []
    for match in PEM_KEY.finditer(data):
        digest = key_digest(match.group(2))
        if digest not in PUBLIC_KEYS:
            found.append(
                f"{where}: a PEM private key ({match.group(1).decode()}PRIVATE KEY, "
                f"sha256 {digest})"
            )
    found += [
        f"{where}: holds {what}" for needle, what in planted.needles.items() if needle in data
    ]
    return found


def path_findings(path: str, where: str, planted: Secrets) -> list[str]:
    """A path that is (or is inside) something planted, or under .venv/, logs/, certs/private/
    or var/registry/ wherever it starts."""
    parts = path.strip("/").split("/")
    if path.startswith("./"):
        parts = parts[1:]
    joined = "/".join(parts)
    found = [
        f"{where}: planted path {rel}"
        for rel in planted.paths
        if joined == rel or joined.endswith("/" + rel)
    ]
    if ".venv" in parts or "logs" in parts:
        found.append(f"{where}: path under {'.venv' if '.venv' in parts else 'logs'}/")
    for pair in (["certs", "private"], ["var", "registry"]):
        if any(parts[i : i + 2] == pair for i in range(len(parts))):
            found.append(f"{where}: path under {'/'.join(pair)}/")
    return found


def scan_tar(layer: Path, name: str, planted: Secrets) -> list[str]:
    """Every finding in one layer tar (any compression): paths, contents, and the members of
    wheels and zip files in it."""
    found: list[str] = []
    with tarfile.open(layer, "r:*") as tar:
        for member in tar:
            where = f"{name}:{member.name}"
            found += path_findings(member.name, where, planted)
            if not member.isfile():
                continue
            extracted = tar.extractfile(member)
            assert extracted is not None
            data = extracted.read()
            found += content_findings(data, where, planted)
            if data.startswith(ZIP_MAGIC):
                found += scan_zip(data, where, planted)
    return found


def scan_zip(data: bytes, where: str, planted: Secrets) -> list[str]:
    """The members of a wheel or zip file inside a layer."""
    found: list[str] = []
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        return found
    with archive:
        for info in archive.infolist():
            inner = f"{where}!{info.filename}"
            found += path_findings(info.filename, inner, planted)
            if not info.is_dir():
                found += content_findings(archive.read(info), inner, planted)
    return found


@dataclass
class Image:
    """An image exported as an OCI layout: its config and its layers, base layers first."""

    ref: str
    config: dict
    layers: list[Path]

    def layer_names(self) -> list[str]:
        return [f"{self.ref} layer {i} ({p.name[:12]})" for i, p in enumerate(self.layers)]


def oci_image(layout: Path, ref: str) -> Image:
    """Read `podman save --format oci-dir` output."""

    def blob(digest: str) -> Path:
        algorithm, _, hexdigest = digest.partition(":")
        return layout / "blobs" / algorithm / hexdigest

    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads(blob(index["manifests"][0]["digest"]).read_text())
    config = json.loads(blob(manifest["config"]["digest"]).read_text())
    return Image(ref, config, [blob(layer["digest"]) for layer in manifest["layers"]])


def docker_archive_layers(archive: Path, dst: Path) -> list[Path]:
    """The layer tars of a `docker save` archive (one image), extracted to `dst`."""
    with tarfile.open(archive) as tar:
        tar.extractall(dst, filter="data")
    manifest = json.loads((dst / "manifest.json").read_text())
    return [dst / name for name in manifest[0]["Layers"]]


def tar_files(layer: Path, under: str) -> set[str]:
    """The regular files below `under/` in a layer, relative to it."""
    with tarfile.open(layer, "r:*") as tar:
        return {
            m.name.removeprefix("./").removeprefix(under + "/")
            for m in tar
            if m.isfile() and m.name.removeprefix("./").startswith(under + "/")
        }


# --- podman with private storage ------------------------------------------------------------


class Podman:
    """podman with image storage, run state and configuration of its own under `workdir` (as
    tests/support/podman.py). Storage is overlay where this kernel and file system allow it,
    else vfs: the same images, but vfs copies the whole file system for every build step and
    every container, which makes this module several times slower."""

    def __init__(self, workdir: Path) -> None:
        if not os.access(PODMAN, os.X_OK):
            raise FileNotFoundError("podman is missing (apt-get install podman)")
        self.workdir = workdir
        self.containers_conf = workdir / "containers.conf"
        self.registries_conf = workdir / "registries.conf"
        self.storage_conf = workdir / "storage.conf"
        workdir.mkdir(parents=True, exist_ok=True)
        self.containers_conf.write_text(
            '[engine]\nevents_logger = "file"\ncgroup_manager = "cgroupfs"\n'
            f'[network]\nnetwork_backend = "cni"\nnetwork_config_dir = "{workdir / "net"}"\n'
        )
        self.registries_conf.write_text("unqualified-search-registries = []\n")
        (workdir / "auth.json").write_text("{}")  # podman 4.3 refuses a missing auth file
        for driver in ("overlay", "vfs"):
            self.driver = driver
            self.storage_conf.write_text(
                f'[storage]\ndriver = "{driver}"\n'
                f'runroot = "{self.runroot}"\n'
                f'graphroot = "{self.root}"\n'
            )
            probe = self("images")
            if probe.ok:
                break
        assert probe.ok, probe.output

    @property
    def root(self) -> Path:
        return self.workdir / "storage" / self.driver

    @property
    def runroot(self) -> Path:
        return self.workdir / f"run-{self.driver}"  # podman wants at most 50 characters

    def global_options(self) -> list[str]:
        return [
            "--root",
            str(self.root),
            "--runroot",
            str(self.runroot),
            "--storage-driver",
            self.driver,
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
            "--tmpdir",
            str(self.workdir / "tmp"),
        ]

    def __call__(self, *args: str, timeout: float = 600) -> Result:
        env = {
            **os.environ,
            "CONTAINERS_CONF": str(self.containers_conf),
            "CONTAINERS_STORAGE_CONF": str(self.storage_conf),
            "CONTAINERS_REGISTRIES_CONF": str(self.registries_conf),
            "REGISTRY_AUTH_FILE": str(self.workdir / "auth.json"),
        }
        done = subprocess.run(
            [PODMAN, *self.global_options(), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            env=env,
        )
        return Result(done.returncode, done.stdout)

    def ok(self, *args: str) -> str:
        result = self(*args)
        assert result.ok, f"podman {' '.join(args)}:\n{result.output[-6000:]}"
        return result.output

    def build(self, context: Path, containerfile: Path, tag: str, *extra: str) -> None:
        self.ok(
            "build",
            "--pull=never",
            "--network=none",
            *ULIMITS,
            "--layers",
            "-f",
            str(containerfile),
            "-t",
            tag,
            *extra,
            str(context),
        )

    def export(self, ref: str, dst: Path) -> Image:
        self.ok("save", "--format", "oci-dir", "--uncompressed", "-o", str(dst), ref)
        return oci_image(dst, ref)

    def diff_ids(self, ref: str) -> list[str]:
        return json.loads(self.ok("image", "inspect", "--format", "{{json .RootFS.Layers}}", ref))


# --- a checkout with secrets in it ----------------------------------------------------------


def copy_checkout(dst: Path) -> None:
    """The tracked and untracked (not ignored) files of this working tree, as they are now."""
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        check=True,
        capture_output=True,
    ).stdout
    for rel in sorted(set(listed.decode().split("\0")) - {""}):
        source = REPO / rel
        if source.is_file() and not source.is_symlink():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dst / rel)


def plant(checkout: Path) -> Secrets:
    """Put secrets where a developer's checkout has them, and stray keys where none belong."""
    planted = Secrets()
    run_id = secrets.token_hex(8)

    def put(rel: str, data: bytes, what: str | None = None) -> None:
        path = checkout / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        planted.paths.append(rel)
        if what is not None:
            planted.needles[data.strip()] = what

    certs = checkout / "certs"
    pki.init_certs(certs)  # the CA key, a token-signing key, the client CA key, certificates
    for path in sorted(certs.rglob("*")):
        if path.is_file():
            planted.paths.append(str(path.relative_to(checkout)))
    keys = [p for p in (certs / "private").iterdir() if PEM_KEY.search(p.read_bytes())]
    assert len(keys) == 3, keys
    for key in keys:
        for match in PEM_KEY.finditer(key.read_bytes()):
            line = max(match.group(2).split(), key=len)  # a full 64-character base64 line
            planted.needles[line] = f"a line of the planted key {key.name}"
    password = f"ci-password-{run_id}-{secrets.token_urlsafe(12)}".encode()
    put("certs/private/ci-password", password + b"\n", "the planted ci password")
    put(
        "certs/private/ci-password.bcrypt",
        bcrypt.hashpw(password, bcrypt.gensalt(4)) + b"\n",
        "the planted ci password's bcrypt hash",
    )
    for rel in (
        "logs/exchange.jsonl",
        "var/registry/docker/registry/v2/repositories/a/link",
        ".venv/lib/python3.12/site-packages/secret.txt",
        ".venv/pyvenv.cfg",
    ):
        put(rel, f"canary-{run_id}-{rel}\n".encode(), f"the contents of {rel}")
    # Inside the package's own directory, which the context does send.
    ca_key = (certs / "private" / pki.MITMPROXY_CA).read_bytes()
    put("addons/regauth/leaked.key", ca_key)
    put("addons/regauth/tools/leaked.pem", ca_key)
    put("addons/regauth/exchange.jsonl", f"canary-{run_id}-jsonl\n".encode(), "a stray log")
    put("addons/regauth/.env", f"canary-{run_id}-dotenv\n".encode(), "a stray .env")
    put(
        "addons/regauth/__pycache__/leaked.cpython-312.pyc",
        f"canary-{run_id}-pyc\n".encode(),
        "a stray .pyc",
    )
    return planted


# --- a base image made from this machine's Python -------------------------------------------

STDLIB_SKIP = {"test", "idlelib", "tkinter", "turtledemo", "site-packages", "__phello__"}
TOOLS = ("mkdir", "cp", "chmod", "cat", "ls", "rm", "id")  # the init container's script uses some


def host_rootfs(root: Path, wheels: Path) -> None:
    """A python:3.12-slim look-alike made from the running interpreter's installation: it at
    /usr/local with pip and no other package, without its tests, IDLE and tkinter (as the
    official image); a POSIX shell at /bin/sh; a few coreutils; every shared library these and
    the wheels' extension modules load (libstdc++, libgcc_s: what Debian's slim image has), at
    the path the host's loader found it; an ld.so.cache that covers /usr/local/lib."""
    prefix = Path(sys.base_prefix).resolve()
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    stdlib = prefix / "lib" / version
    local = root / "usr" / "local"
    (local / "bin").mkdir(parents=True)
    executable = prefix / "bin" / version
    shutil.copy2(executable, local / "bin" / version)
    for alias in ("python3", "python"):
        (local / "bin" / alias).symlink_to(version)

    def skip(directory: str, names: list[str]) -> set[str]:
        here = Path(directory)
        skipped = {n for n in names if n.endswith(".a")}
        if here == stdlib:
            skipped |= STDLIB_SKIP & set(names)
        if here.name == "lib-dynload":
            skipped |= {n for n in names if n.startswith(("_test", "_tkinter", "_xxtest"))}
        return skipped

    shutil.copytree(stdlib, local / "lib" / version, symlinks=True, ignore=skip)
    site = local / "lib" / version / "site-packages"
    site.mkdir()
    pip = importlib.util.find_spec("pip")  # this environment's pip and its metadata, no more
    assert pip is not None and pip.origin is not None, "no pip to put in the base image"
    pip_dir = Path(pip.origin).parent
    for source in (pip_dir, *pip_dir.parent.glob(f"pip-{metadata.version('pip')}.dist-info")):
        shutil.copytree(
            source, site / source.name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__")
        )
    for library in (prefix / "lib").glob("libpython*.so*"):
        shutil.copy2(library, local / "lib" / library.name, follow_symlinks=False)
    elves = [local / "bin" / version, *(local / "lib").rglob("*.so*")]
    (root / "bin").mkdir()
    shell = shutil.which("sh")
    assert shell is not None
    shutil.copy2(Path(shell).resolve(), root / "bin" / "sh")
    elves.append(root / "bin" / "sh")
    (root / "usr" / "bin").mkdir(parents=True)
    for tool in TOOLS:
        found = shutil.which(tool, path="/usr/bin:/bin")
        assert found is not None, tool
        shutil.copy2(Path(found).resolve(), root / "usr" / "bin" / tool)
        elves.append(root / "usr" / "bin" / tool)
    extensions = root.parent / "extensions"  # the wheels' shared objects, for ldd only
    for wheel in wheels.glob("*.whl"):
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(
                extensions / wheel.name,
                [n for n in archive.namelist() if re.search(r"\.so(\.|$)", n)],
            )
    elves += [p for p in extensions.rglob("*") if p.is_file()]
    listing = subprocess.run(["ldd", *map(str, elves)], capture_output=True, text=True).stdout
    shutil.rmtree(extensions, ignore_errors=True)
    for dependency in sorted(set(re.findall(r"(/\S+) \(0x[0-9a-f]+\)", listing))):
        if (local / "lib" / Path(dependency).name).exists():
            continue  # libpython: copied to /usr/local/lib above
        if Path(dependency).is_relative_to(extensions):
            continue  # a library a wheel bundles
        target = root / dependency.lstrip("/")
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(Path(dependency).resolve(), target)
    (root / "etc").mkdir()
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\n")
    (root / "etc" / "ld.so.conf").write_text("/usr/local/lib\n")
    subprocess.run(["ldconfig", "-r", str(root)], check=True, capture_output=True)
    (root / "tmp").mkdir(mode=0o1777)
    (root / "tmp").chmod(0o1777)
    (root / "root").mkdir(mode=0o700)
    root.chmod(0o755)


def tar_rootfs(root: Path, archive: Path) -> None:
    """The root file system as one layer, owned by root."""

    def owned_by_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    with tarfile.open(archive, "w") as tar:
        tar.add(root, arcname=".", filter=owned_by_root)


def build_wheelhouse(dst: Path) -> None:
    """Wheels for regauth's dependencies and its build backend, for this interpreter."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    requirements = [*project["build-system"]["requires"], *project["project"]["dependencies"]]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--disable-pip-version-check",
            "--wheel-dir",
            str(dst),
            *requirements,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert not list(dst.glob("regauth-*")), "the wheelhouse must not carry regauth itself"


# --- fixtures -------------------------------------------------------------------------------


@dataclass
class Built:
    workdir: Path
    podman: Podman
    checkout: Path
    planted: Secrets
    base_ref: str
    base_layers: list[str]  # the base image's layer digests (uncompressed: diff IDs)
    builder: Image
    final: Image
    final_ref: str


BASE_REF = "localhost/regauth-test-base:latest"
BUILDER_REF = "localhost/regauth-test-builder:latest"
FINAL_REF = "localhost/regauth-test:latest"


@pytest.fixture(scope="module")
def built() -> Iterator[Built]:
    """The image built from a checkout with secrets, and its builder stage, exported."""
    workdir = Path(tempfile.mkdtemp(prefix="regauth-image-", dir="/tmp"))  # a short path
    podman: Podman | None = None
    try:
        podman = Podman(workdir)
        checkout = workdir / "checkout"
        copy_checkout(checkout)
        planted = plant(checkout)
        wheels = workdir / "wheels"
        build_wheelhouse(wheels)
        rootfs = workdir / "rootfs"
        host_rootfs(rootfs, wheels)
        tar_rootfs(rootfs, workdir / "rootfs.tar")
        shutil.rmtree(rootfs)
        podman.ok(
            "import",
            "--change",
            "ENV PATH=/usr/local/bin:/usr/bin:/bin",
            "--change",
            'CMD ["python3"]',
            str(workdir / "rootfs.tar"),
            BASE_REF,
        )
        (workdir / "rootfs.tar").unlink()
        stage_args = ("--build-arg", f"BASE={BASE_REF}", "--build-context", f"wheels={wheels}")
        containerfile = checkout / CONTAINERFILE
        podman.build(checkout, containerfile, BUILDER_REF, *stage_args, "--target", "builder")
        podman.build(checkout, containerfile, FINAL_REF, *stage_args)  # the builder: cached
        yield Built(
            workdir,
            podman,
            checkout,
            planted,
            BASE_REF,
            podman.diff_ids(BASE_REF),
            podman.export(BUILDER_REF, workdir / "oci-builder"),
            podman.export(FINAL_REF, workdir / "oci-final"),
            FINAL_REF,
        )
    finally:
        if podman is not None:
            podman("rm", "--all", "--force")
            podman("rmi", "--all", "--force")
        unmount_below(workdir)
        shutil.rmtree(workdir, ignore_errors=True)


def unmount_below(directory: Path) -> None:
    """Unmount whatever podman left mounted under our own work directory (deepest first)."""
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for mountpoint in sorted((m for m in mounts if m.startswith(f"{directory}/")), reverse=True):
        subprocess.run(["umount", "-l", mountpoint], capture_output=True)


def context_expected(checkout: Path, planted: Secrets) -> set[str]:
    """What the build context must be: pyproject.toml, README.md and the package's files."""
    package = {
        str(p.relative_to(checkout))
        for p in (checkout / "addons" / "regauth").rglob("*")
        if p.is_file()
    }
    return {"pyproject.toml", "README.md"} | (package - set(planted.paths))


# Empty files a RUN step leaves behind as mount points for what the runtime bind-mounts.
MOUNT_STUBS = {"etc/hostname", "etc/hosts", "etc/resolv.conf", "run/.containerenv"}
CAPTURE = "FROM scratch\nCOPY . /context/\n"  # an image of the build context as sent


# --- tests ----------------------------------------------------------------------------------


def test_ignore_files_are_identical_and_deny_by_default():
    containerignore = (REPO / ".containerignore").read_text()
    assert (REPO / ".dockerignore").read_text() == containerignore
    patterns = [
        line for line in containerignore.splitlines() if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*"
    assert {p for p in patterns if p.startswith("!")} == {
        "!pyproject.toml",
        "!README.md",
        "!addons/regauth/",
    }
    readme = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["readme"]
    assert f"!{readme}" in patterns


def test_walker_finds_keys_and_planted_secrets(tmp_path):
    """Negative control at unit level: the walker reports a key, a planted password, a planted
    path and a key inside a wheel, and not code that merely names a PEM label."""
    key = tmp_path / "certs"
    pki.init_certs(key)
    ca_key = (key / "private" / pki.MITMPROXY_CA).read_bytes()
    planted = Secrets(paths=["certs/private/ci-password"], needles={b"hunter2-xyz": "password"})
    wheel = io.BytesIO()
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("pkg/key.pem", ca_key)
    members = {
        "src/app.py": b'LABEL = b"-----BEGIN PRIVATE KEY-----"\n',
        "src/certs/private/ci-password": b"x",
        "src/notes.txt": b"the password is hunter2-xyz",
        "src/mitmproxy-ca.pem": ca_key,
        "wheels/pkg-1-py3-none-any.whl": wheel.getvalue(),
    }
    layer = tmp_path / "layer.tar"
    with tarfile.open(layer, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    findings = "\n".join(scan_tar(layer, "layer", planted))
    assert "layer:src/certs/private/ci-password: planted path" in findings
    assert "layer:src/notes.txt: holds password" in findings
    assert "layer:src/mitmproxy-ca.pem: a PEM private key" in findings
    assert "layer:wheels/pkg-1-py3-none-any.whl!pkg/key.pem: a PEM private key" in findings
    assert "app.py" not in findings
    assert len(PEM_KEY.findall(ca_key)) == 1


def test_podman_context_is_the_package_only(built):
    """What podman sends (it reads .containerignore) from a checkout holding secrets."""
    containerfile = built.workdir / "Capture.containerfile"
    containerfile.write_text(CAPTURE)
    ref = "localhost/regauth-test-context:latest"
    built.podman.build(built.checkout, containerfile, ref)
    image = built.podman.export(ref, built.workdir / "oci-context")
    (layer,) = image.layers
    assert scan_tar(layer, ref, built.planted) == []
    assert tar_files(layer, "context") == context_expected(built.checkout, built.planted)


@pytest.mark.parametrize("buildkit", [False, True], ids=["classic", "buildkit"])
def test_docker_context_is_the_package_only(built, dockerd: Dockerd, buildkit: bool):
    """What docker sends (its CLI reads .dockerignore) from the same checkout, through the
    classic builder and BuildKit, on a private dockerd."""
    work = built.workdir / f"docker-{'buildkit' if buildkit else 'classic'}"
    work.mkdir()
    dockerfile = work / "Dockerfile"
    dockerfile.write_text(CAPTURE)
    client = DockerClient(dockerd, work / "config")
    tag = f"regauth-test-context-{'buildkit' if buildkit else 'classic'}:latest"
    result = client.run(
        "build", "-f", str(dockerfile), "-t", tag, str(built.checkout), buildkit=buildkit
    )
    assert result.ok, result.output
    try:
        saved = client.run("save", "-o", str(work / "image.tar"), tag)
        assert saved.ok, saved.output
    finally:
        client.run("rmi", tag)
    layers = docker_archive_layers(work / "image.tar", work / "image")
    files: set[str] = set()
    for i, layer in enumerate(layers):
        assert scan_tar(layer, f"{tag} layer {i}", built.planted) == []
        files |= tar_files(layer, "context")
    assert files == context_expected(built.checkout, built.planted)


def test_no_layer_of_any_stage_holds_a_secret(built):
    """Every layer of the builder stage and of the final image (base layers included)."""
    findings: list[str] = []
    seen: set[str] = set()
    for image in (built.builder, built.final):
        for layer, name in zip(image.layers, image.layer_names(), strict=True):
            if layer.name not in seen:
                seen.add(layer.name)
                findings += scan_tar(layer, name, built.planted)
    assert findings == []
    # The builder did get the package's sources (and built them in place), so the walk saw them.
    builder_files: set[str] = set()
    for layer in built.builder.layers[len(built.base_layers) :]:
        builder_files |= tar_files(layer, "src")
    assert context_expected(built.checkout, built.planted) <= builder_files


def test_final_image_holds_the_installed_package_only(built):
    final = built.final
    base = len(built.base_layers)
    assert final.config["rootfs"]["diff_ids"][:base] == built.base_layers
    added: dict[str, int] = {}
    for layer in final.layers[base:]:
        with tarfile.open(layer, "r:*") as tar:
            added |= {m.name.removeprefix("./"): m.size for m in tar if not m.isdir()}
    outside = {p: size for p, size in added.items() if not p.startswith("opt/regauth/")}
    assert {"etc/passwd", "etc/group"} <= outside.keys()
    stubs = {p: size for p, size in outside.items() if p not in ("etc/passwd", "etc/group")}
    assert stubs.keys() <= MOUNT_STUBS and not any(stubs.values()), stubs
    assert "opt/regauth/bin/regauth" in added
    assert not any(p.startswith(("src/", "wheels/")) for p in added)
    assert not any(re.search(r"/site-packages/(pip|setuptools)/", p) for p in added), (
        "build tools stay in the builder"
    )
    assert not any(p.endswith(".whl") for p in added)
    config = final.config["config"]
    assert config["User"].split(":")[0] == USER
    assert config["Entrypoint"] == ["regauth"]


def run_final(built: Built, *args: str) -> Result:
    return built.podman("run", "--rm", "--network=none", *ULIMITS, *args, timeout=120)


def test_image_runs_regauth_as_uid_10001(built):
    result = run_final(built, built.final_ref, "--help")
    assert result.ok and "usage: regauth" in result.output, result.output
    result = run_final(
        built,
        "--entrypoint",
        "python3",
        built.final_ref,
        "-c",
        "import os, pwd; print(os.getuid(), os.getgid(), pwd.getpwuid(os.getuid()).pw_name)",
    )
    assert result.ok and result.output.split() == [USER, USER, "regauth"], result.output
    result = run_final(
        built,
        "--entrypoint",
        "/bin/sh",
        built.final_ref,
        "-c",
        "test ! -e /src && test ! -e /wheels && echo clean",
    )
    assert result.output.strip() == "clean", result.output


def test_kubernetes_init_container_lays_out_the_certs(built):
    """The Deployment's init container script, run in this image as the pod runs it (uid 10001,
    read-only root, no capabilities), then regauth reading the result."""
    documents = list(yaml.safe_load_all(MANIFEST.read_text()))
    deployment = next(d for d in documents if d and d["kind"] == "Deployment")
    init = deployment["spec"]["template"]["spec"]["initContainers"][0]
    secret = built.workdir / "k8s-secret"
    secret.mkdir()
    certs = built.checkout / "certs"
    for name, source in {
        "ca.crt": certs / "ca.crt",
        "token-signing.crt": certs / "token-signing.crt",
        "mitmproxy-ca.pem": certs / "private" / "mitmproxy-ca.pem",
        "token-signing.key": certs / "private" / "token-signing.key",
    }.items():
        shutil.copyfile(source, secret / name)
        (secret / name).chmod(0o400)
        os.chown(secret / name, int(USER), int(USER))  # what fsGroup gives the pod
    laid_out = built.workdir / "k8s-certs"
    laid_out.mkdir()
    os.chown(laid_out, int(USER), int(USER))
    pod = (
        "--read-only",
        "--cap-drop=all",
        "--security-opt=no-new-privileges",
        "--user",
        f"{USER}:{USER}",
    )
    result = run_final(
        built,
        *pod,
        "-v",
        f"{secret}:/secret:ro",
        "-v",
        f"{laid_out}:/certs",
        "--entrypoint",
        json.dumps(init["command"]),
        built.final_ref,
        *init["args"],
    )
    assert result.ok, result.output
    assert (laid_out / "private").stat().st_mode & 0o777 == 0o700
    assert {p.name: p.stat().st_mode & 0o777 for p in (laid_out / "private").iterdir()} == {
        "mitmproxy-ca.pem": 0o600,
        "token-signing.key": 0o600,
    }
    result = run_final(
        built,
        *pod,
        "-v",
        f"{laid_out}:/var/lib/regauth/certs",
        built.final_ref,
        "certs",
        "list",
        "--dir",
        "/var/lib/regauth/certs",
    )
    assert result.ok and "token-signing" in result.output, result.output


def test_the_old_containerfile_would_be_caught(built):
    """Negative control: the old way (`COPY . /src`, no ignore file, `rm -rf /src` later) from
    the same checkout. The files are gone from the final file system, but the walk finds every
    planted secret in the COPY layer."""
    context = built.workdir / "old-checkout"
    shutil.copytree(
        built.checkout,
        context,
        symlinks=True,
        ignore=shutil.ignore_patterns(".containerignore", ".dockerignore"),
    )
    containerfile = built.workdir / "Old.containerfile"
    containerfile.write_text("ARG BASE\nFROM ${BASE}\nCOPY . /src\nRUN rm -rf /src\n")
    ref = "localhost/regauth-test-old:latest"
    built.podman.build(context, containerfile, ref, "--build-arg", f"BASE={built.base_ref}")
    image = built.podman.export(ref, built.workdir / "oci-old")
    findings = [
        f
        for layer, name in zip(image.layers, image.layer_names(), strict=True)
        for f in scan_tar(layer, name, built.planted)
    ]
    text = "\n".join(findings)
    for rel in built.planted.paths:
        assert f"src/{rel}: planted path" in text, rel
    for what in built.planted.needles.values():
        assert f"holds {what}" in text, what
    assert "a PEM private key" in text
    for under in (".venv", "logs", "certs/private", "var/registry"):
        assert f"path under {under}/" in text, under
    result = run_final(built, "--entrypoint", "/bin/sh", ref, "-c", "test ! -e /src && echo gone")
    assert result.output.strip() == "gone", result.output
