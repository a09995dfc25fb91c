"""A run killed half way (SIGKILL, or Ctrl-C) leaves no table and no row, and the next run starts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

import sqlalchemy as sa

from tests.functional.support import (
    ROOT,
    backend,
    child_environ,
    rows_seen_by_another_connection,
    server_url,
    skip_unless,
    tables_seen_by_another_connection,
    write_project,
)

SAMPLE = {
    "test_sample.py": """
        import os, sys, time
        import sqlalchemy as sa
        import dbtestcase

        PREFIX = os.environ["TABLE_PREFIX"]
        metadata = sa.MetaData()
        items = sa.Table(
            PREFIX + "_items", metadata, sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", sa.String(20))
        )
        notes = sa.Table(
            PREFIX + "_notes", metadata,
            sa.Column("id", sa.Integer, primary_key=True), sa.Column("item_id", sa.Integer, sa.ForeignKey(items.c.id)),
        )

        def setUpModule():
            dbtestcase.setup_module(metadata, drop_tables=os.environ.get("DROP_TABLES") == "1")

        def tearDownModule():
            dbtestcase.teardown_module()

        class Sample(dbtestcase.DatabaseTestCase):
            def test_a_writes(self):
                self.session.execute(items.insert().values(name="kept?"))
                self.session.commit()
                self.assertEqual(self.session.scalar(sa.select(sa.func.count()).select_from(items)), 1)

            def test_b_hangs(self):
                self.session.execute(items.insert().values(name="half way"))
                self.session.commit()
                if os.environ.get("HANG") == "1":
                    with open(os.environ["READY_FILE"], "w") as ready:
                        ready.write(dbtestcase.active_database().schema_name or "")
                    time.sleep(120)
    """,
}


class KilledRuns(unittest.TestCase):
    def setUp(self) -> None:
        self.url = server_url()
        self.dir = Path(tempfile.mkdtemp(prefix="dbtc-killed-"))
        write_project(self.dir, SAMPLE)
        self.prefix = f"killed_{os.getpid()}_{self.id().rsplit('.', 1)[-1][-12:]}"
        self.names = [f"{self.prefix}_items", f"{self.prefix}_notes"]

    def start(self, *, hang: bool, drop_tables: bool = False) -> subprocess.Popen[str]:
        env = child_environ()
        env.update(
            PYTHONPATH=os.pathsep.join([str(ROOT), str(self.dir)]),
            DBTESTCASE_URL=self.url.render_as_string(hide_password=False),
            TABLE_PREFIX=self.prefix,
            READY_FILE=str(self.dir / "ready"),
            HANG="1" if hang else "0",
            DROP_TABLES="1" if drop_tables else "0",
        )
        return subprocess.Popen(
            [sys.executable, "-m", "unittest", "-v", "test_sample"],
            cwd=self.dir, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )

    def kill_half_way(self, process: subprocess.Popen[str], signum: int) -> str:
        deadline = time.monotonic() + 60
        while not (self.dir / "ready").exists():
            self.assertIsNone(process.poll(), "the sample ended before reaching the hanging test")
            self.assertLess(time.monotonic(), deadline, "the sample never reached the hanging test")
            time.sleep(0.05)
        os.kill(process.pid, signum)
        output, _ = process.communicate(timeout=60)
        return output

    def assert_nothing_left(self) -> None:
        """No row anywhere; and no table either, where the tables live in the outer transaction."""
        deadline = time.monotonic() + 15
        while True:
            rows = [rows_seen_by_another_connection(self.url, name) for name in self.names]
            tables = tables_seen_by_another_connection(self.url, self.names) if backend() in ("postgresql", "sqlite") else []
            if (rows == [0, 0] and not tables) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.assertEqual(rows, [0, 0], "rows the killed run committed in its test")
        if backend() in ("postgresql", "sqlite"):
            self.assertEqual(tables, [], "tables of the killed run")
        schema = (self.dir / "ready").read_text()
        if backend() == "postgresql" and schema:
            self.assertTrue(schema.startswith("dbtestcase_"), schema)
            self.assertFalse(self.schema_exists(schema), "the killed run's own schema")

    def schema_exists(self, name: str) -> bool:
        engine = sa.create_engine(self.url)
        try:
            deadline = time.monotonic() + 15
            while True:
                with engine.connect() as other:
                    found = bool(other.execute(sa.text("SELECT 1 FROM pg_namespace WHERE nspname = :n"), {"n": name}).first())
                if not found or time.monotonic() > deadline:
                    return found
                time.sleep(0.1)
        finally:
            engine.dispose()

    def wait_for_tables(self, expected: list[str]) -> list[str]:
        """Poll: the server notices a dead client's connection only after a moment."""
        deadline = time.monotonic() + 15
        while True:
            seen = sorted(tables_seen_by_another_connection(self.url, self.names))
            if seen == expected or time.monotonic() > deadline:
                return seen
            time.sleep(0.1)

    def test_sigkill_leaves_nothing(self) -> None:
        """SIGKILL in the middle of a test: the server rolls back, no table or row remains."""
        process = self.start(hang=True)
        self.kill_half_way(process, signal.SIGKILL)
        self.assertEqual(process.returncode, -signal.SIGKILL)
        self.assert_nothing_left()
        rerun = self.start(hang=False)
        output, _ = rerun.communicate(timeout=120)
        self.assertEqual(rerun.returncode, 0, output)
        self.assertIn("Ran 2 tests", output)

    def test_ctrl_c_leaves_nothing(self) -> None:
        """Ctrl-C (SIGINT) in the middle of a test: the run stops and leaves nothing."""
        process = self.start(hang=True)
        output = self.kill_half_way(process, signal.SIGINT)
        self.assertNotEqual(process.returncode, 0)
        self.assertIn("KeyboardInterrupt", output)
        self.assert_nothing_left()

    @skip_unless("postgresql", "mysql", "mariadb", why="SQLite tables carry no leftover mark: the next run refuses them")
    def test_sigkill_with_drop_tables_next_run_cleans_up(self) -> None:
        """drop_tables=True commits its tables, so a SIGKILL leaves them; the next run replaces them and leaves none."""
        process = self.start(hang=True, drop_tables=True)
        self.kill_half_way(process, signal.SIGKILL)
        self.assertEqual(self.wait_for_tables(sorted(self.names)), sorted(self.names), "committed tables stay")
        rerun = self.start(hang=False, drop_tables=True)
        output, _ = rerun.communicate(timeout=120)
        self.assertEqual(rerun.returncode, 0, output)
        self.assertEqual(self.wait_for_tables([]), [])
