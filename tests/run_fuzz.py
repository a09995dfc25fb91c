"""make fuzz: the property-based test of the blank slate, with many generated classes on each backend.

Runs tests/functional/test_fuzz.py with ``DBTESTCASE_FUZZ_EXAMPLES`` (default 1,000) classes per driver on a
throwaway PostgreSQL (psycopg2 and psycopg 3), SQLite, and a throwaway MariaDB when mariadbd is installed;
prints each driver's count and seed, then "N passed, N failed" last. ``DBTESTCASE_FUZZ_SEED`` replays a run.
"""

from __future__ import annotations

import os
import random
import sys
import tempfile

from run_all import mariadbd_installed, report, run_pass


def main() -> int:
    examples = os.environ.get("DBTESTCASE_FUZZ_EXAMPLES", "1000")
    fuzz_seed = os.environ.get("DBTESTCASE_FUZZ_SEED") or str(random.SystemRandom().randrange(2**32))
    base = {key: value for key, value in os.environ.items() if key != "DBTESTCASE_URL"}
    base.update(DBTESTCASE_FUZZ_EXAMPLES=examples, DBTESTCASE_FUZZ_SEED=fuzz_seed)
    print(f"make fuzz: {examples} generated classes per driver, seed {fuzz_seed}", flush=True)
    with tempfile.TemporaryDirectory(prefix="dbtestcase-fuzz-") as tmp:
        passes = [("throwaway PostgreSQL", base), ("SQLite", {**base, "DBTESTCASE_URL": f"sqlite:///{tmp}/test.db"})]
        if mariadbd_installed():
            passes.append(("throwaway MariaDB", {**base, "DBTESTCASE_URL": "mysql://"}))
        results = [run_pass(f"fuzz: {label}", ["-s", "tests/functional/test_fuzz.py"], env) for label, env in passes]
    return report(results)


if __name__ == "__main__":
    sys.exit(main())
