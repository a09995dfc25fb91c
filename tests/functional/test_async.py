"""AsyncDatabaseTestCase on asyncpg and psycopg (3) async: per-test savepoints on one AsyncConnection."""

from __future__ import annotations

import asyncio
import tempfile
import unittest
from pathlib import Path

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
    write_project,
)

pytestmark_reason = "async drivers are tested on PostgreSQL"
ON_POSTGRES = backend() == "postgresql"


def async_url(driver: str) -> str:
    return server_url().set(drivername=f"postgresql+{driver}").render_as_string(hide_password=False)


def make_database(driver: str) -> dbtestcase.TestDatabase | None:
    # The driver alone: the suite's server, resolved at setup, so that importing this module starts no server.
    return dbtestcase.TestDatabase(Base.metadata, f"postgresql+{driver}://") if ON_POSTGRES else None


class _Behaviour:
    """The tests every async driver must pass (mixed into one class per driver)."""

    database: dbtestcase.TestDatabase
    session: object

    async def test_a_commit_stays_in_the_test(self) -> None:
        """An awaited commit is seen by the test, and by nobody outside the outer transaction..."""
        self.session.add(Author(name="ann"))  # type: ignore[attr-defined]
        await self.session.commit()  # type: ignore[attr-defined]
        await self.assertRowCount(Author, 1)  # type: ignore[attr-defined]
        count = await self.connection.scalar(sa.select(sa.func.count()).select_from(Author.__table__))  # type: ignore[attr-defined]
        self.assertEqual(count, 1)  # type: ignore[attr-defined]
        url = self.database.url.set(drivername="postgresql+psycopg2")
        self.assertEqual(rows_seen_by_another_connection(url, Author.__tablename__), 0)  # type: ignore[attr-defined]
        self.assertEqual(tables_seen_by_another_connection(url, [Author.__tablename__]), [])  # type: ignore[attr-defined]

    async def test_b_blank_slate(self) -> None:
        """...and gone in the next test."""
        await self.assertRowCount(Author, 0)  # type: ignore[attr-defined]

    async def test_c_runs_on_the_database_loop(self) -> None:
        """Every test runs on the loop the connection was made in (asyncpg cannot change loops)."""
        self.assertIs(asyncio.get_running_loop(), self.database.loop)  # type: ignore[attr-defined]

    async def test_d_rollback_and_nested(self) -> None:
        """The session's rollback and begin_nested stay inside the test."""
        self.session.add(Author(name="kept"))  # type: ignore[attr-defined]
        await self.session.commit()  # type: ignore[attr-defined]
        async with self.session.begin_nested():  # type: ignore[attr-defined]
            self.session.add(Author(name="nested"))  # type: ignore[attr-defined]
        self.session.add(Author(name="undone"))  # type: ignore[attr-defined]
        await self.session.flush()  # type: ignore[attr-defined]
        await self.session.rollback()  # type: ignore[attr-defined]
        names = (await self.session.scalars(sa.select(Author.name).order_by(Author.name))).all()  # type: ignore[attr-defined]
        self.assertEqual(names, ["kept"])  # type: ignore[attr-defined]

    async def test_e_failed_statement_then_blank(self) -> None:
        """A failing statement in a test leaves the next test a working connection."""
        self.session.add_all([Author(name="same"), Author(name="same")])  # type: ignore[attr-defined]
        with self.assertRaises(sa.exc.IntegrityError):  # type: ignore[attr-defined]
            await self.session.flush()  # type: ignore[attr-defined]

    async def test_f_after_the_failure(self) -> None:
        """(runs after test_e) the connection works and the table is empty."""
        await self.assertRowCount(Author, 0)  # type: ignore[attr-defined]

    async def test_g_query_count(self) -> None:
        """assertNumQueries counts the statements run through the async session."""
        with self.assertNumQueries(2):  # type: ignore[attr-defined]
            self.session.add(Author(name="x"))  # type: ignore[attr-defined]
            await self.session.flush()  # type: ignore[attr-defined]
            await self.session.scalar(sa.select(Author.id))  # type: ignore[attr-defined]

    async def test_h_left_running_task(self) -> None:
        """A task the test leaves running is cancelled after it, not carried into the next test."""
        type(self).leftover = asyncio.get_running_loop().create_task(asyncio.sleep(3600))  # type: ignore[attr-defined]

    def test_i_leftover_cancelled(self) -> None:
        """(runs after test_h) a sync test method works too, and the leftover task was cancelled."""
        self.assertTrue(type(self).leftover.cancelled())  # type: ignore[attr-defined]


@skip_unless("postgresql", why=pytestmark_reason)
class Asyncpg(_Behaviour, dbtestcase.AsyncDatabaseTestCase):
    database = make_database("asyncpg")


@skip_unless("postgresql", why=pytestmark_reason)
class PsycopgAsync(_Behaviour, dbtestcase.AsyncDatabaseTestCase):
    database = make_database("psycopg_async")


@skip_unless("postgresql", why=pytestmark_reason)
class Hooks(dbtestcase.AsyncDatabaseTestCase):
    database = make_database("asyncpg")

    def setUp(self) -> None:
        self.order = ["setUp"]

    async def asyncSetUp(self) -> None:  # noqa: N802
        self.order.append("asyncSetUp")
        self.session.add(Author(name="from asyncSetUp"))
        await self.session.commit()
        self.addAsyncCleanup(self.cleanup)

    async def cleanup(self) -> None:
        await self.assertRowCount(Author, 1)  # cleanups run before the rollback

    async def test_setup_data(self) -> None:
        """setUp, asyncSetUp and async cleanups run, inside the test's savepoint."""
        self.assertEqual(self.order, ["setUp", "asyncSetUp"])
        await self.assertRowCount(Author, 1)


@skip_unless("postgresql", why=pytestmark_reason)
class DeferredConstraints(unittest.TestCase):
    def test_violation_is_a_failure_on_each_driver(self) -> None:
        """A deferred foreign key left violated fails the test (DeferredConstraintError), and the next test runs."""
        for driver in ("asyncpg", "psycopg_async"):
            with self.subTest(driver=driver), dbtestcase.TestDatabase(DeferredBase.metadata, async_url(driver)) as database:

                class Case(dbtestcase.AsyncDatabaseTestCase):
                    async def test_a_violation(self) -> None:
                        self.session.add(Label(shelf_id=424242))
                        await self.session.commit()

                    async def test_b_after(self) -> None:
                        self.assertEqual(await self.session.scalar(sa.select(sa.func.count()).select_from(Label)), 0)

                Case.database = database
                result = run_tests(Case)
                self.assertEqual(result.testsRun, 2)
                self.assertEqual(len(result.failures), 1, result.failures + result.errors)
                self.assertIn("DeferredConstraintError: the test left a deferred constraint violated", result.failures[0][1])
                self.assertEqual(result.errors, [])


@skip_unless("postgresql", why=pytestmark_reason)
class Misuse(unittest.TestCase):
    def test_sync_case_on_an_async_database(self) -> None:
        """A DatabaseTestCase on an async database fails with a message that names the async class."""
        database = dbtestcase.TestDatabase(Base.metadata, async_url("asyncpg"))

        class Sync(dbtestcase.DatabaseTestCase):
            def test_x(self) -> None:
                pass

        Sync.database = database
        result = run_tests(Sync)
        self.assertEqual(len(result.errors), 1)
        self.assertIn("is a DatabaseTestCase, but its database postgresql+asyncpg://", result.errors[0][1])
        self.assertIn("make it a dbtestcase.AsyncDatabaseTestCase", result.errors[0][1])
        self.assertFalse(database.is_set_up, "the class tore down what it set up")

    def test_async_case_on_a_sync_database(self) -> None:
        """An AsyncDatabaseTestCase on a sync database fails, naming the fix."""

        class Async(dbtestcase.AsyncDatabaseTestCase):
            database = dbtestcase.TestDatabase(Base.metadata, server_url())

            async def test_x(self) -> None:
                pass

        result = run_tests(Async)
        self.assertEqual(len(result.errors), 1)
        self.assertIn("is an AsyncDatabaseTestCase, but its database", result.errors[0][1])
        self.assertIn("url='postgresql+asyncpg://...'", result.errors[0][1])
        self.assertFalse(Async.database.is_set_up)

    def test_an_assertion_left_without_await_fails_the_test(self) -> None:
        """assertRowCount without await would check nothing: the test fails, naming the fix."""
        with dbtestcase.TestDatabase(Base.metadata, async_url("asyncpg")) as database:

            class Case(dbtestcase.AsyncDatabaseTestCase):
                async def test_forgets_await(self) -> None:
                    self.assertRowCount(Author, 99)  # no await: would pass silently

                async def test_awaits(self) -> None:
                    await self.assertRowCount(Author, 0)

            Case.database = database
            result = run_tests(Case)
        self.assertEqual((result.testsRun, len(result.errors)), (2, 0), result.errors)
        self.assertEqual(len(result.failures), 1, result.failures)
        self.assertIn("test_forgets_await", result.failures[0][0].id())
        self.assertIn("1 call(s) of self.assertRowCount(...)", result.failures[0][1])
        self.assertIn("write await self.assertRowCount(...)", result.failures[0][1])

    def test_sync_only_hooks_are_refused(self) -> None:
        """setUpTestData, reset_sequences and bind_sessions would be ignored: the class is refused, naming them."""
        from sqlalchemy.orm import sessionmaker

        cases = {
            "setUpTestData": {"setUpTestData": classmethod(lambda cls: None)},
            "reset_sequences": {"reset_sequences": True},
            "bind_sessions": {"bind_sessions": [sessionmaker()]},
        }
        for attribute, body in cases.items():
            with self.subTest(attribute=attribute), self.assertRaises(dbtestcase.ConfigurationError) as caught:
                type("Case", (dbtestcase.AsyncDatabaseTestCase,), body)
            self.assertIn(f"Case.{attribute}", str(caught.exception))
            self.assertIn("DatabaseTestCase", str(caught.exception))

    def run_committing_case(self, driver: str) -> tuple[unittest.TestResult, str]:
        """Run a test that commits self.connection itself, then one that checks it left nothing."""
        with dbtestcase.TestDatabase(Base.metadata, async_url(driver)) as database:

            class Case(dbtestcase.AsyncDatabaseTestCase):
                async def test_a_commits(self) -> None:
                    self.session.add(Author(name="committed?"))
                    await self.session.flush()
                    await self.connection.commit()

                async def test_b_after(self) -> None:
                    type(self).seen = await self.session.scalar(sa.select(sa.func.count()).select_from(Author))

            Case.database = database
            result = run_tests(Case)
            schema = database.schema_name or ""
        self.assertTrue(schema.startswith("dbtestcase_"))
        self.seen = getattr(Case, "seen", None)
        return result, schema

    def schema_left(self, name: str) -> bool:
        engine = sa.create_engine(server_url())
        try:
            with engine.connect() as other:
                return bool(other.execute(sa.text("SELECT 1 FROM pg_namespace WHERE nspname = :n"), {"n": name}).first())
        finally:
            engine.dispose()

    def test_asyncpg_commit_of_the_shared_connection_is_harmless(self) -> None:
        """asyncpg, as psycopg2: a test's commit() on self.connection never reaches the server."""
        result, schema = self.run_committing_case("asyncpg")
        self.assertEqual((result.testsRun, result.errors, result.failures), (2, [], []))
        self.assertEqual(self.seen, 0, "the next test starts on a blank slate")
        self.assertFalse(self.schema_left(schema))

    def test_psycopg_async_commit_of_the_shared_connection_is_reported(self) -> None:
        """psycopg 3 commits whatever is open: reported, later tests still run, and the committed schema is dropped."""
        result, schema = self.run_committing_case("psycopg_async")
        self.assertEqual(result.testsRun, 2)
        self.assertEqual(len(result.errors), 1, result.errors)
        self.assertIn("the test ended the outer transaction with commit() or rollback()", result.errors[0][1])
        self.assertIn("psycopg driver does not let dbtestcase prevent", result.errors[0][1])
        self.assertEqual(result.failures, [])
        self.assertEqual(self.seen, 1, "test_b still finds the tables (and the committed row, as documented)")
        self.assertFalse(self.schema_left(schema), "teardown dropped the schema the test committed")

    def test_drop_tables_refused(self) -> None:
        """drop_tables=True on an async URL is refused with the way out."""
        database = dbtestcase.TestDatabase(Base.metadata, async_url("asyncpg"), drop_tables=True)
        with self.assertRaisesRegex(dbtestcase.ConfigurationError, r"supports the savepoint strategy without drop_tables"):
            database.setup()
        self.assertFalse(database.is_set_up)

    def test_bare_async_url_uses_the_configured_server(self) -> None:
        """``postgresql+asyncpg://`` alone means $DBTESTCASE_URL's server (else a throwaway one), with asyncpg."""
        with dbtestcase.TestDatabase(Base.metadata, "postgresql+asyncpg://") as database:
            self.assertTrue(database.is_async)
            self.assertEqual(database.url.drivername, "postgresql+asyncpg")
            expected = server_url()
            self.assertEqual((database.url.host, database.url.port, database.url.database),
                             (expected.host, expected.port, expected.database))

    def test_refused_connection_is_one_line(self) -> None:
        """A server that is not there gives ConnectionFailedError, as with psycopg2."""
        database = dbtestcase.TestDatabase(Base.metadata, "postgresql+asyncpg://u:secret@127.0.0.1:1/test")
        with self.assertRaisesRegex(dbtestcase.ConnectionFailedError, r"^could not connect to postgresql\+asyncpg://u:\*\*\*@"):
            database.setup()
        self.assertFalse(database.is_set_up)


class ImportWithoutAsync(unittest.TestCase):
    def test_import_needs_no_greenlet_nor_async_driver(self) -> None:
        """``import dbtestcase`` works without greenlet, asyncpg and psycopg; an async URL then names greenlet."""
        code = (
            "import sys\n"
            "for name in ('greenlet', 'asyncpg', 'psycopg', 'sqlalchemy.ext.asyncio'):\n"
            "    sys.modules[name] = None\n"
            "import sqlalchemy, dbtestcase\n"
            "print(dbtestcase.AsyncDatabaseTestCase.__name__)\n"
            "try:\n"
            "    dbtestcase.TestDatabase(sqlalchemy.MetaData(), 'postgresql+asyncpg://u@127.0.0.1:1/test').setup()\n"
            "except dbtestcase.DriverMissingError as exc:\n"
            "    print(exc)\n"
        )
        with tempfile.TemporaryDirectory() as tmp:
            done = run_python(["-c", code], Path(tmp))
        self.assertEqual(done.returncode, 0, done.stderr)
        lines = done.stdout.splitlines()
        self.assertEqual(lines[0], "AsyncDatabaseTestCase")
        self.assertIn("needs greenlet, which is not installed: pip install greenlet", lines[1])


SAMPLE = {
    "models.py": """
        from sqlalchemy import Column, Integer, String
        from sqlalchemy.orm import DeclarativeBase

        class Base(DeclarativeBase):
            pass

        class Item(Base):
            __tablename__ = "dbtc_async_items"
            id = Column(Integer, primary_key=True)
            name = Column(String(50))
    """,
    "test_items.py": """
        import os
        from sqlalchemy import func, select
        import dbtestcase
        from models import Base, Item

        def setUpModule():
            dbtestcase.setup_module(Base.metadata, url=os.environ["ASYNC_URL"])

        def tearDownModule():
            dbtestcase.teardown_module()

        class ItemTests(dbtestcase.AsyncDatabaseTestCase):
            async def test_a_add(self):
                self.session.add(Item(name="one"))
                await self.session.commit()
                self.assertEqual(await self.session.scalar(select(func.count()).select_from(Item)), 1)

            async def test_b_blank(self):
                self.assertEqual(await self.session.scalar(select(func.count()).select_from(Item)), 0)
    """,
}


@skip_unless("postgresql", why=pytestmark_reason)
class Runners(unittest.TestCase):
    def run_sample(self, args: list[str]) -> str:
        with tempfile.TemporaryDirectory() as tmp:
            project = write_project(Path(tmp), SAMPLE)
            done = run_python(args, project, env={"ASYNC_URL": async_url("asyncpg")})
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        return done.stdout + done.stderr

    def test_unittest(self) -> None:
        """python -m unittest runs async tests in savepoints (test_b sees nothing of test_a)."""
        self.assertRegex(self.run_sample(["-m", "unittest", "-v", "test_items"]), r"Ran 2 tests.*\n\nOK")

    def test_nose2(self) -> None:
        """nose2 runs them too."""
        self.assertRegex(self.run_sample(["-m", "nose2", "-v", "test_items"]), r"Ran 2 tests.*\n\nOK")

    def test_pytest(self) -> None:
        """pytest runs them too, without pytest-asyncio."""
        out = self.run_sample(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:asyncio", "test_items.py"])
        self.assertIn("2 passed", out)

