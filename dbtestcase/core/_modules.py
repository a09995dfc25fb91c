"""The module-level API: setup_module() and teardown_module() around the TestDatabase that test cases use."""

from __future__ import annotations

import types
from typing import Any

from sqlalchemy import MetaData

from .._urls import UrlLike
from ..exceptions import ConfigurationError
from ._database import TestDatabase

_active: list[TestDatabase] = []


def setup_module(metadata: MetaData, url: UrlLike | None = None, **options: Any) -> TestDatabase:
    """Set up a :class:`TestDatabase` and make it the one ``DatabaseTestCase`` classes use.

    Call it from ``setUpModule()`` (or a package's ``__init__``, or ``setUpClass``) and pair it
    with :func:`teardown_module`. Calls nest: the most recent one is active.

    Args:
        metadata: the tables to create (``Base.metadata``).
        url: the database; ``None`` reads ``$DBTESTCASE_URL``, else starts a throwaway PostgreSQL.
        **options: keyword options of :class:`TestDatabase` (``drop_tables``, ``lock_timeout``, ...).

    Returns:
        The active TestDatabase.
    """
    if isinstance(metadata, types.ModuleType):
        raise ConfigurationError(
            f"dbtestcase.setup_module() was called with the module {metadata.__name__!r} instead of a MetaData: pytest "
            "calls any function named setup_module in a test module as that module's setup, so 'from dbtestcase "
            "import setup_module' there makes pytest call it. Write 'import dbtestcase' and call "
            "dbtestcase.setup_module(Base.metadata) from setUpModule() instead."
        )
    database = TestDatabase(metadata, url, **options).setup()
    _active.append(database)
    return database


def teardown_module() -> None:
    """Tear down the database made active by the latest :func:`setup_module`; a no-op if none."""
    if _active:
        _active.pop().teardown()


def active_database() -> TestDatabase | None:
    """The TestDatabase made active by :func:`setup_module`, or ``None``."""
    return _active[-1] if _active else None
