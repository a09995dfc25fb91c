"""Run the suite once per database, and print the totals as "N passed, N failed" last.

1. everything, against a throwaway PostgreSQL that dbtestcase starts itself (the fresh-machine
   path), with the throwaway servers' own tests;
2. the functional tests against $DBTESTCASE_URL, when it is set;
3. the functional tests against SQLite (a file in a temporary folder);
4. the functional tests against MySQL/MariaDB: $DBTESTCASE_MYSQL_URL when set, else a throwaway
   MariaDB when mariadbd is installed;
5. with $DBTESTCASE_MYSQL_URL set and mariadbd installed, the functional tests against a throwaway
   MariaDB as well (the fresh-machine path).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def run_pass(label: str, paths: list[str], env: dict[str, str], python: str = sys.executable) -> tuple[int, int, int, int]:
    """Run pytest on ``paths`` with ``python``; return (passed, failed, skipped, exit code)."""
    print(f"\n=== {label} ===", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.xml"
        try:
            code = subprocess.call(
                [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}", *paths],
                cwd=ROOT,
                env=env,
                timeout=PASS_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            print(f"\n{label}: stopped after {PASS_TIMEOUT} s (see the tracebacks above)", flush=True)
            return 0, 1, 0, 1
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


def report(results: list[tuple[int, int, int, int]]) -> int:
    """Print the totals of ``run_pass`` results as "N passed, N failed, N skipped" (the last line); the exit code."""
    passed, failed, skipped = (sum(result[i] for result in results) for i in range(3))
    print()
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed else 0


PASS_TIMEOUT = 900  # seconds: a hung pass fails instead of eating CI's 90 minutes

SERVER_TESTS = ["--ignore=tests/functional/test_server.py", "--ignore=tests/functional/test_mariadb_server.py"]


def mariadbd_installed() -> bool:
    from dbtestcase.mariadb_server import find_mariadbd

    try:
        find_mariadbd()
    except FileNotFoundError:
        return False
    return True


def mysql_url() -> str | None:
    """$DBTESTCASE_MYSQL_URL, else "mysql://" (a throwaway MariaDB) when mariadbd is installed."""
    url = os.environ.get("DBTESTCASE_MYSQL_URL", "").strip()
    if url:
        return url
    if not mariadbd_installed():
        print("no MySQL/MariaDB pass: set DBTESTCASE_MYSQL_URL or install mariadbd")
        return None
    return "mysql://"


def main() -> int:
    url = os.environ.get("DBTESTCASE_URL", "").strip()
    base = {key: value for key, value in os.environ.items() if key != "DBTESTCASE_URL"}
    passes = [("pass 1: throwaway PostgreSQL started by dbtestcase", ["tests"], base)]
    if url:
        passes.append(("pass 2: the server at $DBTESTCASE_URL", ["tests/functional", *SERVER_TESTS], dict(os.environ)))
    sqlite_dir = tempfile.TemporaryDirectory(prefix="dbtestcase-sqlite-")
    sqlite = {**base, "DBTESTCASE_URL": f"sqlite:///{sqlite_dir.name}/test.db"}
    passes.append(("pass 3: SQLite", ["tests/functional", *SERVER_TESTS], sqlite))
    mysql = mysql_url()
    if mysql:
        mysql_env = {**base, "DBTESTCASE_URL": mysql}
        passes.append((f"pass 4: MySQL/MariaDB at {mysql}", ["tests/functional", *SERVER_TESTS], mysql_env))
    if mysql and mysql != "mysql://" and mariadbd_installed():
        # The fresh-machine path for MariaDB too, not only the configured server.
        throwaway = {**base, "DBTESTCASE_URL": "mysql://"}
        passes.append(("pass 5: throwaway MariaDB started by dbtestcase", ["tests/functional", *SERVER_TESTS], throwaway))
    results = [run_pass(label, paths, env) for label, paths, env in passes]
    sqlite_dir.cleanup()
    return report(results)


if __name__ == "__main__":
    sys.exit(main())
