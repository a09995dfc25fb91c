"""The blank slate holds on every path: a failing test on any driver, any way of defining setUp, a rerun, --pdb."""

from __future__ import annotations

import sqlite3
import tempfile
import textwrap
import unittest
from pathlib import Path
from typing import Any

import sqlalchemy as sa

import dbtestcase
from tests.functional.models import Author, Base, DeferredBase, Label
from tests.functional.support import backend, run_python, run_tests, server_url, skip_unless, write_project


def count(connection: sa.engine.Connection, table: sa.Table) -> int:
    return connection.scalar(sa.select(sa.func.count()).select_from(table)) or 0


class _PlainSqlite(sqlite3.Connection):
    """A user's own pysqlite connection class: the kit leaves it alone, and so cannot guard its commit()."""


def unguarded_database(metadata: sa.MetaData) -> dbtestcase.TestDatabase:
    """A database on a driver whose commit() the kit cannot switch off: psycopg 3, or pysqlite with a factory."""
    if backend() == "sqlite":
        return dbtestcase.TestDatabase(metadata, "sqlite://", engine_options={"connect_args": {"factory": _PlainSqlite}})
    return dbtestcase.TestDatabase(metadata, server_url().set(drivername="postgresql+psycopg"))


@skip_unless("postgresql", "sqlite", why="deferrable constraints: MySQL and MariaDB have none")
class FailingTestOnAnUnguardedDriver(unittest.TestCase):
    def test_a_violated_deferred_constraint_is_still_rolled_back(self) -> None:
        """The deferred-constraint check fails the test, and the test's rows are rolled back all the same."""
        database = unguarded_database(DeferredBase.metadata).setup()
        self.addCleanup(database.teardown)
        labels = Label.__table__

        class Case(dbtestcase.DatabaseTestCase):
            def test_1_violates(self) -> None:
                self.session.add(Label(shelf_id=424242))
                self.session.commit()  # into the test's savepoint: deferred, so accepted until COMMIT
                self.session.scalar(sa.select(sa.literal(1)))  # the session is in a transaction again at the end

            def test_2_counts(self) -> None:
                self.assertEqual(count(self.connection, labels), 0, "the failing test's label leaked")

        Case.database = database
        result = run_tests(Case)
        self.assertEqual(result.testsRun, 2)
        self.assertEqual(len(result.failures), 1, result.errors)
        self.assertIn("test_1_violates", result.failures[0][0].id())
        self.assertIn("DeferredConstraintError", result.failures[0][1])
        self.assertEqual(count(database.connection, labels), 0)


class WaysOfDefiningSetUp(unittest.TestCase):
    """Whoever defines setUp, and however, every test runs inside its savepoint."""

    @classmethod
    def setUpClass(cls) -> None:
        cls.database = dbtestcase.TestDatabase(Base.metadata).setup()
        cls.addClassCleanup(cls.database.teardown)

    def assert_contained(self, case: type[dbtestcase.DatabaseTestCase]) -> None:
        """``case`` writes and commits an author in test_1; test_2 (and we, afterwards) must see none."""
        authors = Author.__table__

        def test_1_writes(test: dbtestcase.DatabaseTestCase) -> None:
            test.session.add(Author(name="leaky"))
            test.session.commit()

        def test_2_counts(test: dbtestcase.DatabaseTestCase) -> None:
            test.assertEqual(count(test.connection, authors), 0, "test_1's author leaked")

        case.test_1_writes = test_1_writes  # type: ignore[attr-defined]
        case.test_2_counts = test_2_counts  # type: ignore[attr-defined]
        case.database = self.database
        result = run_tests(case)
        self.assertEqual((result.testsRun, result.failures, result.errors), (2, [], []))
        self.assertEqual(count(self.database.connection, authors), 0)

    def test_a_mixin_setup_that_skips_super(self) -> None:
        """A setUp from a mixin placed before DatabaseTestCase, without super().setUp()."""

        class Mixin:
            def setUp(self) -> None:
                self.ready = True

        self.assert_contained(type("Case", (Mixin, dbtestcase.DatabaseTestCase), {}))

    def test_setup_assigned_after_the_class_was_made(self) -> None:
        """A setUp set on the class after its creation (no __init_subclass__ sees it)."""
        case = type("Case", (dbtestcase.DatabaseTestCase,), {})

        def setUp(self: Any) -> None:  # noqa: N802
            self.ready = True

        case.setUp = setUp  # type: ignore[method-assign]
        self.assert_contained(case)

    def test_one_instance_run_twice(self) -> None:
        """The same TestCase instance run twice (a rerun plugin) gets a savepoint each time."""
        authors = Author.__table__

        class Case(dbtestcase.DatabaseTestCase):
            database = self.database

            def test_writes(self) -> None:
                self.assertEqual(count(self.connection, authors), 0, "the first run's author leaked")
                self.session.add(Author(name="twice"))
                self.session.commit()

        test = Case("test_writes")
        for _ in range(2):
            result = unittest.TestResult()
            test.run(result)
            self.assertEqual((result.testsRun, result.failures, result.errors), (1, [], []))
        Case.doClassCleanups()
        self.assertEqual(count(self.database.connection, authors), 0)


class PytestPdb(unittest.TestCase):
    def test_a_teardown_deferred_by_pdb_does_not_reach_the_next_test(self) -> None:
        """pytest --pdb runs tearDown after the test's rollback: what it writes is gone before the next test."""
        with tempfile.TemporaryDirectory() as tmp:
            write_project(Path(tmp), {"test_sample.py": textwrap.dedent('''
                import sqlalchemy as sa
                import dbtestcase

                metadata = sa.MetaData()
                notes = sa.Table("pdb_notes", metadata, sa.Column("id", sa.Integer, primary_key=True))

                def setUpModule():
                    dbtestcase.setup_module(metadata)

                def tearDownModule():
                    dbtestcase.teardown_module()

                class Notes(dbtestcase.DatabaseTestCase):
                    def tearDown(self):
                        self.connection.execute(notes.insert())

                    def test_1(self):
                        pass

                    def test_2(self):
                        n = self.connection.scalar(sa.select(sa.func.count()).select_from(notes))
                        assert n == 0, f"{n} notes left by an earlier tearDown"
            ''')})
            done = run_python(["-m", "pytest", "-q", "-p", "no:cacheprovider", "--pdb", "test_sample.py"], cwd=Path(tmp))
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        self.assertIn("2 passed", done.stdout)


class PytestImportTrap(unittest.TestCase):
    def test_importing_setup_module_into_a_pytest_module_is_explained(self) -> None:
        """'from dbtestcase import setup_module' makes pytest call it with the module: the error names the fix."""
        with tempfile.TemporaryDirectory() as tmp:
            write_project(Path(tmp), {"test_trap.py": textwrap.dedent('''
                from dbtestcase import setup_module, teardown_module

                def test_nothing():
                    pass
            ''')})
            done = run_python(["-m", "pytest", "-q", "-p", "no:cacheprovider", "test_trap.py"], cwd=Path(tmp))
        self.assertNotEqual(done.returncode, 0)
        self.assertIn("dbtestcase.setup_module() was called with the module 'test_trap' instead of a MetaData", done.stdout)
        self.assertIn("Write 'import dbtestcase'", done.stdout)
