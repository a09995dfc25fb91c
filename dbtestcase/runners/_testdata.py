"""setUpTestData: rows made once per class, and its ORM objects loaded afresh in each test's session."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from sqlalchemy import inspect
from sqlalchemy.orm import Session

if TYPE_CHECKING:
    from ..core import TestDatabase
    from ._case import DatabaseTestCase


def run_test_data(cls: type[DatabaseTestCase], database: TestDatabase) -> None:
    """Run setUpTestData with ``cls.session``, commit it, and make its ORM objects per-test."""
    before = set(cls.__dict__)
    made_before = {name for name, value in cls.__dict__.items() if isinstance(value, _TestData)}  # a second run
    session = Session(bind=database.connection, join_transaction_mode="create_savepoint", expire_on_commit=False)
    cls.session = session  # type: ignore[assignment]
    try:
        cls.setUpTestData()
        session.commit()
    finally:
        session.close()
        del cls.session
    for name in (set(cls.__dict__) - before) | made_before:
        value = cls.__dict__[name]
        if _holds_orm_objects(value):
            setattr(cls, name, _TestData(name, value))


class _TestData:
    """A setUpTestData attribute: each test gets its ORM objects reloaded in its own session."""

    def __init__(self, name: str, value: Any) -> None:
        self.name, self.value = name, value

    def __get__(self, test: DatabaseTestCase | None, owner: type) -> Any:
        if test is None:
            return self.value
        fresh = _reload(self.value, test.session)
        test.__dict__[self.name] = fresh  # later reads in this test skip the descriptor
        return fresh


def _is_orm_object(value: Any) -> bool:
    state = inspect(value, raiseerr=False)
    return state is not None and getattr(state, "mapper", None) is not None and getattr(state, "identity", None) is not None


def _holds_orm_objects(value: Any) -> bool:
    if _is_orm_object(value):
        return True
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(_holds_orm_objects(item) for item in value)
    if isinstance(value, dict):
        return any(_holds_orm_objects(item) for item in value.values())
    return False


def _reload(value: Any, session: Session) -> Any:
    """``value`` with every ORM object replaced by the same row loaded in ``session``."""
    if _is_orm_object(value):
        state = inspect(value)
        return session.get(state.mapper.class_, state.identity)
    if isinstance(value, (list, tuple, set, frozenset)):
        return type(value)(_reload(item, session) for item in value)
    if isinstance(value, dict):
        return {key: _reload(item, session) for key, item in value.items()}
    try:
        return copy.deepcopy(value)
    except Exception:  # noqa: BLE001 - an object that cannot be copied is shared as it is
        return value
