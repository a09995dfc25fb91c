"""Sphinx configuration for the dbtestcase documentation (built with -W: every warning fails the build)."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # document the working tree, installed or not

project = "dbtestcase"
author = "The dbtestcase developers"
copyright = "the dbtestcase developers, MIT licence"  # noqa: A001 (Sphinx's name)
release = re.search(r'^__version__ = "([^"]+)"', (ROOT / "dbtestcase" / "__init__.py").read_text(), re.M).group(1)
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.doctest",
]

exclude_patterns = ["_build"]
html_theme = "alabaster"

# autodoc: members in source order, signatures without type hints (the descriptions carry them).
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
autodoc_default_options = {"show-inheritance": True}

napoleon_google_docstring = True
napoleon_numpy_docstring = False

# intersphinx has to download the inventories, and the build runs offline and with -W. A failed
# download is a warning, so it would fail the build. The mappings are therefore used only when asked
# for: DOCS_INTERSPHINX=1 make docs. Without them, links to Python and SQLAlchemy objects are plain
# text, not errors.
intersphinx_mapping: dict[str, tuple[str, str | None]] = {}
if os.environ.get("DOCS_INTERSPHINX") == "1":
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "sqlalchemy": ("https://docs.sqlalchemy.org/en/20/", None),
    }
intersphinx_timeout = 10
