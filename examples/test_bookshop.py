"""Example suite: the bookshop's services tested against a real PostgreSQL with dbtestcase.

Run it with any of::

    python -m unittest -v test_bookshop
    nose2 -v --plugin dbtestcase.nose2plugin test_bookshop
    python -m pytest -q test_bookshop.py
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

import dbtestcase
from bookshop.models import Author, Base, Book
from bookshop.services import add_book, rename_author, titles_by


def setUpModule() -> None:
    # Creates the tables once for the module, inside a transaction that is never committed.
    # The URL comes from $DBTESTCASE_URL (or nose2's --db-url); without one, dbtestcase
    # starts a throwaway PostgreSQL server.
    dbtestcase.setup_module(Base.metadata)


def tearDownModule() -> None:
    # Rolls that transaction back: the tables and every row are gone.
    dbtestcase.teardown_module()


class AddBookTests(dbtestcase.DatabaseTestCase):
    """self.session is an ordinary Session; everything a test does is rolled back after it."""

    def test_add_book_creates_author(self) -> None:
        """add_book() commits a new author together with the book."""
        book = add_book(self.session, "Dune", "Frank Herbert")
        self.assertEqual(book.author.name, "Frank Herbert")
        self.assertEqual(self.session.scalar(select(func.count()).select_from(Author)), 1)

    def test_add_book_reuses_author(self) -> None:
        """A second book by the same author does not create a second author."""
        add_book(self.session, "Dune", "Frank Herbert")
        add_book(self.session, "Dune Messiah", "Frank Herbert")
        self.assertEqual(titles_by(self.session, "Frank Herbert"), ["Dune", "Dune Messiah"])
        self.assertEqual(self.session.scalar(select(func.count()).select_from(Author)), 1)

    def test_starts_empty(self) -> None:
        """Whatever the other tests committed, this one sees empty tables."""
        self.assertEqual(self.session.scalar(select(func.count()).select_from(Book)), 0)
        self.assertEqual(self.session.scalar(select(func.count()).select_from(Author)), 0)

    def test_duplicate_author_is_rejected(self) -> None:
        """The unique constraint is real; after rollback() the session is usable again."""
        self.session.add(Author(name="Ursula K. Le Guin"))
        self.session.commit()
        self.session.add(Author(name="Ursula K. Le Guin"))
        with self.assertRaises(IntegrityError):
            self.session.commit()
        self.session.rollback()
        self.assertEqual(self.session.scalar(select(func.count()).select_from(Author)), 1)


class SharedDataTests(dbtestcase.DatabaseTestCase):
    """setUpTestData runs once per class; each test gets its own fresh copy of the rows."""

    @classmethod
    def setUpTestData(cls) -> None:
        cls.author = Author(name="Terry Pratchett")
        cls.session.add_all([Book(title="Mort", author=cls.author), Book(title="Guards! Guards!", author=cls.author)])

    def test_shared_rows_are_there(self) -> None:
        """The rows made in setUpTestData are visible to every test of the class."""
        self.assertEqual(titles_by(self.session, "Terry Pratchett"), ["Guards! Guards!", "Mort"])

    def test_rename_is_undone_after_the_test(self) -> None:
        """A test may change the shared rows: the next test sees them unchanged."""
        rename_author(self.session, "Terry Pratchett", "Sir Terry Pratchett")
        self.assertEqual(self.author.name, "Sir Terry Pratchett")
        self.assertEqual(titles_by(self.session, "Terry Pratchett"), [])

    def test_shared_author_is_unchanged(self) -> None:
        """self.author is loaded in this test's session, as setUpTestData made it."""
        self.assertEqual(self.author.name, "Terry Pratchett")
        self.assertEqual([book.title for book in self.author.books], ["Guards! Guards!", "Mort"])


class SequenceTests(dbtestcase.DatabaseTestCase):
    """reset_sequences = True: generated ids start at 1 in every test."""

    reset_sequences = True

    def test_first_id_is_one(self) -> None:
        """The first author of the test gets id 1."""
        book = add_book(self.session, "Kindred", "Octavia E. Butler")
        self.assertEqual((book.author.id, book.id), (1, 1))

    def test_first_id_is_one_again(self) -> None:
        """Ids start at 1 again in the next test, although ROLLBACK does not rewind sequences."""
        first = add_book(self.session, "Solaris", "Stanislaw Lem")
        second = add_book(self.session, "Kindred", "Octavia E. Butler")
        self.assertEqual([first.author.id, second.author.id], [1, 2])
