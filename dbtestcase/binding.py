"""bind_sessions: point an application's own scoped_session or sessionmaker at the test's connection."""

from __future__ import annotations

from typing import Any, Union

from sqlalchemy.engine import Connection
from sqlalchemy.orm import scoped_session, sessionmaker

from .exceptions import ConfigurationError

Bindable = Union[scoped_session, sessionmaker]  # type: ignore[type-arg]


def check_bindable(owner: str, value: Any) -> list[Bindable]:
    """``value`` as a list of scoped_session/sessionmaker objects, or an error naming what was passed."""
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    for item in items:
        if not isinstance(item, (scoped_session, sessionmaker)):
            raise ConfigurationError(
                f"{owner}.bind_sessions must list scoped_session or sessionmaker objects (got {item!r} that is a "
                f"{type(item)}): pass the application's Session factory, e.g. bind_sessions = [myapp.Session]."
            )
    return items


class SessionBinding:
    """For one test: every listed factory makes Sessions on ``connection`` in a savepoint of their own.

    ``join_transaction_mode="create_savepoint"``, as for ``self.session``: code under test that calls
    ``Session.commit()``, ``Session.remove()`` or ``close()`` stays inside the test.
    """

    def __init__(self, factories: list[Bindable], connection: Connection) -> None:
        self._saved: list[tuple[sessionmaker, dict[str, Any]]] = []  # type: ignore[type-arg]
        for factory in factories:
            maker = factory.session_factory if isinstance(factory, scoped_session) else factory
            if isinstance(factory, scoped_session):
                factory.remove()  # a session made before the test would keep its old bind
            self._saved.append((maker, dict(maker.kw)))
            maker.kw.update(bind=connection, join_transaction_mode="create_savepoint")
        self._factories = factories

    def restore(self) -> None:
        """Close the sessions the test made and give each factory its own settings back."""
        for factory in self._factories:
            if isinstance(factory, scoped_session):
                factory.remove()
        for maker, kw in self._saved:
            maker.kw.clear()
            maker.kw.update(kw)
