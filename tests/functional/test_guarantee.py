"""The blank slate holds on every path: a failing test on any driver, any way of defining setUp, a rerun, --pdb."""

from __future__ import annotations

import sqlite3
import tempfile
import textwrap
import unittest
from pathlib import Path
from typing import Any, Callable

import sqlalchemy as sa

import dbtestcase
from tests.functional.models import Author, Base, DeferredBase, Label
from tests.functional.support import (
    backend,
    rows_seen_by_another_connection,
    run_python,
    run_tests,
    server_url,
    skip_unless,
    tables_seen_by_another_connection,
    unique_metadata,
    write_project,
)


def count(connection: sa.engine.Connection, table: sa.Table) -> int:
    return connection.scalar(sa.select(sa.func.count()).select_from(table)) or 0


class _PlainSqlite(sqlite3.Connection):
    """A user's own pysqlite connection class: the kit leaves it alone, and so cannot guard its commit()."""


def unguarded_database(metadata: sa.MetaData) -> dbtestcase.TestDatabase:
    """A database whose commit() the kit cannot switch off: the user's own connection class (pysqlite's
    ``factory``, psycopg2's ``connection_factory``), which the kit leaves alone."""
    if backend() == "sqlite":
        return dbtestcase.TestDatabase(metadata, "sqlite://", engine_options={"connect_args": {"factory": _PlainSqlite}})
    import psycopg2.extensions

    factory = {"connection_factory": psycopg2.extensions.connection}
    return dbtestcase.TestDatabase(metadata, server_url(), engine_options={"connect_args": factory})


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


@skip_unless("postgresql", why="the PostgreSQL drivers' ownership")
class PostgresDrivers(unittest.TestCase):
    """psycopg2 and psycopg 3: a real transaction that only the kit ends, as production code sees one."""

    def run_case(self, driver: str, body: dict[str, Any]) -> unittest.TestResult:
        database = dbtestcase.TestDatabase(Base.metadata, server_url().set(drivername=f"postgresql+{driver}")).setup()
        self.addCleanup(database.teardown)
        case = type("Case", (dbtestcase.DatabaseTestCase,), {"database": database, **body})
        return run_tests(case)

    def assert_blank_after_on_both_drivers(self, first: Callable[[Any], None]) -> None:
        """``first`` passes as a test, and a second test sees no author, on psycopg2 and on psycopg 3."""
        def test_2_blank(test: dbtestcase.DatabaseTestCase) -> None:
            test.assertRowCount(Author, 0)

        for driver in ("psycopg2", "psycopg"):
            with self.subTest(driver=driver):
                result = self.run_case(driver, {"test_1": first, "test_2_blank": test_2_blank})
                self.assertEqual((result.testsRun, result.failures, result.errors), (2, [], []))

    def test_streaming_queries_work(self) -> None:
        """yield_per and stream_results (server-side cursors) run inside the test, as in production."""
        def test_1_stream(test: dbtestcase.DatabaseTestCase) -> None:
            test.session.add_all([Author(name=f"a{n}") for n in range(5)])
            test.session.commit()
            names = [author.name for author in test.session.scalars(sa.select(Author).execution_options(yield_per=2))]
            test.assertEqual(sorted(names), [f"a{n}" for n in range(5)])
            streamed = test.connection.execute(sa.select(Author.__table__.c.name), execution_options={"stream_results": True})
            test.assertEqual(len(streamed.all()), 5)

        self.assert_blank_after_on_both_drivers(test_1_stream)

    def test_code_sees_the_servers_isolation_level_and_commit_is_harmless(self) -> None:
        """get_isolation_level() is the server's default, not AUTOCOMMIT; connection.commit() ends nothing."""
        def test_1_commit(test: dbtestcase.DatabaseTestCase) -> None:
            test.assertEqual(test.connection.get_isolation_level(), "READ COMMITTED")
            test.connection.execute(Author.__table__.insert().values(name="committed?"))
            test.connection.commit()
            test.connection.rollback()

        self.assert_blank_after_on_both_drivers(test_1_commit)

    def test_execution_options_set_on_the_connection_do_not_reach_the_next_test(self) -> None:
        """stream_results set on self.connection is undone after the test (and the kit's SQL never streams)."""
        seen: list[Any] = []

        def test_1_sets(test: dbtestcase.DatabaseTestCase) -> None:
            test.connection.execution_options(stream_results=True, logging_token="t1")

        def test_2_sees(test: dbtestcase.DatabaseTestCase) -> None:
            options = test.connection.get_execution_options()
            seen.append((options.get("stream_results", False), options.get("logging_token")))

        result = self.run_case("psycopg2", {"test_1_sets": test_1_sets, "test_2_sees": test_2_sees})
        self.assertEqual((result.testsRun, result.failures, result.errors), (2, [], []))
        self.assertEqual(seen, [(False, None)])

    def test_an_option_that_cannot_be_unset_fails_the_test_that_set_it(self) -> None:
        """An unknown execution option on the shared connection fails that test, naming it and the fix."""
        def test_1_sets(test: dbtestcase.DatabaseTestCase) -> None:
            test.connection.execution_options(my_app_flag=True)

        result = self.run_case("psycopg2", {"test_1_sets": test_1_sets})
        self.assertEqual(len(result.errors), 1, result.failures)
        self.assertIn("the test set the execution options my_app_flag on the shared connection", result.errors[0][1])
        self.assertIn("pass them per statement", result.errors[0][1])


class TransactionControl(unittest.TestCase):
    """Raw transaction control on the shared connection is refused, or noticed and undone: never a leak."""

    def run_case(self, body: dict[str, Any]) -> tuple[unittest.TestResult, dbtestcase.TestDatabase]:
        metadata, names = unique_metadata("txn")
        database = dbtestcase.TestDatabase(metadata, server_url()).setup()
        self.addCleanup(database.teardown)
        self.table, self.names = metadata.tables[names[0]], names
        case = type("Case", (dbtestcase.DatabaseTestCase,), {"database": database, **body})
        return run_tests(case), database

    def test_commit_rollback_and_release_statements_are_refused(self) -> None:
        """COMMIT, ROLLBACK, END and RELEASE of the kit's savepoint through SQLAlchemy are refused before they run."""
        refused: list[str] = []

        def test_1_tries(test: dbtestcase.DatabaseTestCase) -> None:
            test.connection.execute(self.table.insert().values(id=1, name="kept?"))
            level = test.test_database.savepoints.top
            for statement in ("COMMIT", "rollback", "END", f"RELEASE SAVEPOINT {level}", f"ROLLBACK TO SAVEPOINT {level}"):
                with test.assertRaises(dbtestcase.TransactionEndedError) as caught:
                    test.connection.exec_driver_sql(statement)
                refused.append(str(caught.exception))

        def test_2_blank(test: dbtestcase.DatabaseTestCase) -> None:
            test.assertEqual(count(test.connection, self.table), 0)

        result, _ = self.run_case({"test_1_tries": test_1_tries, "test_2_blank": test_2_blank})
        self.assertEqual((result.testsRun, result.failures, result.errors), (2, [], []))
        self.assertEqual(len(refused), 5)
        self.assertIn("the test ran 'COMMIT' on the shared connection, which would end the outer transaction", refused[0])
        self.assertIn("nothing was sent. Use self.session.commit()", refused[0])

    def test_a_commit_through_the_dbapi_connection_is_undone_and_reported(self) -> None:
        """A COMMIT sent through the driver itself fails that test; what it committed is gone, later tests run."""
        schemas: list[str | None] = []

        def test_1_commits(test: dbtestcase.DatabaseTestCase) -> None:
            schemas.append(test.test_database.schema_name)
            test.connection.execute(self.table.insert().values(id=1, name="committed"))
            cursor = test.connection.connection.dbapi_connection.cursor()
            cursor.execute("COMMIT")
            cursor.close()

        def test_2_blank(test: dbtestcase.DatabaseTestCase) -> None:
            test.assertEqual(count(test.connection, self.table), 0)

        result, database = self.run_case({"test_1_commits": test_1_commits, "test_2_blank": test_2_blank})
        self.assertEqual((result.testsRun, result.failures, len(result.errors)), (2, [], 1), result.errors)
        self.assertIn("test_1_commits", result.errors[0][0].id())
        self.assertIn("TransactionEndedError: the test ended the transaction on the server", result.errors[0][1])
        url = database.url
        database.teardown()
        self.assertEqual(rows_seen_by_another_connection(url, self.names[0]), 0, "the committed row survived")
        if backend() != "mysql" and backend() != "mariadb":  # the reset strategy's tables are committed anyway
            self.assertEqual(tables_seen_by_another_connection(url, self.names), [], "the committed tables survived")
        if schemas[0]:
            self.assertEqual(schemas_seen_by_another_connection(url, schemas[0]), 0, "the committed schema survived")

    def test_closing_the_shared_connection_is_reported_and_the_next_test_runs(self) -> None:
        """self.connection.close() fails that test with the cause; the next test gets a working connection."""
        def test_1_closes(test: dbtestcase.DatabaseTestCase) -> None:
            test.connection.close()

        def test_2_works(test: dbtestcase.DatabaseTestCase) -> None:
            test.assertEqual(count(test.connection, self.table), 0)

        result, _ = self.run_case({"test_1_closes": test_1_closes, "test_2_works": test_2_works})
        self.assertEqual((result.testsRun, result.failures, len(result.errors)), (2, [], 1), result.errors)
        self.assertIn("TransactionEndedError: the test closed the shared connection", result.errors[0][1])


def schemas_seen_by_another_connection(url: sa.engine.URL, name: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            found = connection.scalar(sa.text("SELECT count(*) FROM pg_namespace WHERE nspname = :n"), {"n": name})
            return int(found or 0)
    finally:
        engine.dispose()


@skip_unless("postgresql", "sqlite", why="a connection class of the user's: psycopg2's or pysqlite's")
class CommitOnAnUnguardedDriver(unittest.TestCase):
    def test_a_commit_of_the_shared_connection_is_undone_and_reported(self) -> None:
        """connection.commit() on a driver the kit cannot guard fails the test; the next test starts blank."""
        metadata, names = unique_metadata("unguarded")
        database = unguarded_database(metadata).setup()
        self.addCleanup(database.teardown)
        table = metadata.tables[names[0]]

        def test_1_commits(test: dbtestcase.DatabaseTestCase) -> None:
            test.connection.execute(table.insert().values(id=1, name="committed"))
            test.connection.commit()

        def test_2_blank(test: dbtestcase.DatabaseTestCase) -> None:
            test.assertEqual(count(test.connection, table), 0)

        case = type("Case", (dbtestcase.DatabaseTestCase,), {"database": database, "test_1_commits": test_1_commits,
                                                             "test_2_blank": test_2_blank})
        result = run_tests(case)
        self.assertEqual((result.testsRun, result.failures, len(result.errors)), (2, [], 1), result.errors)
        self.assertIn("TransactionEndedError: the test ended the transaction on the server", result.errors[0][1])


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
