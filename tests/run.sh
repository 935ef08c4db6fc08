#!/usr/bin/env bash
# Set up everything the test suite needs on Debian (packages, .venv) and run it.
# Extra arguments go to pytest, e.g. tests/run.sh -k token -x
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."

# Real components, never mocks: the registry, skopeo, containerd (ctr), curl, htpasswd,
# faketime (a regauth whose clock is ahead of the registry's; a CLI whose clock is past a key's
# token lifetimes), openssl (certificate fingerprints), and the client tests' dockerd +
# docker CLI (Debian's docker.io, by absolute path: another `docker` on PATH does not count)
# and podman; HAProxy, Redis, systemd-analyze and logrotate for the operations tests and deploy/
# files; zsh to check the generated completion script (`zsh -n`); headless chromium to look
# at mitmweb's flow list (tests/integration/test_mitmweb_list.py).
declare -A packages=([docker-registry]=docker-registry [skopeo]=skopeo [ctr]=containerd
                     [haproxy]=haproxy [redis-server]=redis-server [systemd-analyze]=systemd
                     [containerd]=containerd [curl]=curl [htpasswd]=apache2-utils
                     [faketime]=faketime [openssl]=openssl [git]=git [prlimit]=util-linux
                     [/usr/sbin/dockerd]=docker.io [/usr/bin/docker]=docker.io
                     [/usr/bin/podman]=podman [/usr/bin/buildah]=buildah
                     [logrotate]=logrotate [zsh]=zsh [chromium]=chromium)
missing=()
for cmd in "${!packages[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${packages[$cmd]}")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  echo "installing Debian packages: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -q >&2
  $sudo apt-get install -y -q $(printf '%s\n' "${missing[@]}" | sort -u) >&2
fi

./run_proxy.sh --setup-only >/dev/null
.venv/bin/python -m pip install -q -e '.[test]' >&2

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy  # the whole regauth package, as configured in pyproject.toml [tool.mypy]
exec .venv/bin/python -m pytest "$@"
