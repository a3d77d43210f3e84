"""Autobahn|Testsuite (RFC 6455 conformance) against the echo view, through the full Django path.

gunicorn with our worker serves ``test_project.wsgi:websocket`` (handshake validation,
middleware, URL resolution over WEBSOCKET_URLCONF, the accept, the ``@websocket`` view),
and ``../shared/tools/autobahn`` runs the fuzzing client against ``/echo/``. Every
RFC 6455 case runs; category 9 sends messages up to 16 MiB, so the server's
``WEBSOCKET_MAX_MESSAGE_SIZE`` is raised to 32 MiB.

The permessage-deflate cases (12.*, 13.*: the server negotiates the extension, see
``django_websocket.compression``) run with messages up to 8 KiB, cases .1 to .6 of each
group: 72 of 216. The other 144 (16 KiB to 128 KiB, 1000 messages each) take 20 minutes,
mostly in the Python 2 client; ``make autobahn`` runs them all.

The first run installs autobahntestsuite under Python 2.7 (pyenv's 2.7.18) into
``~/.cache/autobahn-testsuite``. The run takes under two minutes here; the summary
is printed (``pytest -s``, or in the report of a failure).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.servers import ROOT, gunicorn

AUTOBAHN = ROOT.parent / "shared" / "tools" / "autobahn"
DEFLATE_GROUPS = [f"12.{group}" for group in range(1, 6)] + [f"13.{group}" for group in range(1, 8)]
#: Exact case ids: the suite matches a pattern with ``*`` as a prefix (``12.*.1`` takes 12.1.18 too).
EXCLUDE = " ".join(f"{group}.{case}" for group in DEFLATE_GROUPS for case in range(7, 19))
MAX_MESSAGE_SIZE = 32 * 2**20


def failed_cases(report: Path) -> str:
    """Describe each FAILED case of *report*: id, what was sent, what was expected and what happened."""
    index_file = report / "index.json"
    if not index_file.exists():
        return ""
    lines = []
    for results in json.loads(index_file.read_text()).values():
        for case, result in results.items():
            if "FAILED" not in (result["behavior"], result["behaviorClose"]):
                continue
            details = json.loads((report / result["reportfile"]).read_text())
            lines.append(
                f"{case}: {details['description']} | expected: {details['expectation']} | "
                f"got: {details['result']} (close {details.get('remoteCloseCode')} "
                f"{details.get('remoteCloseReason')!r})"
            )
    return "\n".join(lines)


@pytest.mark.skipif(
    not AUTOBAHN.exists(),
    reason=f"{AUTOBAHN} not found: the Autobahn runner lives outside this repository",
)
def test_autobahn_conformance(server_db: dict[str, str], tmp_path: Path) -> None:
    """Every RFC 6455 case (all but permessage-deflate) passes against the echo view."""
    report = tmp_path / "autobahn-report"
    env = {
        "WEBSOCKET_MAX_MESSAGE_SIZE": str(MAX_MESSAGE_SIZE),
        "DJANGO_DB_PATH": server_db["path"],
        # Cases 9.7, 9.8, 12.* and 13.* send 1000 messages each: conformance, not a rate limit.
        "WEBSOCKET_MESSAGE_RATE_LIMIT": "none",
    }
    with gunicorn("test_project.wsgi:websocket", settings="tests.settings", env=env) as server:
        started = time.monotonic()
        result = subprocess.run(
            [str(AUTOBAHN), server.ws_url("/echo/")],
            cwd=tmp_path,
            env={**os.environ, "AUTOBAHN_REPORT": str(report), "AUTOBAHN_EXCLUDE": EXCLUDE},
            capture_output=True,
            text=True,
            timeout=1800,
        )
        elapsed = time.monotonic() - started
    summary = result.stdout.strip()
    print(f"\n{summary}\n(autobahn ran {elapsed:.0f} s; report in {report})")
    assert result.returncode == 0, (
        f"autobahn exited with {result.returncode}:\n{summary}\n{result.stderr}\n{failed_cases(report)}"
    )
    assert re.search(r"^\d+ passed, 0 failed$", summary, re.MULTILINE), summary
