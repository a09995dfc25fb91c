"""Testing application code that owns its session, with factories and query assertions.

- ``bind_sessions = [web.Session]``: the app's global scoped_session runs on the test's connection and
  savepoint, so what the app commits is visible in the test and gone after it;
- ``dbtestcase.current_session`` as factory_boy's session factory (if factory_boy is installed);
- ``assertNumQueries`` catches N+1 queries, ``assertRowCount`` counts rows.
"""

from __future__ import annotations

import unittest

from bookshop import web
from bookshop.models import Author, Base, Book

import dbtestcase

try:
    import factory
except ImportError:
    factory = None


def setUpModule():
    dbtestcase.setup_module(Base.metadata)


def tearDownModule():
    dbtestcase.teardown_module()


class PublishTests(dbtestcase.DatabaseTestCase):
    bind_sessions = [web.Session]

    def test_publish_commits(self):
        """What the app commits through its own session is visible to the test."""
        web.publish("Dune", "Frank Herbert")
        self.assertRowCount(Book, 1)
        self.assertRowCount(Author, 1)

    def test_blank_slate(self):
        """...and gone in the next test."""
        self.assertRowCount(Book, 0)

    def test_catalogue_has_no_n_plus_one(self):
        """The catalogue takes two queries for any number of authors."""
        for n in range(5):
            web.publish(f"Book {n}", f"Author {n}")
        with self.assertNumQueries(2):
            catalogue = web.catalogue()
        self.assertEqual(len(catalogue), 5)


@unittest.skipIf(factory is None, "pip install factory_boy to run the factory example")
class FactoryTests(dbtestcase.DatabaseTestCase):
    def test_factories_commit_inside_the_test(self):
        """A factory that commits through current_session() stays inside the test."""

        class AuthorFactory(factory.alchemy.SQLAlchemyModelFactory):
            class Meta:
                model = Author
                sqlalchemy_session_factory = dbtestcase.current_session
                sqlalchemy_session_persistence = "commit"

            name = factory.Sequence(lambda n: f"author {n}")

        AuthorFactory.create_batch(3)
        self.assertRowCount(Author, 3)
