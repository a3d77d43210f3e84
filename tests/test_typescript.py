"""websocket.js's TypeScript declarations, checked with the pinned TypeScript (node_modules).

- The typed example (docs/examples/typescript: the ES module and the classic global) passes
  ``tsc --noEmit``, as ``make typecheck`` runs it.
- tests/typescript/wrong.ts, calls the declarations must reject, fails with exactly the errors
  its ``// expect TS<code>`` comments name: declarations that had drifted to ``any`` (or
  anything looser than the client) would let them through.
- Every public member of the class in websocket.js is declared, and nothing else is.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.servers import ROOT

TSC = ROOT / "node_modules" / ".bin" / "tsc"
STATIC = ROOT / "django_websocket" / "static" / "django_websocket"
EXAMPLE = ROOT / "docs" / "examples" / "typescript"
WRONG = ROOT / "tests" / "typescript"
#: tsc's plain diagnostics: ``path(line,column): error TS1234: message``.
DIAGNOSTIC = re.compile(r"^(?P<path>[^(\n]+)\((?P<line>\d+),\d+\): error (?P<code>TS\d+): ", re.M)
EXPECT = re.compile(r"// expect (TS\d+)$")


def tsc(project: Path) -> subprocess.CompletedProcess[str]:
    """``tsc --noEmit -p project``, plain output; fails the test when TypeScript is not installed."""
    if not TSC.exists():
        pytest.fail(f"{TSC} not found: `make typecheck` installs TypeScript (npm ci, package-lock.json).")
    return subprocess.run(
        [str(TSC), "--noEmit", "--pretty", "false", "-p", str(project)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_typed_example_passes() -> None:
    """The typed example and the declarations it uses pass tsc --noEmit without a diagnostic."""
    result = tsc(EXAMPLE)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_wrong_calls_are_rejected() -> None:
    """Each wrong call of wrong.ts fails with the error its comment names, and nothing else fails."""
    source = (WRONG / "wrong.ts").read_text().splitlines()
    expected = {(number, match[1]) for number, line in enumerate(source, 1) if (match := EXPECT.search(line))}
    result = tsc(WRONG)
    output = result.stdout + result.stderr
    found = {(int(match["line"]), match["code"]) for match in DIAGNOSTIC.finditer(output)}
    assert result.returncode != 0, output
    assert len(expected) > 10
    assert found == expected, output


def declared_members(declarations: str, interface: str) -> set[str]:
    """The member names of *interface* in *declarations* (a .d.ts file's text)."""
    body = re.search(rf"^export interface {interface}\b[^{{]*\{{\n(.*?)^\}}", declarations, re.S | re.M)
    assert body is not None, interface
    return set(re.findall(r"^  (?:readonly )?(?:new\b|(\w+))\??[<(:]", body[1], re.M)) - {""}


def test_declarations_match_the_class() -> None:
    """websocket.esm.d.ts declares each public member of websocket.js's class, and no others."""
    script = (STATIC / "websocket.js").read_text()
    declarations = (STATIC / "websocket.esm.d.ts").read_text()
    body = script[script.index("class DjangoWebSocket {") : script.index("DjangoWebSocket.FINAL_CODES =")]
    methods = set(re.findall(r"^    (?:get )?([a-zA-Z]\w*)\(.*\) \{$", body, re.M)) - {"constructor"}
    properties = set(re.findall(r"^      this\.([a-zA-Z]\w*) = ", body, re.M))
    statics = set(re.findall(r"^    static ([a-zA-Z]\w*)\(", body, re.M)) | {"FINAL_CODES"}
    assert {"send", "readyState", "reconnect"} <= methods and {"url", "onmessage"} <= properties
    assert declared_members(declarations, "DjangoWebSocket") == methods | properties
    assert declared_members(declarations, "DjangoWebSocketConstructor") == statics | {"prototype"}
