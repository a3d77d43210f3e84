#!/usr/bin/env bash
# Autobahn|Testsuite conformance run (fuzzingclient) against the demo's echo endpoint.
#
#     scripts/autobahn.sh            (or: make autobahn)
#
# Serves test_project.wsgi:websocket with our gevent worker on a free 127.0.0.1 port, runs
# `wstest -m fuzzingclient` against ws://127.0.0.1:PORT/echo/, writes the HTML/JSON report to
# autobahn-report/ (index.html) and prints a summary. Exits non-zero if any case FAILED.
#
# Environment:
#   AUTOBAHN_CASES     JSON list of cases to run      (default ["*"])
#   AUTOBAHN_EXCLUDE   JSON list of cases to skip     (default []: all 517, permessage-deflate's
#                      12.* and 13.* included; those take about 20 minutes)
#   PYTHON2            the Python 2.7 to run wstest with (default: python2.7 on PATH, else pyenv's)
#
# wstest needs Python 2.7; it is installed (pinned) into .venv/autobahn, away from the project's
# virtualenv. Debian 12 ships no Python 2.7: use pyenv (`pyenv install 2.7.18`).
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
venv=.venv
py=$venv/bin/python
report=autobahn-report
lib=$venv/autobahn
autobahn_version=${AUTOBAHN_VERSION:-25.10.1}
cases=${AUTOBAHN_CASES:-'["*"]'}
exclude=${AUTOBAHN_EXCLUDE:-'[]'}

if [ ! -x "$py" ]; then
    echo "error: no $venv yet; run this through 'make autobahn'" >&2
    exit 1
fi

# ---- Python 2.7 with autobahntestsuite
is_py27() { "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (2, 7))' >/dev/null 2>&1; }
py2=${PYTHON2:-}
if [ -z "$py2" ]; then
    candidates=(python2.7 python2)
    if command -v pyenv >/dev/null 2>&1; then
        candidates+=("$(pyenv root)"/versions/2.7*/bin/python2.7)
    fi
    candidates+=("$HOME"/.pyenv/versions/2.7*/bin/python2.7)
    for candidate in "${candidates[@]}"; do
        if is_py27 "$candidate"; then
            py2=$candidate
            break
        fi
    done
fi
if [ -z "$py2" ] || ! is_py27 "$py2"; then
    echo "error: Autobahn|Testsuite (wstest) needs Python 2.7; none found." >&2
    echo "Install one with pyenv (pyenv install 2.7.18) or point PYTHON2 at it." >&2
    exit 1
fi

if [ ! -e "$lib/.installed-$autobahn_version" ]; then
    echo "==> Installing autobahntestsuite==$autobahn_version for $py2 into $lib"
    rm -rf "$lib"
    "$py2" -m pip install -q --disable-pip-version-check --no-warn-script-location \
        --target "$lib" "autobahntestsuite==$autobahn_version"
    touch "$lib/.installed-$autobahn_version"
fi

# ---- the server under test
port=$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
rm -rf "$report"
mkdir -p "$report"
server_log=$report/server.log

echo "==> Starting gunicorn (test_project.wsgi:websocket) on 127.0.0.1:$port; log in $server_log"
WEBSOCKET_MAX_MESSAGE_SIZE=$((32 * 1024 * 1024)) WEBSOCKET_MESSAGE_RATE_LIMIT=none DJANGO_SETTINGS_MODULE=test_project.settings \
    setsid "$py" -m gunicorn -k django_websocket.workers.GeventWebSocketWorker \
    test_project.wsgi:websocket -b "127.0.0.1:$port" -w 1 --no-control-socket \
    --error-logfile - --log-level warning >"$server_log" 2>&1 &
server_pid=$!
stop_server() {
    # setsid made gunicorn its own process group: stop the arbiter and its worker.
    kill -TERM -- "-$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
}
trap stop_server EXIT

for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        break
    fi
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "error: gunicorn exited:" >&2
        cat "$server_log" >&2
        exit 1
    fi
    sleep 0.1
done

# ---- the run
cat >"$report/fuzzingclient.json" <<EOF
{
    "outdir": "$root/$report",
    "servers": [{"agent": "django_websocket", "url": "ws://127.0.0.1:$port/echo/"}],
    "cases": $cases,
    "exclude-cases": $exclude,
    "exclude-agent-cases": {}
}
EOF

echo "==> Running wstest -m fuzzingclient (cases $cases, excluding $exclude)"
# --target installs skip .pth processing (zope is a namespace package): add the dir as a site dir.
(cd "$report" && "$py2" -c '
import site, sys
site.addsitedir(sys.argv[1])
sys.argv = ["wstest", "-m", "fuzzingclient", "-s", "fuzzingclient.json"]
from autobahntestsuite.wstest import run
run()
' "$root/$lib") >"$report/wstest.log" 2>&1 || {
    echo "error: wstest failed; see $report/wstest.log" >&2
    tail -20 "$report/wstest.log" >&2
    exit 1
}

# ---- summary
"$py" - "$report/index.json" <<'EOF'
import json
import sys
from collections import Counter

with open(sys.argv[1]) as f:
    results = json.load(f)["django_websocket"]


def case_key(case):
    return [int(part) for part in case.split(".")]


counts = Counter(r["behavior"] for r in results.values())
failed = sorted(
    (case for case, r in results.items() if "FAILED" in (r["behavior"], r["behaviorClose"])),
    key=case_key,
)
print(f"Autobahn: {len(results)} cases: " + ", ".join(f"{n} {b}" for b, n in sorted(counts.items())))
for case in failed:
    r = results[case]
    print(f"  FAILED {case}: behavior {r['behavior']}, close {r['behaviorClose']}")
print("Report: autobahn-report/index.html")
sys.exit(1 if failed else 0)
EOF
