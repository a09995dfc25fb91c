"""Every test starts on a blank slate, whatever the previous test did to its session or connection."""

from __future__ import annotations

import threading
import unittest

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

import dbtestcase
from tests.functional.models import Author, Base, Book, DeferredBase, Label, Shelf
from tests.functional.support import backend, rows_seen_by_another_connection, skip_unless


def setUpModule() -> None:
    dbtestcase.setup_module(Base.metadata)


def tearDownModule() -> None:
    dbtestcase.teardown_module()


def count(session: Session, model: type) -> int:
    return session.scalar(sa.select(sa.func.count()).select_from(model)) or 0


class BlankSlateCase(dbtestcase.DatabaseTestCase):
    """Every test of a subclass first proves that no earlier test left a row behind."""

    def setUp(self) -> None:
        with self.connection.begin_nested():
            for table in Base.metadata.sorted_tables:
                rows = self.connection.scalar(sa.select(sa.func.count()).select_from(table))
                self.assertEqual(rows, 0, f"{table.name} holds {rows} rows left by an earlier test")


class SessionEscapes(BlankSlateCase):
    """What code under test does to its Session never reaches the next test."""

    def test_commit(self) -> None:
        """commit() stays inside the test: the rows are visible here and to nobody else."""
        self.session.add(Author(name="ann"))
        self.session.commit()
        self.assertEqual(count(self.session, Author), 1)
        seen = rows_seen_by_another_connection(self.test_database.url, "dbtc_authors")
        self.assertEqual(seen, 0, "the rows must live only inside the test transaction")

    def test_commit_then_rollback(self) -> None:
        """rollback() after commit() undoes only what came after the commit, as in production."""
        self.session.add(Author(name="ann"))
        self.session.commit()
        self.session.add(Author(name="bob"))
        self.session.rollback()
        self.assertEqual([a.name for a in self.session.scalars(sa.select(Author))], ["ann"])

    def test_close_and_reuse(self) -> None:
        """close() and further work on the same session stay in the test."""
        self.session.add(Author(name="ann"))
        self.session.commit()
        self.session.close()
        self.session.add(Author(name="bob"))
        self.session.commit()
        self.assertEqual(count(self.session, Author), 2)

    def test_begin_nested(self) -> None:
        """begin_nested() in code under test nests inside the test's savepoint."""
        with self.session.begin_nested():
            self.session.add(Author(name="ann"))
        nested = self.session.begin_nested()
        self.session.add(Author(name="bob"))
        nested.rollback()
        self.session.commit()
        self.assertEqual([a.name for a in self.session.scalars(sa.select(Author))], ["ann"])

    def test_integrity_error(self) -> None:
        """An IntegrityError in the test body does not break the session or the next test."""
        self.session.add(Author(name="ann"))
        self.session.commit()
        self.session.add(Author(name="ann"))
        with self.assertRaises(IntegrityError):
            self.session.commit()
        self.session.rollback()
        self.assertEqual(count(self.session, Author), 1)

    def test_integrity_error_left_unhandled(self) -> None:
        """A session left in its failed state is cleaned up by the test's end."""
        self.session.add_all([Author(name="ann"), Author(name="ann")])
        with self.assertRaises(IntegrityError):
            self.session.flush()

    def test_own_session_on_the_connection(self) -> None:
        """Code that makes its own Session on the test's connection stays isolated too."""
        other = Session(bind=self.connection, join_transaction_mode="create_savepoint")
        other.add(Author(name="ann"))
        other.commit()
        other.close()
        self.assertEqual(count(self.session, Author), 1)

    def test_zz_last(self) -> None:
        """Runs last in its class, so the blank-slate check covers the test before it."""
        self.assertEqual(count(self.session, Author), 0)


class ConnectionEscapes(BlankSlateCase):
    """What a test does on the shared connection never reaches the next test."""

    def test_failed_statement(self) -> None:
        """A failed statement (PostgreSQL aborts the transaction) does not break the next test."""
        self.connection.execute(sa.insert(Author).values(name="ann"))
        with self.assertRaises(DBAPIError):
            self.connection.exec_driver_sql("SELECT * FROM no_such_table")

    def test_commit_on_the_connection(self) -> None:
        """connection.commit() does not reach the server: nothing becomes visible to others."""
        self.connection.execute(sa.insert(Author).values(name="ann"))
        self.connection.commit()
        self.assertEqual(rows_seen_by_another_connection(self.test_database.url, "dbtc_authors"), 0)

    def test_rollback_on_the_connection(self) -> None:
        """connection.rollback() does not end the outer transaction: the tables are still there."""
        self.connection.rollback()
        self.assertEqual(count(self.session, Author), 0)

    def test_nested_transaction_left_open(self) -> None:
        """A connection.begin_nested() the test never closes is rolled back with the test."""
        self.connection.begin_nested()
        self.connection.execute(sa.insert(Author).values(name="ann"))

    def test_zz_last(self) -> None:
        """Runs last in its class, so the blank-slate check covers the test before it."""
        self.assertEqual(count(self.session, Author), 0)


class TestDataTests(dbtestcase.DatabaseTestCase):
    """setUpTestData: created once, seen by every test, changes never shared between tests."""

    calls = 0

    @classmethod
    def setUpTestData(cls) -> None:
        TestDataTests.calls += 1
        cls.author = Author(name="ann")
        cls.books = [Book(title="one", author=cls.author), Book(title="two", author=cls.author)]
        cls.session.add_all([cls.author, *cls.books])

    def test_a_change_the_data(self) -> None:
        """A test may change the shared rows and objects freely."""
        self.author.name = "changed"
        self.session.delete(self.books[0])
        self.session.commit()
        self.assertEqual(count(self.session, Book), 1)

    def test_b_sees_the_original(self) -> None:
        """The next test sees the data as setUpTestData made it, objects included."""
        self.assertEqual(self.author.name, "ann")
        self.assertEqual(sorted(b.title for b in self.books), ["one", "two"])
        self.assertEqual(count(self.session, Book), 2)
        self.assertIs(self.books[0].author, self.author, "the objects belong to this test's session")

    def test_c_created_once(self) -> None:
        """The hook ran once for the class, not once per test."""
        self.assertEqual(TestDataTests.calls, 1)


class AfterTestData(BlankSlateCase):
    """The class-level data is gone once its class has finished."""

    def test_gone(self) -> None:
        """Runs after TestDataTests: its setUp proves the shared rows were rolled back."""
        self.assertEqual(count(self.session, Author), 0)


@skip_unless("postgresql", "sqlite", why="MySQL and MariaDB never roll back AUTO_INCREMENT")
class SequenceTests(dbtestcase.DatabaseTestCase):
    """reset_sequences = True: every test gets the same ids."""

    reset_sequences = True

    def test_a(self) -> None:
        """The first row of a test gets id 1."""
        author = Author(name="ann")
        self.session.add(author)
        self.session.flush()
        self.assertEqual(author.id, 1)

    def test_b(self) -> None:
        """...in every test, though PostgreSQL never rolls a sequence back."""
        authors = [Author(name="bob"), Author(name="cid")]
        self.session.add_all(authors)
        self.session.flush()
        self.assertEqual([a.id for a in authors], [1, 2])


@skip_unless("postgresql", "sqlite", why="MySQL and MariaDB never roll back AUTO_INCREMENT")
class SequencesWithTestData(dbtestcase.DatabaseTestCase):
    """With setUpTestData, each test's ids continue from the class data's."""

    reset_sequences = True

    @classmethod
    def setUpTestData(cls) -> None:
        cls.session.add_all([Author(name="ann"), Author(name="bob")])

    def test_a(self) -> None:
        """The class data took ids 1 and 2; a test's first row gets 3."""
        author = Author(name="cid")
        self.session.add(author)
        self.session.flush()
        self.assertEqual(author.id, 3)

    def test_b(self) -> None:
        """...in every test."""
        self.test_a()


@skip_unless("postgresql", "sqlite", why="MySQL and MariaDB have no deferrable constraints")
class DeferredConstraints(unittest.TestCase):
    """A deferred foreign key violated by a test fails that test instead of passing silently."""

    database: dbtestcase.TestDatabase

    @classmethod
    def setUpClass(cls) -> None:
        # SQLite lets one connection write at a time: a database of its own, in memory.
        url = "sqlite://" if backend() == "sqlite" else None
        cls.database = dbtestcase.TestDatabase(DeferredBase.metadata, url).setup()
        cls.addClassCleanup(cls.database.teardown)

    def run_inner(self, body: object) -> unittest.TestResult:
        """Run a DatabaseTestCase whose one test is ``body``; TestCase.run, so no module fixtures rerun."""
        inner = type("Inner", (dbtestcase.DatabaseTestCase,), {"database": self.database, "test_it": body})
        result = unittest.TestResult()
        inner("test_it").run(result)
        inner.doClassCleanups()
        return result

    def test_violation_fails_the_test(self) -> None:
        """A label on a shelf that does not exist is reported as DeferredConstraintError."""

        def test_it(case: dbtestcase.DatabaseTestCase) -> None:
            case.session.add(Label(shelf_id=424242))
            case.session.commit()  # deferred: accepted here, as it is in production until COMMIT

        result = self.run_inner(test_it)
        self.assertEqual(result.testsRun, 1)
        self.assertEqual(len(result.failures), 1, result.errors)
        self.assertIn("DeferredConstraintError: the test left a deferred constraint violated", result.failures[0][1])

    def test_violation_inside_open_session(self) -> None:
        """Also when the session is still in its transaction at the end of the test."""

        def test_it(case: dbtestcase.DatabaseTestCase) -> None:
            case.session.add(Label(shelf_id=424242))
            case.session.flush()

        result = self.run_inner(test_it)
        self.assertEqual(len(result.failures), 1, result.errors)
        self.assertIn("DeferredConstraintError", result.failures[0][1])

    def test_valid_rows_pass(self) -> None:
        """A violation mended before the end of the test passes."""

        def test_it(case: dbtestcase.DatabaseTestCase) -> None:
            case.session.add(Label(shelf_id=7))
            case.session.flush()
            case.session.add(Shelf(id=7))
            case.session.commit()

        result = self.run_inner(test_it)
        self.assertTrue(result.wasSuccessful(), result.errors + result.failures)

    def test_next_test_is_clean(self) -> None:
        """After a violation, the next test starts with no labels."""

        def test_it(case: dbtestcase.DatabaseTestCase) -> None:
            case.assertEqual(count(case.session, Label), 0)

        self.run_inner(lambda case: case.session.add(Label(shelf_id=1)))
        result = self.run_inner(test_it)
        self.assertTrue(result.wasSuccessful(), result.errors + result.failures)


class SetUpWithoutSuper(dbtestcase.DatabaseTestCase):
    """A subclass's setUp that forgets super().setUp() still runs inside the test savepoint."""

    def setUp(self) -> None:
        self.session.add(Author(name="made in setUp"))
        self.session.commit()

    def test_a(self) -> None:
        """The row from setUp is there once..."""
        self.assertEqual(count(self.session, Author), 1)

    def test_b(self) -> None:
        """...and only once: setUp's rows were rolled back after the previous test."""
        self.assertEqual(count(self.session, Author), 1)


class ThreadsSeeNothingLeaked(BlankSlateCase):
    """Rows never become visible to other connections, even in the middle of a test."""

    def test_other_thread(self) -> None:
        """Another thread with its own connection does not see the test's committed rows."""
        self.session.add(Author(name="ann"))
        self.session.commit()
        seen: list[int] = []
        thread = threading.Thread(
            target=lambda: seen.append(rows_seen_by_another_connection(self.test_database.url, "dbtc_authors"))
        )
        thread.start()
        thread.join(30)
        self.assertEqual(seen, [0])


class SessionSemantics(dbtestcase.DatabaseTestCase):
    """In every test (not only the first), the session behaves as on a real transaction."""

    def check(self) -> None:
        self.session.add(Author(name="kept"))
        self.session.commit()
        self.session.add(Author(name="undone"))
        self.session.flush()
        self.session.rollback()
        self.assertEqual([a.name for a in self.session.scalars(sa.select(Author))], ["kept"])
        self.session.add(Author(name="kept"))
        with self.assertRaises(IntegrityError):
            self.session.commit()
        self.session.rollback()
        self.assertEqual(count(self.session, Author), 1, "the session works again after rollback()")

    def test_a(self) -> None:
        """rollback() undoes what came after the last commit(); an IntegrityError is recoverable."""
        self.check()

    def test_b(self) -> None:
        """...also in the second test of the class."""
        self.check()

    def test_c(self) -> None:
        """...and the third."""
        self.check()
