#!/usr/bin/env bash
# Make sure the Debian packages `make demo` / `make test` need are installed:
#   redis-server  (/usr/bin/redis-server)  - tests start their own on free ports
#   nginx         (/usr/sbin/nginx)        - tests start their own on free ports
#   chromium      (/usr/bin/chromium)      - headless browser for the Playwright tests
#   postgresql    (/usr/lib/postgresql/<version>/bin/initdb) - tests create their own clusters
#                 (tests/postgres_server.py) on free ports
#   nodejs, npm   (node, npm)              - TypeScript from npm checks websocket.js's declarations
#                 (make typecheck; the version is pinned in package-lock.json)
# plus a Python that can create a virtualenv (python3.11, else python3, with venv/ensurepip).
#
# Fast no-op when everything is present. As root, missing packages are installed with
# `apt-get update` (once) + `apt-get install -y --no-install-recommends`, with services
# prevented from auto-starting during the install. Not root: prints the exact
# `sudo apt-get install ...` line and fails.
set -euo pipefail

missing=()

# have BINARY [EXTRA_PATH...]: found on PATH or at one of the given absolute paths.
# (/usr/sbin is often not on a normal user's PATH, hence the explicit paths.)
have() {
    local bin=$1
    shift
    command -v "$bin" >/dev/null 2>&1 && return 0
    local path
    for path in "$@"; do
        [ -x "$path" ] && return 0
    done
    return 1
}

have redis-server /usr/bin/redis-server /usr/sbin/redis-server || missing+=(redis-server)
have nginx /usr/sbin/nginx /usr/bin/nginx || missing+=(nginx)
[ -x /usr/bin/chromium ] || missing+=(chromium)
# Debian keeps the server binaries off PATH, one directory per major version.
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
have node || missing+=(nodejs)
have npm || missing+=(npm)

# Python for the virtualenv: the first of python3.11, python3 that actually runs.
python=""
for candidate in python3.11 python3; do
    if "$candidate" -c 'import sys' >/dev/null 2>&1; then
        python=$(command -v "$candidate")
        break
    fi
done
if [ -z "$python" ]; then
    missing+=(python3 python3-venv)
elif ! "$python" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    # Debian splits venv/ensurepip out of its system Python.
    version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    missing+=("python${version}-venv")
fi

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    {
        echo "error: missing system packages: ${missing[*]}"
        echo "Install them with:"
        echo
        echo "    sudo apt-get install ${missing[*]}"
        echo
        echo "then run make again."
    } >&2
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: missing system packages (${missing[*]}) and no apt-get to install them with." >&2
    exit 1
fi

echo "==> Installing system packages: ${missing[*]}"

# Keep Debian's postinst scripts from starting redis/nginx/postgresql system services: tests
# and the demo start their own. invoke-rc.d (and deb-systemd-invoke) honour policy-rc.d exit 101.
# An existing policy-rc.d (Docker images ship one) is left alone.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
    trap 'rm -f "$policy"' EXIT
    printf '#!/bin/sh\n# temporary, from django_websocket scripts/system-deps.sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends "${missing[@]}"
echo "==> System packages installed."
