"""The documentation: every Python example in README.md and docs/ is valid Python.

The examples that are whole files (the tutorial's project, the testing guide's tests, the demo's
notifications) are run by tests/test_docs_examples.py, tests/test_notifications.py and
tests/test_install.py; the nginx files by tests/test_nginx.py. The shorter snippets in between
are at least parsed here, so a renamed keyword or a stray bracket is caught; ``make docs``
builds the site with warnings as errors.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.servers import ROOT

PAGES = sorted(path for path in (ROOT / "docs").rglob("*.md") if "_build" not in path.parts)
PYTHON_BLOCK = re.compile(r"^```(?:python|py)\n(.*?)^```", re.S | re.M)


def python_blocks(page: Path) -> list[tuple[int, str]]:
    """(line number, code) of each ```python block of *page*."""
    text = page.read_text()
    return [(text[: match.start()].count("\n") + 1, match[1]) for match in PYTHON_BLOCK.finditer(text)]


@pytest.mark.parametrize("page", [ROOT / "README.md", *PAGES], ids=lambda page: str(page.relative_to(ROOT)))
def test_python_examples_parse(page: Path) -> None:
    for line, code in python_blocks(page):
        try:
            ast.parse(code)
        except SyntaxError as error:
            pytest.fail(f"{page.relative_to(ROOT)}:{line + (error.lineno or 0)}: {error.msg}\n{code}")


def test_there_are_examples() -> None:
    assert sum(len(python_blocks(page)) for page in [ROOT / "README.md", *PAGES]) > 50
