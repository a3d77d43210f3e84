"""Sphinx configuration of the documentation site: ``make docs`` builds it into docs/_build/html.

The pages are Markdown (MyST); the API reference comes from the package's docstrings
(``sphinx.ext.autodoc``), which needs Django set up: the build imports the package with the
test project's settings, as the tests do. That is the docs build's own setup, not the
package's: importing ``django_websocket`` touches no settings.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The repository root: django_websocket and test_project import from a clone without
# an editable install; docs/examples for the tutorial's files.
sys.path[:0] = [str(ROOT), str(ROOT / "docs" / "examples")]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "test_project.settings")

import django  # noqa: E402

django.setup()

import django_websocket  # noqa: E402

project = "django_websocket"
author = "the django_websocket contributors"
copyright = "2026, the django_websocket contributors"  # noqa: A001 (Sphinx's own name for it)
release = django_websocket.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
# examples/ holds the tutorial's Python and template files (included with literalinclude),
# never pages of their own.
exclude_patterns = ["_build", "examples", "Thumbs.db", ".DS_Store"]

# MyST: anchors for headings down to ###, so the pages' GitHub-style links
# (settings.md#websocket_server) resolve in the site too.
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence", "deflist"]

# autodoc: members in source order, signatures without the module's long type aliases.
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"show-inheritance": True}

html_theme = "furo"
html_title = "django_websocket"
