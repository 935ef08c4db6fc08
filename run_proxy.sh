#!/usr/bin/env bash
# regauth: one command from a fresh clone. Creates .venv, installs regauth, creates certs/ on
# first run and starts the proxy in reverse mode. Without --upstream it also starts a local
# distribution registry (Debian's docker-registry) in token mode and stops it on exit.
#
# Every option can also be set by the environment variable in brackets.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")"

usage() {
  cat <<'USAGE'
usage: ./run_proxy.sh [options] [-- extra mitmproxy arguments]

Every option of `regauth serve` (see `.venv/bin/regauth serve --help`) is passed on to it:
  --upstream URL      registry to guard, http or https [REGAUTH_UPSTREAM]
                      (default: a local docker-registry on loopback, token mode)
  --upstream-ca FILE  CA bundle of an https upstream [REGAUTH_UPSTREAM_CA]
  --listen HOST:PORT  where regauth listens (default 127.0.0.1:5443) [REGAUTH_LISTEN]
  --public-url URL    URL clients use (default derived from --listen) [REGAUTH_PUBLIC_URL]
  --certs-dir DIR     CA and signing keys (default certs/) [REGAUTH_CERTS_DIR]
  --policy FILE       policy (default policies/default.yaml) [REGAUTH_POLICY]
  --log FILE          exchange log (default logs/exchange.jsonl) [REGAUTH_LOG]
  --web               mitmweb on 127.0.0.1:8081 behind a printed token [REGAUTH_WEB=1]
  --admin-listen HOST:PORT|off  /metrics, /healthz, /readyz (default 127.0.0.1:9090 when
                      free) [REGAUTH_ADMIN_LISTEN]
  --state URL         redis://HOST:PORT/DB: login limits shared by replicas [REGAUTH_STATE]
  --delegate-unchecked  delegate mode: forward even if the registry does not check
                      regauth's tokens (test setups only) [REGAUTH_DELEGATE_UNCHECKED=1]
  --proxy-protocol CIDR[,CIDR...]  load balancers sending a PROXY protocol header
                      (required from them, refused from others) [REGAUTH_PROXY_PROTOCOL]
  --allow-plain-http  also serve plain HTTP on the proxy port (test setups only)
                      [REGAUTH_ALLOW_PLAIN_HTTP=1]
  -v, --verbose       also log connection churn on the console [REGAUTH_VERBOSE=1]
  --dry-run           check the options and the policy, print the settings, exit
Only for run_proxy.sh:
  --setup-only        create .venv and certs/, then exit (used by tests/run.sh)
  -h, --help          this help
USAGE
}

die() { echo "run_proxy.sh: $*" >&2; exit 2; }

args=()
setup_only=0
upstream=${REGAUTH_UPSTREAM:-}
certs_dir=${REGAUTH_CERTS_DIR:-certs}
policy=${REGAUTH_POLICY:-policies/default.yaml}
# run_proxy.sh reads the options it acts on itself (the upstream, the certs directory, the
# policy) and passes every other one on to `regauth serve` in order, so an option `regauth
# serve` knows is never refused here (regauth serve refuses unknown ones).
while [ $# -gt 0 ]; do
  case "$1" in
    --upstream) [ $# -ge 2 ] || die "--upstream needs a URL"; upstream=$2; shift 2 ;;
    --upstream=*) upstream=${1#*=}; shift ;;
    --certs-dir|--dir) [ $# -ge 2 ] || die "$1 needs a value"; certs_dir=$2; shift 2 ;;
    --certs-dir=*|--dir=*) certs_dir=${1#*=}; shift ;;
    --policy) [ $# -ge 2 ] || die "--policy needs a value"; policy=$2; shift 2 ;;
    --policy=*) policy=${1#*=}; shift ;;
    --setup-only) setup_only=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    *) args+=("$1"); shift ;;
  esac
done

find_python() {
  local c root
  for c in python3.13 python3.12 python3; do
    if command -v "$c" >/dev/null 2>&1 &&
       "$c" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; then
      command -v "$c"; return 0
    fi
  done
  # pyenv installs versions whose PATH shims fail unless selected: try them directly.
  if root=$(pyenv root 2>/dev/null); then
    for c in "$root"/versions/3.1[2-9]*/bin/python3; do
      if [ -x "$c" ] && "$c" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
        echo "$c"; return 0
      fi
    done
  fi
  return 1
}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
  py=$(find_python) || die "regauth needs Python >= 3.12 (mitmproxy 12). Install python3.12 or python3.13 and re-run."
  echo "creating .venv with $py" >&2
  rm -rf .venv
  "$py" -m venv .venv
fi
stamp=.venv/.regauth-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "installing regauth into .venv" >&2
  .venv/bin/python -m pip install -q --upgrade pip >&2
  .venv/bin/python -m pip install -q -e . >&2
  touch "$stamp"
fi

# Refuse an option `regauth serve` does not know before anything is created: its own parser
# checks them (exit 2 with argparse's message).
.venv/bin/python -c 'import sys; from regauth.cli import build_parser
build_parser().parse_args(["serve", *sys.argv[1:]])' "${args[@]}" -- "$@"

.venv/bin/regauth certs init --certs-dir "$certs_dir" >&2

# The default policy's `ci` account: a random password made on first run, never a known one.
if [ "$policy" = policies/default.yaml ] && [ -z "${REGAUTH_CI_PASSWORD_HASH:-}" ]; then
  pw_file="$certs_dir/private/ci-password"
  if [ ! -s "$pw_file.bcrypt" ]; then
    (umask 077; .venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(24))' > "$pw_file")
    (umask 077; .venv/bin/regauth passwd --stdin < "$pw_file" > "$pw_file.bcrypt")
    echo "created the ci account's password in $pw_file" >&2
  fi
  REGAUTH_CI_PASSWORD_HASH=$(cat "$pw_file.bcrypt")
  export REGAUTH_CI_PASSWORD_HASH
  echo "ci account: user ci, password in $pw_file" >&2
fi

[ "$setup_only" = 1 ] && exit 0

dry_run=0
for a in "${args[@]}"; do [ "$a" = --dry-run ] && dry_run=1; done
if [ -z "$upstream" ] && [ "$dry_run" = 0 ] && ! command -v docker-registry >/dev/null 2>&1; then
  echo "no --upstream given: installing Debian's docker-registry for the embedded registry" >&2
  if ! { as_root apt-get install -y docker-registry >&2 ||
         { as_root apt-get update >&2 && as_root apt-get install -y docker-registry >&2; }; }; then
    die "cannot install docker-registry: run 'sudo apt-get install docker-registry', or pass --upstream URL"
  fi
fi

upstream_args=()
[ -n "$upstream" ] && upstream_args=(--upstream "$upstream")
exec .venv/bin/regauth serve "${upstream_args[@]}" --certs-dir "$certs_dir" --policy "$policy" \
  "${args[@]}" -- "$@"
