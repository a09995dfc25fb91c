"""bind_sessions: the application's own scoped_session and sessionmaker run inside the test."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session, scoped_session, sessionmaker

import dbtestcase
from tests.functional.models import Author, Base

# "The application": a global scoped_session and a sessionmaker, bound at import to an engine of
# its own (an empty in-memory SQLite here, where no table exists: a test that used it would fail).
app_engine = sa.create_engine("sqlite://")
AppSession = scoped_session(sessionmaker(bind=app_engine))
make_session = sessionmaker(bind=app_engine, expire_on_commit=False)


def register(name: str) -> None:
    """Application code: uses the global session, commits and removes it, as web apps do."""
    AppSession.add(Author(name=name))
    AppSession.commit()
    AppSession.remove()


def register_with_maker(name: str) -> None:
    with make_session() as session, session.begin():
        session.add(Author(name=name))


def setUpModule() -> None:
    dbtestcase.setup_module(Base.metadata)


def tearDownModule() -> None:
    dbtestcase.teardown_module()


class BoundSessions(dbtestcase.DatabaseTestCase):
    bind_sessions = [AppSession, make_session]

    def test_a_scoped_session(self) -> None:
        """What the app commits through its scoped_session is visible to the test..."""
        register("ann")
        self.assertRowCount(Author, 1)
        self.assertIs(AppSession.session_factory.kw["bind"], self.connection)

    def test_b_sessionmaker(self) -> None:
        """...and gone in the next test; a plain sessionmaker is bound too."""
        self.assertRowCount(Author, 0)
        register_with_maker("bob")
        register("ann")
        self.assertRowCount(Author, 2)

    def test_c_rollback_in_app(self) -> None:
        """An app-side rollback undoes only the app's own uncommitted work."""
        register("kept")
        AppSession.add(Author(name="undone"))
        AppSession.flush()
        AppSession.rollback()
        self.assertEqual(self.session.scalars(sa.select(Author.name)).all(), ["kept"])


class Restored(dbtestcase.DatabaseTestCase):
    def test_factories_restored(self) -> None:
        """After a bound class's tests, the factories are the application's again."""
        self.assertIs(AppSession.session_factory.kw["bind"], app_engine)
        self.assertNotIn("join_transaction_mode", AppSession.session_factory.kw)
        self.assertIs(make_session.kw["bind"], app_engine)
        self.assertFalse(make_session.kw["expire_on_commit"], "the app's own options are kept")
        self.assertFalse(AppSession.registry.has(), "the test's sessions were removed")


class BadBinding(dbtestcase.DatabaseTestCase):
    def test_not_a_session_factory(self) -> None:
        """Anything else is refused when the class is defined, naming what was passed."""
        with self.assertRaisesRegex(
            dbtestcase.ConfigurationError,
            r"^Bad.bind_sessions must list scoped_session or sessionmaker objects "
            r"\(got Engine\(sqlite://\) that is a <class .sqlalchemy.engine.base.Engine.>\)",
        ):
            type("Bad", (dbtestcase.DatabaseTestCase,), {"bind_sessions": [app_engine]})


class RoutingSession(Session):
    """An application's session that picks its engine itself (a read replica, say)."""

    def get_bind(self, mapper=None, clause=None, bind=None, **kwargs):  # type: ignore[no-untyped-def]
        return app_engine


RoutingMaker = sessionmaker(bind=app_engine, class_=RoutingSession)
Routed = scoped_session(RoutingMaker)


class ListedTwice(dbtestcase.DatabaseTestCase):
    bind_sessions = [Routed, RoutingMaker]  # the scoped_session and its own sessionmaker

    def test_a_routing_session_is_bound(self) -> None:
        """A session class with its own get_bind runs on the test's connection all the same."""
        Routed.add(Author(name="routed"))
        Routed.commit()
        self.assertIs(Routed().get_bind(), self.connection)
        self.assertRowCount(Author, 1)


class RestoredAfterListedTwice(dbtestcase.DatabaseTestCase):
    def test_factory_restored(self) -> None:
        """(runs after ListedTwice) a factory listed twice gets its own class and settings back."""
        self.assertIs(RoutingMaker.kw["bind"], app_engine)
        self.assertNotIn("join_transaction_mode", RoutingMaker.kw)
        self.assertIs(RoutingMaker.class_.get_bind, RoutingSession.get_bind)
        self.assertIs(RoutingMaker().get_bind(), app_engine)
