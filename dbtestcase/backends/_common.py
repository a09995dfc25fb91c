"""What decides how a database is treated: the strategy of its dialect, the destructive guard, SQLSTATEs.

=================  ===========  ==============================================================
backend            strategy     why
=================  ===========  ==============================================================
PostgreSQL         savepoint    transactional DDL: the tables are created inside the outer
                                transaction and vanish with it
SQLite             savepoint    transactional DDL too, once pysqlite's own transaction
                                handling is switched off (SQLAlchemy's documented workaround)
MySQL, MariaDB     reset        every CREATE/DROP commits at once: the schema is reset
                                (reflect, drop foreign keys, drop, create) and committed, then
                                tests run in savepoints as elsewhere
anything else      reset        the universal method assumes nothing about DDL
=================  ===========  ==============================================================
"""

from __future__ import annotations

import os
import re
from typing import Literal

from sqlalchemy.engine import URL, Connection, Engine

from .._urls import mask
from ..exceptions import ConfigurationError, DestructiveActionError
from ._mysql import is_mysql

Strategy = Literal["auto", "savepoint", "reset"]
STRATEGIES = ("auto", "savepoint", "reset")

#: Set to 1 to let the reset strategy and drop_all work on a database whose name lacks the word "test".
ALLOW_DESTRUCTIVE_ENV = "DBTESTCASE_ALLOW_DESTRUCTIVE"

_TRANSACTIONAL_DDL = ("postgresql", "sqlite")

# SQLSTATE 55P03 lock_not_available: lock_timeout expired.
LOCK_NOT_AVAILABLE = "55P03"

def check_strategy(strategy: object) -> None:
    """Refuse a strategy that does not exist, naming the choices.

    Raises:
        ConfigurationError: ``strategy`` is not one of :data:`STRATEGIES`.
    """
    if strategy not in STRATEGIES:
        raise ConfigurationError(f"strategy must be one of {', '.join(map(repr, STRATEGIES))} (got {strategy!r}).")


def resolve_strategy(strategy: str, engine: Engine) -> str:
    """The strategy to use on ``engine``: ``"auto"`` picks it from the dialect (see the table above).

    Raises:
        ConfigurationError: an unknown strategy, or "savepoint" where DDL commits on its own.
    """
    check_strategy(strategy)
    name = engine.dialect.name
    if strategy == "auto":
        return "savepoint" if name in _TRANSACTIONAL_DDL else "reset"
    if strategy == "savepoint" and name not in _TRANSACTIONAL_DDL:
        raise ConfigurationError(
            f"strategy='savepoint' needs transactional DDL, which {name} lacks (CREATE TABLE would commit "
            "and the tables would outlive the run): use strategy='reset' or leave strategy='auto'."
        )
    return strategy


#: The words that mark a database name as a test database's: ``test``, ``shop_test``, ``tests-2``, ``TestShop``.
TEST_WORDS = ("test", "tests", "testing", "testdb")
# The words of a name: runs of letters split at case changes (``TestShop``), digits and punctuation.
_WORDS = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])")


def is_test_database(url: URL) -> bool:
    """SQLite in memory, or a database (SQLite: a file) with one of :data:`TEST_WORDS` as a word of its name.

    A word, not a substring: ``contest``, ``latest`` and ``protest_prod`` are not test databases. The
    throwaway servers' URLs name a database ``test``.
    """
    database = url.database or ""
    if url.get_backend_name() == "sqlite":
        if database in ("", ":memory:") or database.startswith("file::memory:"):
            return True
        database = os.path.basename(database)
    return any(word.lower() in TEST_WORDS for word in _WORDS.findall(database))


def check_destructive(url: URL, what: str, allow: bool) -> None:
    """Refuse ``what`` (which destroys tables) on a database that is not evidently a test database.

    Raises:
        DestructiveActionError: no word of the database's name is "test" and no opt-in was given.
    """
    if allow or os.environ.get(ALLOW_DESTRUCTIVE_ENV, "").strip() == "1" or is_test_database(url):
        return
    raise DestructiveActionError(
        f"{what} drops tables, and the database {url.database!r} ({mask(url)}) does not look like a test "
        f"database (no word of its name is test, tests, testing or testdb): point the URL at a test database, "
        f"or opt in with "
        f"allow_destructive=True or {ALLOW_DESTRUCTIVE_ENV}=1."
    )


def sqlstate(exc: BaseException) -> str:
    """The SQLSTATE of a DBAPIError from any PostgreSQL driver (psycopg2 and asyncpg: ``pgcode``;
    psycopg 3: ``sqlstate``), or ""."""
    orig = getattr(exc, "orig", None)
    return str(getattr(orig, "pgcode", None) or getattr(orig, "sqlstate", None) or "")


def limit_lock_wait(connection: Connection, lock_timeout: float) -> None:
    """Make DDL in the current transaction give up on a lock after ``lock_timeout`` seconds.

    PostgreSQL: ``SET LOCAL lock_timeout`` (undone with the transaction). MySQL/MariaDB: the
    session's ``lock_wait_timeout`` for metadata locks, a day by default. Others: nothing.
    """
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SET LOCAL lock_timeout = {max(1, int(lock_timeout * 1000))}")
    elif is_mysql(connection.dialect.name):
        connection.exec_driver_sql(f"SET SESSION lock_wait_timeout = {max(1, round(lock_timeout))}")
