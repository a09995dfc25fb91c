"""Helpers for the functional tests: another connection's view, and sample projects in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import unittest
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import sqlalchemy as sa

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]


def tables_seen_by_another_connection(url: sa.engine.URL, names: list[str]) -> list[str]:
    """Which of ``names`` exist, as a fresh connection (outside the tests' transaction) sees it."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            inspector = sa.inspect(connection)
            return [name for name in names if inspector.has_table(name)]
    finally:
        engine.dispose()


def rows_seen_by_another_connection(url: sa.engine.URL, name: str) -> int:
    """How many rows a fresh connection sees in table ``name`` (0 when the table does not exist).

    With the savepoint strategy the table itself is invisible to others; with the reset strategy
    (MySQL/MariaDB) it exists, committed and empty.
    """
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            if not sa.inspect(connection).has_table(name):
                return 0
            return connection.scalar(sa.select(sa.func.count()).select_from(sa.table(name))) or 0
    finally:
        engine.dispose()


def run_tests(case: type[unittest.TestCase]) -> unittest.TestResult:
    """Run every test of ``case``, in name order and with its class fixtures, as a runner would."""
    result = unittest.TestResult()
    unittest.defaultTestLoader.loadTestsFromTestCase(case).run(result)
    return result


def backend() -> str:
    """The dialect name of the server the suite runs on: postgresql, mysql, mariadb or sqlite.

    Read from the configuration alone, so that collecting the tests (skip decorators) starts no server.
    """
    from dbtestcase._urls import configured_url

    url = configured_url()
    return "postgresql" if url is None else url.get_backend_name()


def skip_unless(*backends: str, why: str) -> unittest.case._SkipDecorator | object:
    """Skip a test or class unless the suite runs on one of ``backends`` (dialect names)."""
    import unittest

    name = backend()
    return unittest.skipUnless(name in backends, f"{why} (the suite runs on {name})")


def write_project(directory: Path, files: dict[str, str]) -> Path:
    """Write a small sample project (dedented sources) into ``directory``."""
    for name, source in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source).lstrip())
    return directory


# Set by a parallel runner for its own workers: a sample run in a subprocess is not one of them.
PARALLEL_RUN_VARIABLES = ("DBTESTCASE_RUN_ID", "DBTESTCASE_WORKER", "PYTEST_XDIST_TESTRUNUID", "PYTEST_XDIST_WORKER")


def child_environ() -> dict[str, str]:
    """This process's environment for a child process, without the variables of a parallel run."""
    return {key: value for key, value in os.environ.items() if key not in PARALLEL_RUN_VARIABLES}


def run_python(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``python ARGS`` in ``cwd`` with dbtestcase importable; capture its output."""
    full_env = child_environ()
    full_env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(cwd)])
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=full_env, text=True, capture_output=True, timeout=timeout
    )


def server_url() -> sa.engine.URL:
    """The server the suite runs on: $DBTESTCASE_URL, else the process's throwaway server (``mysql://``
    alone: the throwaway MariaDB), resolved as TestDatabase resolves it."""
    from dbtestcase._urls import configured_url
    from dbtestcase.core import resolve_url

    return resolve_url(configured_url())


def unique_metadata(prefix: str) -> tuple[sa.MetaData, list[str]]:
    """Two tables (parent, child) whose names are unique to this process and call."""
    unique_metadata.counter = getattr(unique_metadata, "counter", 0) + 1  # type: ignore[attr-defined]
    stem = f"{prefix}_{os.getpid()}_{unique_metadata.counter}"  # type: ignore[attr-defined]
    metadata = sa.MetaData()
    parent = sa.Table(f"{stem}_parent", metadata, sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", sa.String(50)))
    sa.Table(
        f"{stem}_child",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("parent_id", sa.Integer, sa.ForeignKey(parent.c.id)),
    )
    return metadata, [table.name for table in metadata.sorted_tables]


# --- processes (the throwaway servers' tests) ---------------------------------------------

def gone(pid: int) -> bool:
    """True if the process is dead: no such pid, or a zombie that nobody reaps (PID 1 here does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        with open(f"/proc/{pid}/status") as f:
            return any(line.startswith("State:") and "Z" in line for line in f)
    except FileNotFoundError:
        return True


def wait_until(condition: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def uid_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("Uid:"))


def assert_stop_cleans_up(case: unittest.TestCase, server: object) -> None:
    """stop() ends a started throwaway server (reaped: not even a zombie), removes its run directory, forgets
    both, and can run twice."""
    pid, directory = getattr(server, "pid", None), getattr(server, "directory", None)
    assert pid and directory
    server.stop()  # type: ignore[attr-defined]
    case.assertRaises(ProcessLookupError, os.kill, pid, 0)
    case.assertFalse(os.path.exists(directory))
    case.assertIsNone(server.pid)
    case.assertIsNone(server.directory)
    server.stop()  # type: ignore[attr-defined]


def assert_runs_as_nobody(case: unittest.TestCase, server: object) -> None:
    """As root, a throwaway server's process runs as nobody and owns its data directory."""
    import pwd

    nobody = pwd.getpwnam("nobody").pw_uid
    pid, directory = getattr(server, "pid", None), getattr(server, "directory", None)
    assert pid and directory
    case.assertEqual(uid_of(pid), nobody)
    case.assertEqual(os.stat(os.path.join(directory, "data")).st_uid, nobody)


def why_no_mariadb() -> str:
    """Why a throwaway MariaDB cannot run here ("" when it can): the driver or the server binary is missing."""
    import importlib.util

    from dbtestcase.exceptions import ServerNotFoundError
    from dbtestcase.mariadb_server import find_mariadbd

    if importlib.util.find_spec("pymysql") is None:
        return "PyMySQL is not installed (pip install pymysql)"
    try:
        find_mariadbd()
    except ServerNotFoundError as exc:
        return f"no MariaDB server binary on this machine ({exc})"
    return ""
