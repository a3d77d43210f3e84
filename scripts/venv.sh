#!/usr/bin/env bash
# Create (or repair) the project virtualenv and install the tested set into it:
#     scripts/venv.sh [VENV_DIR]        (default: .venv)
# Python: $PYTHON if set, else the first of python3.11, python3 that runs.
# A virtualenv that no longer runs, or that was made with another Python version, is recreated.
# Installs `-r requirements.txt -e .`; the Makefile only calls this when requirements.txt or
# setup.cfg changed (stamp file inside the virtualenv). Never downloads Playwright browsers:
# the tests drive the system /usr/bin/chromium.
set -euo pipefail

cd "$(dirname "$0")/.."
venv=${1:-.venv}

python=${PYTHON:-}
if [ -z "$python" ]; then
    for candidate in python3.11 python3; do
        if "$candidate" -c 'import sys' >/dev/null 2>&1; then
            python=$candidate
            break
        fi
    done
fi
if [ -z "$python" ]; then
    echo "error: no python3.11 or python3 found (sudo apt-get install python3 python3-venv)" >&2
    exit 1
fi

version_of() {
    "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])'
}
want=$(version_of "$python")

if [ -e "$venv" ]; then
    have=$(version_of "$venv/bin/python" 2>/dev/null || echo broken)
    if [ "$have" != "$want" ]; then
        echo "==> Recreating $venv (found Python $have, want $want)"
        rm -rf "$venv"
    fi
fi

if [ ! -e "$venv/bin/python" ]; then
    echo "==> Creating $venv with $python (Python $want)"
    "$python" -m venv "$venv"
fi

echo "==> Installing requirements.txt and this package (editable) into $venv"
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
# The distribution was called django-websocket before it had a name of its own: drop that old
# editable install so only django-websocket-views maps the django_websocket package.
if "$venv/bin/python" -m pip show -q django-websocket >/dev/null 2>&1; then
    "$venv/bin/python" -m pip uninstall --disable-pip-version-check -q -y django-websocket
fi
"$venv/bin/python" -m pip install --disable-pip-version-check -q -r requirements.txt -e .
