#!/usr/bin/env bash
# Create (or repair) the project virtualenv and install the tested set into it:
#     scripts/venv.sh [VENV_DIR]        (default: .venv)
# Python: $PYTHON if set, else the newest Python that Django 6.1 supports, 3.13 then 3.12, on
# PATH or installed by pyenv (whose shims only run the versions pyenv has selected, so the
# interpreters are looked up in its versions/ folder too); else python3.11, python3.10 or
# python3, which get Django 5.2 LTS (requirements.txt's markers) and a warning. Under CI=true an
# old Python is an error: CI must prove the newest pair.
# A virtualenv that no longer runs, or that was made with another Python version, is recreated.
# Installs `-r requirements.txt -e .`; the Makefile only calls this when requirements.txt or
# setup.cfg changed (stamp file inside the virtualenv). Never downloads Playwright browsers:
# the tests drive the system /usr/bin/chromium.
set -euo pipefail

cd "$(dirname "$0")/.."
venv=${1:-.venv}

runs() {
    "$1" -c 'import sys' >/dev/null 2>&1
}

pyenv_root=$( (pyenv root 2>/dev/null) || echo "$HOME/.pyenv")

python=${PYTHON:-}
if [ -z "$python" ]; then
    for minor in 3.13 3.12; do
        for candidate in "python$minor" $(ls -d "$pyenv_root"/versions/"$minor".*/bin/"python$minor" 2>/dev/null | sort -rV); do
            if runs "$candidate"; then
                python=$candidate
                break 2
            fi
        done
    done
fi
if [ -z "$python" ]; then
    for candidate in python3.11 python3.10 python3; do
        if runs "$candidate"; then
            python=$candidate
            break
        fi
    done
    if [ -z "$python" ]; then
        echo "error: no Python found (sudo apt-get install python3 python3-venv)" >&2
        exit 1
    fi
    message="no Python 3.12 or 3.13 found, so $venv gets $("$python" -V 2>&1) and Django 5.2 LTS instead of the newest tested pair (Django 6.1 on Python 3.13). Install Python 3.13 (pyenv install 3.13, or your distribution's python3.13 package) and run make again."
    if [ "${CI:-}" = "true" ]; then
        echo "error: $message" >&2
        exit 1
    fi
    echo "warning: $message" >&2
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
