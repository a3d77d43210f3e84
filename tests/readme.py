"""README.md's code blocks, for the tests that run them (test_install, test_notifications)."""

from __future__ import annotations

import re

from tests.servers import ROOT

README = ROOT / "README.md"


def code_blocks(text: str) -> list[str]:
    """Every fenced code block of the Markdown *text*, without its fences."""
    return re.findall(r"^```[^\n]*\n(.*?)^```", text, re.S | re.M)


def section(heading: str) -> str:
    """The text of README.md's ``## heading`` section, up to the next ``## `` heading."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", README.read_text(), re.S | re.M)
    assert match, f"README.md has no '## {heading}' section"
    return match[1]


def block_with(*needles: str) -> str:
    """The one code block of README.md that contains every one of *needles*."""
    blocks = [block for block in code_blocks(README.read_text()) if all(n in block for n in needles)]
    assert len(blocks) == 1, f"{len(blocks)} code blocks of README.md contain {needles}"
    return blocks[0]
