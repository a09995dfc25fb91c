"""The code blocks of the docs that a user would copy run as written, against the suite's database."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import unittest
from pathlib import Path

from tests.functional.support import server_url

DOCS = Path(__file__).resolve().parents[2] / "docs"


def python_blocks(page: Path) -> list[str]:
    """The ``.. code-block:: python`` blocks of an rst page, dedented."""
    found = re.finditer(r"^\.\. code-block:: python\n\n((?:   .*\n|\n)+)", page.read_text(), re.M)
    return [re.sub(r"^   ", "", match.group(1), flags=re.M) for match in found]


class ApiPage(unittest.TestCase):
    def test_examples_run(self) -> None:
        """Every Python block of the API page runs to its end in a fresh interpreter (its asserts included)."""
        blocks = python_blocks(DOCS / "api.rst")
        self.assertGreaterEqual(len(blocks), 1)
        url = server_url().render_as_string(hide_password=False)
        for block in blocks:
            with self.subTest(block=block.splitlines()[0]):
                done = subprocess.run([sys.executable, "-c", block + "\nprint('ran to the end')"], capture_output=True,
                                      text=True, timeout=120, env={**os.environ, "DBTESTCASE_URL": url})
                self.assertEqual((done.returncode, done.stdout.strip()), (0, "ran to the end"), done.stderr)

