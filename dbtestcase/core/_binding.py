"""bind_sessions: point an application's own scoped_session or sessionmaker at the test's connection."""

from __future__ import annotations

from typing import Any, Optional, Union

from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, scoped_session, sessionmaker

from .._urls import mask, same_database
from ..exceptions import ConfigurationError

Bindable = Union[scoped_session, sessionmaker]  # type: ignore[type-arg]


def check_bindable(owner: str, value: Any) -> list[Bindable]:
    """``value`` as a list of scoped_session/sessionmaker objects, or an error naming what was passed."""
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    for item in items:
        if not isinstance(item, (scoped_session, sessionmaker)):
            raise ConfigurationError(
                f"{owner}.bind_sessions must list scoped_session or sessionmaker objects (got {item!r} that is a "
                f"{type(item)}): pass the application's Session factory, e.g. bind_sessions = [myapp.Session] "
                "or [db.session] with Flask-SQLAlchemy."
            )
    return items


class SessionBinding:
    """For one test: every listed factory makes Sessions on ``connection`` in a savepoint of their own.

    ``join_transaction_mode="create_savepoint"``, as for ``self.session``: code under test that calls
    ``Session.commit()``, ``Session.remove()`` or ``close()`` stays inside the test.

    A Session class that chooses its own bind in ``get_bind()`` (Flask-SQLAlchemy's, or an
    application's routing session) would ignore ``bind``: for the test, the factory makes a subclass
    whose ``get_bind()`` returns the test's connection. With Flask-SQLAlchemy, the first session
    also checks that the app's own engine (``db.engine``) is on the test database.
    """

    def __init__(self, factories: list[Bindable], connection: Connection) -> None:
        self._saved: list[tuple[sessionmaker, dict[str, Any], type[Session]]] = []  # type: ignore[type-arg]
        self._url = connection.engine.url
        self.problem: ConfigurationError | None = None
        for factory in factories:
            maker = factory.session_factory if isinstance(factory, scoped_session) else factory
            _remove(factory)  # a session made before the test would keep its old bind
            if any(saved is maker for saved, _, _ in self._saved):
                continue  # listed twice (a scoped_session and its sessionmaker): bound once, restored once
            self._saved.append((maker, dict(maker.kw), maker.class_))
            maker.kw.update(bind=connection, join_transaction_mode="create_savepoint")
            if maker.class_.get_bind is not Session.get_bind:
                maker.class_ = _on_bind(maker.class_, self, _flask_db(maker))
        self._factories = factories

    def check_flask_database(self, db: Any) -> None:
        """Refuse a Flask-SQLAlchemy app whose SQLALCHEMY_DATABASE_URI is not the test database."""
        if self.problem is not None:
            raise self.problem
        try:
            engine = db.engines.get(None)  # the current app's default engine; needs an app context
        except RuntimeError:
            return
        if engine is None or same_database(engine.url, self._url):
            return
        self.problem = ConfigurationError(
            f"the Flask app's SQLALCHEMY_DATABASE_URI is {mask(engine.url)}, not the test database "
            f"{mask(self._url)}: db.engine and db.create_all() would reach another database. Create the app "
            "with SQLALCHEMY_DATABASE_URI set to the test database's URL "
            "(self.test_database.url.render_as_string(hide_password=False))."
        )
        raise self.problem

    def restore(self) -> None:
        """Close the sessions the test made and give each factory its own settings back.

        Raises:
            ConfigurationError: a Flask app ran on another database during the test (also raised
                then, but a request handler may have swallowed it).
        """
        for factory in self._factories:
            _remove(factory)
        for maker, kw, class_ in self._saved:
            maker.kw.clear()
            maker.kw.update(kw)
            maker.class_ = class_
        if self.problem is not None:
            raise self.problem


def _remove(factory: Bindable) -> None:
    """``factory.remove()`` for a scoped_session whose scope exists now (Flask's: an app context)."""
    if not isinstance(factory, scoped_session):
        return
    try:
        factory.registry.has()
    except RuntimeError:  # Flask-SQLAlchemy outside an app context: no session of this scope
        return
    factory.remove()


def _flask_db(maker: sessionmaker) -> Any:  # type: ignore[type-arg]
    """The Flask-SQLAlchemy extension behind ``maker`` (``db.session``'s factory), else None."""
    if any(cls.__module__.startswith("flask_sqlalchemy") for cls in maker.class_.__mro__):
        return maker.kw.get("db")
    return None


def _on_bind(class_: type[Session], binding: SessionBinding, db: Any) -> type[Session]:
    """A subclass of ``class_`` whose sessions run on the ``bind`` they were given (the test's connection)."""

    def __init__(self: Session, *args: Any, **kwargs: Any) -> None:
        class_.__init__(self, *args, **kwargs)
        if db is not None:
            binding.check_flask_database(db)

    def get_bind(self: Session, mapper: Any = None, clause: Any = None, bind: Optional[Any] = None, **kw: Any) -> Any:
        return bind if bind is not None else self.bind

    return type(class_.__name__, (class_,), {"__init__": __init__, "get_bind": get_bind, "__module__": class_.__module__})

