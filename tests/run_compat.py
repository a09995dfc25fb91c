"""Run the functional tests at both ends of the supported range, and print "N passed, N failed" last.

- the oldest: Python 3.9 with SQLAlchemy 2.0;
- the newest: Python 3.13 with the newest SQLAlchemy (2.1 at the time of writing).

Each end gets a virtual environment of its own (``.venv-py39``, ``.venv-py313``), made once and kept
while setup.py does not change. The tests run against ``$DBTESTCASE_URL`` when it is set, else against a
throwaway PostgreSQL. The interpreters are found on PATH, else in pyenv's versions; a missing one fails
the run (it would hide the end of the range it stands for).
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from run_all import SERVER_TESTS, report, run_pass

ROOT = Path(__file__).resolve().parent.parent
ENDS = (("3.9", "SQLAlchemy>=2.0,<2.1"), ("3.13", "SQLAlchemy>=2.1.0b1"))


def interpreter(version: str) -> str | None:
    """python<version> on PATH, else under ~/.pyenv/versions."""
    found = shutil.which(f"python{version}")
    candidates = sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin/python{version}")))
    for path in ([found] if found else []) + candidates[::-1]:
        if subprocess.run([path, "-c", "pass"], capture_output=True).returncode == 0:
            return path
    return None


def venv(version: str, sqlalchemy: str) -> Path:
    """The virtual environment of one end, with the package, its test tools and ``sqlalchemy`` installed."""
    python = interpreter(version)
    if python is None:
        raise SystemExit(f"run_compat: no Python {version} found on PATH or in ~/.pyenv/versions: install it "
                         f"(pyenv install {version}), or run make test alone.")
    where = ROOT / f".venv-py{version.replace('.', '')}"
    stamp = where / (".installed-" + hashlib.sha256((ROOT / "setup.py").read_bytes() + sqlalchemy.encode()).hexdigest()[:12])
    if not stamp.exists():
        shutil.rmtree(where, ignore_errors=True)
        subprocess.run([python, "-m", "venv", str(where)], check=True)
        pip = [str(where / "bin" / "python"), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, "--upgrade", "pip"], check=True)
        subprocess.run([*pip, "-e", f"{ROOT}[test]", sqlalchemy], check=True, cwd=ROOT)
        stamp.touch()
    return where


def main() -> int:
    results = []
    for version, sqlalchemy in ENDS:
        python = venv(version, sqlalchemy) / "bin" / "python"
        probe = "import sqlalchemy, sys; print(sys.version.split()[0], sqlalchemy.__version__)"
        found = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=True).stdout.split()
        label = f"Python {found[0]} with SQLAlchemy {found[1]}"
        results.append(run_pass(label, ["tests/functional", *SERVER_TESTS], dict(os.environ), python=str(python)))
    return report(results)


if __name__ == "__main__":
    sys.exit(main())
