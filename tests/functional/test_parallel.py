"""Parallel workers on one server: nose2 -N 2 and pytest -n 2 run modules with the SAME tables at once.

Every worker sets up the same metadata on the suite's server ($DBTESTCASE_URL, or the throwaway
server). Each test checks it sees none of the other worker's rows, and writes down which process,
worker and namespace (PostgreSQL schema, MySQL database) it ran in.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import unittest
from pathlib import Path

import sqlalchemy as sa

from dbtestcase.servers import _runstate as runstate
from tests.functional.support import ROOT, backend, child_environ, run_python, server_url, skip_unless, write_project

MODELS = """
    from sqlalchemy import ForeignKey, String
    from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


    class Base(DeclarativeBase):
        pass


    class Shelf(Base):
        __tablename__ = "parallel_shelves"
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str] = mapped_column(String(80))


    class Item(Base):
        __tablename__ = "parallel_items"
        id: Mapped[int] = mapped_column(primary_key=True)
        shelf_id: Mapped[int] = mapped_column(ForeignKey("parallel_shelves.id"))
        tag: Mapped[str] = mapped_column(String(80))
"""

MODULE = """
    import json, os, time
    from sqlalchemy import func, select
    import dbtestcase
    from models import Base, Item, Shelf


    def setUpModule():
        dbtestcase.setup_module(Base.metadata)


    def tearDownModule():
        dbtestcase.teardown_module()


    class Works(dbtestcase.DatabaseTestCase):
        def check(self, name):
            self.assertEqual(self.session.scalar(select(func.count()).select_from(Item)), 0, "rows of another test")
            shelf = Shelf(name=name)
            self.session.add(shelf)
            self.session.flush()
            self.session.add_all([Item(shelf_id=shelf.id, tag=name) for _ in range(3)])
            self.session.commit()
            time.sleep(0.05)  # long enough for the other worker's tests to run meanwhile
            tags = self.session.scalars(select(Item.tag)).all()
            self.assertEqual(tags, [name] * 3, "rows of another test")
            database = self.test_database
            record = {{
                "pid": os.getpid(),
                "worker": os.environ.get("DBTESTCASE_WORKER") or os.environ.get("PYTEST_XDIST_WORKER"),
                "namespace": database.schema_name or database.url.database,
            }}
            with open(os.path.join(os.environ["RESULTS"], name), "w") as out:
                json.dump(record, out)

"""

MODULES, TESTS = 4, 6


def project(directory: Path) -> Path:
    files = {"models.py": MODELS}
    for module in range(MODULES):
        tests = "".join(f"    def test_{n}(self):\n        self.check('m{module}_t{n}')\n\n" for n in range(TESTS))
        files[f"test_m{module}.py"] = textwrap.dedent(MODULE).format() + tests
    return write_project(directory, files)


@skip_unless("postgresql", "mysql", "mariadb", why="an SQLite file has one writer at a time: each worker needs its own")
class ParallelWorkers(unittest.TestCase):
    def run_suite(self, args: list[str]) -> list[dict[str, object]]:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            results = root / "results"
            results.mkdir()
            directory = project(root / "project")
            url = server_url().render_as_string(hide_password=False)
            done = run_python(args, directory, env={"RESULTS": str(results), "DBTESTCASE_URL": url}, timeout=300)
            self.assertEqual(done.returncode, 0, done.stdout[-3000:] + done.stderr[-3000:])
            records = [json.loads(path.read_text()) for path in sorted(results.iterdir())]
        self.assertEqual(len(records), MODULES * TESTS, "every test ran and checked its rows")
        return records

    def assert_isolated_workers(self, records: list[dict[str, object]], workers: int) -> None:
        pids = {record["pid"] for record in records}
        self.assertEqual(len(pids), workers, "the tests ran in that many processes")
        namespaces = {record["pid"]: record["namespace"] for record in records}
        self.assertEqual(len(set(namespaces.values())), workers, "one namespace per worker")
        for record in records:
            worker = record["worker"]
            self.assertTrue(worker, "the worker knows its name")
            self.assertIn(str(worker), str(record["namespace"]), "the namespace is named after its worker")
        self.assert_nothing_left({str(name) for name in namespaces.values()})

    def assert_nothing_left(self, namespaces: set[str]) -> None:
        engine = sa.create_engine(server_url())
        try:
            with engine.connect() as connection:
                if backend() == "postgresql":
                    query = "SELECT nspname FROM pg_namespace WHERE nspname = ANY(:names)"
                    left = connection.execute(sa.text(query), {"names": sorted(namespaces)}).scalars().all()
                else:
                    left = [name for name in namespaces if connection.exec_driver_sql(f"SHOW DATABASES LIKE '{name}'").first()]
        finally:
            engine.dispose()
        self.assertEqual(left, [], "the workers' schemas or databases are gone")

    def test_nose2_mp(self) -> None:
        """nose2 -N 2: two workers, same tables, one server; no waiting, no shared rows, nothing left."""
        args = ["-m", "nose2", "-v", "--plugin", "nose2.plugins.mp", "--plugin", "dbtestcase.nose2plugin", "-N", "2"]
        self.assert_isolated_workers(self.run_suite(args), workers=2)

    def test_nose2_mp_tears_down_process_wide_databases(self) -> None:
        """An mp worker ends with os._exit(): the plugin still tears down a database kept for the whole process."""
        prefix = f"lingering_{os.getpid()}"
        sample = {
            "test_lingering.py": f"""
                import sqlalchemy as sa
                import dbtestcase

                metadata = sa.MetaData()
                sa.Table("{prefix}", metadata, sa.Column("id", sa.Integer, primary_key=True))
                # Committed tables (drop_tables=True), dropped only by teardown: none may remain.
                DATABASE = dbtestcase.TestDatabase(metadata, drop_tables=True)

                class Kept(dbtestcase.DatabaseTestCase):
                    database = DATABASE

                    @classmethod
                    def setUpClass(cls):
                        DATABASE.setup()  # set up outside the class: the class never tears it down
                        super().setUpClass()

                    def test_a(self):
                        pass
            """,
        }
        with tempfile.TemporaryDirectory() as tmp:
            directory = write_project(Path(tmp), sample)
            url = server_url().render_as_string(hide_password=False)
            args = ["-m", "nose2", "-v", "--plugin", "nose2.plugins.mp", "--plugin", "dbtestcase.nose2plugin", "-N", "2"]
            done = run_python(args, directory, env={"DBTESTCASE_URL": url}, timeout=300)
        self.assertEqual(done.returncode, 0, done.stdout[-3000:] + done.stderr[-3000:])
        engine = sa.create_engine(server_url())
        try:
            with engine.connect() as connection:
                left = [name for name in sa.inspect(connection).get_table_names() if name.startswith(prefix)]
        finally:
            engine.dispose()
        self.assertEqual(left, [], "the worker's teardown dropped its tables")

    @unittest.skipUnless(importlib.util.find_spec("xdist"), "pytest-xdist is not installed")
    def test_pytest_xdist(self) -> None:
        """pytest -n 2: the same with pytest-xdist."""
        args = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2"]
        self.assert_isolated_workers(self.run_suite(args), workers=2)

    def test_plain_unittest(self) -> None:
        """python -m unittest: one process, no worker name; PostgreSQL still uses a schema of its own."""
        records = self.run_suite(["-m", "unittest", "-v"])
        self.assertEqual(len({record["pid"] for record in records}), 1)
        self.assertEqual({record["worker"] for record in records}, {None})
        if backend() == "postgresql":
            for record in records:
                self.assertTrue(str(record["namespace"]).startswith("dbtestcase_"))
        else:
            self.assertEqual({record["namespace"] for record in records}, {server_url().database})


class WorkerSlots(unittest.TestCase):
    """nose2's mp workers are named after the lowest free slot: stable across runs, distinct at once."""

    HOLD = (
        "import sys, time\n"
        "from dbtestcase.servers import _runstate as runstate\n"
        "print(runstate.claim_slot(sys.argv[1]), flush=True)\n"
        "time.sleep(60)\n"
    )

    def claim(self, kind: str) -> tuple[subprocess.Popen[str], int]:
        env = {**child_environ(), "PYTHONPATH": str(ROOT)}
        process = subprocess.Popen([sys.executable, "-c", self.HOLD, kind], stdout=subprocess.PIPE, text=True, env=env)
        self.addCleanup(process.wait)
        self.addCleanup(process.kill)
        assert process.stdout is not None
        return process, int(process.stdout.readline())

    def test_a_killed_workers_slot_is_taken_again(self) -> None:
        """Two live holders get two slots; once the first is killed, the next worker gets its slot back."""
        kind = f"test-slots-{os.getpid()}"
        self.addCleanup(lambda: [os.unlink(path) for path in glob.glob(os.path.join(runstate.base(), kind + "-*.lock"))])
        first, one = self.claim(kind)
        _, two = self.claim(kind)
        self.assertEqual((one, two), (0, 1))
        first.kill()
        first.wait()
        _, again = self.claim(kind)
        self.assertEqual(again, 0, "the dead worker's slot (and so its MySQL database's name) is reused")

