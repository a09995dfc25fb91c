"""Run the suite once per database, and print the totals as "N passed, N failed" last.

Pass 1 runs everything against a throwaway PostgreSQL that dbtestcase starts itself (the
fresh-machine path). When $DBTESTCASE_URL is set, pass 2 runs the functional tests against
that server too.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_pass(label: str, paths: list[str], env: dict[str, str]) -> tuple[int, int, int, int]:
    """Run pytest on ``paths``; return (passed, failed, skipped, exit code)."""
    print(f"\n=== {label} ===", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.xml"
        code = subprocess.call(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}", *paths],
            cwd=ROOT,
            env=env,
        )
        if not report.exists():
            return 0, 1, 0, code or 1
        suites = ET.parse(report).getroot()
        total = failed = skipped = 0
        for suite in suites.iter("testsuite"):
            total += int(suite.get("tests", 0))
            failed += int(suite.get("failures", 0)) + int(suite.get("errors", 0))
            skipped += int(suite.get("skipped", 0))
        if code not in (0, 1) and failed == 0:
            failed = 1  # pytest itself broke (usage or internal error)
        return total - failed - skipped, failed, skipped, code


def main() -> int:
    url = os.environ.get("DBTESTCASE_URL", "").strip()
    throwaway_env = {key: value for key, value in os.environ.items() if key != "DBTESTCASE_URL"}
    passes = [("pass 1: throwaway PostgreSQL started by dbtestcase", ["tests"], throwaway_env)]
    if url:
        passes.append(("pass 2: the server at $DBTESTCASE_URL", ["tests/functional"], dict(os.environ)))
    passed = failed = skipped = 0
    for label, paths, env in passes:
        p, f, s, _ = run_pass(label, paths, env)
        passed, failed, skipped = passed + p, failed + f, skipped + s
    print()
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
