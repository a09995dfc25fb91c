"""current_session() for factories, and the query assertions: assertNumQueries, captureQueries, assertRowCount."""

from __future__ import annotations

import unittest

import sqlalchemy as sa
from sqlalchemy.orm import selectinload

import dbtestcase
from tests.functional.models import Author, Base, Book

try:
    import factory
except ImportError:  # factory_boy is a test dependency, not the kit's
    factory = None


def setUpModule() -> None:
    dbtestcase.setup_module(Base.metadata)


def tearDownModule() -> None:
    dbtestcase.teardown_module()


class CurrentSession(dbtestcase.DatabaseTestCase):
    def test_is_the_test_session(self) -> None:
        """current_session() is the very object self.session."""
        self.assertIs(dbtestcase.current_session(), self.session)

    def test_outside_a_test(self) -> None:
        """Outside a test it raises NoTestRunningError with what to do."""
        failures: list[str] = []

        def outside() -> None:
            try:
                dbtestcase.current_session()
            except dbtestcase.NoTestRunningError as exc:
                failures.append(str(exc))

        import threading  # a fresh thread has a fresh context: no test runs there

        thread = threading.Thread(target=outside)
        thread.start()
        thread.join()
        self.assertEqual(len(failures), 1)
        self.assertIn("dbtestcase.current_session() was called outside a test", failures[0])


@unittest.skipIf(factory is None, "factory_boy is not installed")
class FactoryBoy(dbtestcase.DatabaseTestCase):
    """factory_boy's SQLAlchemyModelFactory on current_session, committing: still isolated."""

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()

        class AuthorFactory(factory.alchemy.SQLAlchemyModelFactory):
            class Meta:
                model = Author
                sqlalchemy_session_factory = dbtestcase.current_session
                sqlalchemy_session_persistence = "commit"

            name = factory.Sequence(lambda n: f"author {n}")

        cls.AuthorFactory = AuthorFactory

    def test_a_create(self) -> None:
        """Objects a factory commits are in this test's session..."""
        self.AuthorFactory.create_batch(3)
        self.assertRowCount(Author, 3)

    def test_b_gone(self) -> None:
        """...and gone in the next test."""
        self.assertRowCount(Author, 0)
        self.AuthorFactory()
        self.assertRowCount(Author, 1)


class QueryAssertions(dbtestcase.DatabaseTestCase):
    @classmethod
    def setUpTestData(cls) -> None:
        for n in range(3):
            cls.session.add(Author(name=f"a{n}", books=[Book(title=f"b{n}")]))

    def test_num_queries_catches_n_plus_one(self) -> None:
        """Lazy loading runs 1 + N queries; selectinload runs 2."""
        self.session.expire_all()
        with self.assertRaises(AssertionError) as caught:
            with self.assertNumQueries(2):
                for author in self.session.scalars(sa.select(Author)):
                    _ = author.books
        self.assertIn("4 queries were run, 2 expected:\n1. SELECT", str(caught.exception))
        self.session.expire_all()
        with self.assertNumQueries(2):
            for author in self.session.scalars(sa.select(Author).options(selectinload(Author.books))):
                _ = author.books

    def test_capture_leaves_out_transaction_control(self) -> None:
        """captureQueries lists the statements in order, without SAVEPOINT/RELEASE."""
        with self.captureQueries() as queries:
            self.session.add(Author(name="new"))
            self.session.commit()
            self.session.scalar(sa.select(sa.func.count()).select_from(Author))
        self.assertEqual([q.split()[0] for q in queries], ["INSERT", "SELECT"])

    def test_row_count(self) -> None:
        """assertRowCount counts rows (pending ones flushed) and names the model when wrong."""
        self.assertRowCount(Author, 3)
        self.session.add(Author(name="pending"))
        self.assertRowCount(Author.__table__, 4)
        with self.assertRaisesRegex(AssertionError, "Author holds 4 rows, 9 expected"):
            self.assertRowCount(Author, 9)
