"""What both test case classes (unittest and async) do per class: check the attributes, find the database."""

from __future__ import annotations

import sys
from typing import Any

from sqlalchemy import MetaData

from ..core import SavepointStack, SequenceBaseline, TestDatabase, active_database, check_bindable
from ..exceptions import ConfigurationError, NoDatabaseError

__unittest = True  # failure tracebacks start in the user's code


class ClassState:
    """What one test class holds: its database and, with setUpTestData, its own savepoint."""

    __slots__ = ("closed", "database", "level", "owned", "sequences", "stack")

    def __init__(self, database: TestDatabase, owned: bool) -> None:
        self.database = database
        self.owned = owned  # set up by the class, so torn down by it
        self.level: str | None = None
        self.sequences: SequenceBaseline | None = None
        self.stack: SavepointStack | None = None  # the database's savepoints when the class data was made
        self.closed = False


def own_class_cleanups(cls: Any) -> None:
    """Give ``cls`` a list of class cleanups of its own, as Python 3.10+ does.

    Python 3.9's TestCase keeps one list for every class, so a class that runs while another one's class
    runs (a suite run inside a test) would also run that other class's cleanups: its database teardown.
    """
    if sys.version_info < (3, 10) and "_class_cleanups" not in cls.__dict__:
        cls._class_cleanups = []


def check_class(cls: type) -> None:
    """Validate the class attributes when the class is defined, naming class and attribute."""
    name = cls.__qualname__
    database = cls.__dict__.get("database")
    if database is not None and not isinstance(database, TestDatabase):
        raise ConfigurationError(
            f"{name}.database must be a dbtestcase.TestDatabase (got {database!r} that is a {type(database)})."
        )
    metadata = cls.__dict__.get("metadata")
    if metadata is not None and not isinstance(metadata, MetaData):
        raise ConfigurationError(
            f"{name}.metadata must be a sqlalchemy.MetaData such as Base.metadata "
            f"(got {metadata!r} that is a {type(metadata)})."
        )
    if "bind_sessions" in cls.__dict__:
        cls.bind_sessions = check_bindable(name, cls.__dict__["bind_sessions"])  # type: ignore[attr-defined]
    for flag in ("reset_sequences",):
        value = cls.__dict__.get(flag, False)
        if not isinstance(value, bool):
            raise ConfigurationError(f"{name}.{flag} must be True or False (got {value!r}).")


def resolve_database(cls: Any, default_url: str | None = None) -> tuple[TestDatabase, bool]:
    """The class's database and whether the class set it up (and so tears it down)."""
    if cls.database is not None:
        if cls.database.is_set_up:
            return cls.database, False
        return cls.database.setup(), True
    database = active_database()
    if database is not None:
        return database, False
    if cls.metadata is not None:
        return TestDatabase(cls.metadata, cls.database_url or default_url).setup(), True
    name = cls.__qualname__
    raise NoDatabaseError(
        f"{name} has no database to run on: call dbtestcase.setup_module(Base.metadata) in "
        f"setUpModule(), or set metadata = Base.metadata (or database = "
        f"dbtestcase.TestDatabase(Base.metadata)) on {name}."
    )
