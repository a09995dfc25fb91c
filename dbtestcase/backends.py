"""What differs between PostgreSQL, MySQL/MariaDB and SQLite, in one place.

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

import importlib
import os
import re
import sqlite3
from typing import Any, Literal

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine

from .exceptions import ConfigurationError, DestructiveActionError, ImplicitCommitError
from .urls import mask

Strategy = Literal["auto", "savepoint", "reset"]
STRATEGIES = ("auto", "savepoint", "reset")

#: Set to 1 to let the reset strategy and drop_all work on a database whose name lacks "test".
ALLOW_DESTRUCTIVE_ENV = "DBTESTCASE_ALLOW_DESTRUCTIVE"

_TRANSACTIONAL_DDL = ("postgresql", "sqlite")
_MYSQL = ("mysql", "mariadb")

# Statements that make MySQL/MariaDB commit the open transaction at once (temporary tables aside).
_IMPLICIT_COMMIT = re.compile(
    r"^\s*(?:(?:CREATE|ALTER|DROP)\s+(?!TEMPORARY\b)|TRUNCATE\b|RENAME\s+(?:TABLE|USER)\b|LOCK\s+TABLES?\b|"
    r"UNLOCK\s+TABLES?\b|GRANT\b|REVOKE\b|BEGIN\b|START\s+TRANSACTION\b|SET\s+(?:SESSION\s+|@@)?autocommit\b|"
    r"SET\s+PASSWORD\b|ANALYZE\b|OPTIMIZE\b|REPAIR\b|CHECK\s+TABLE\b|FLUSH\b|CACHE\s+INDEX\b|"
    r"LOAD\s+INDEX\b|RESET\b|INSTALL\b|UNINSTALL\b|XA\b)",
    re.IGNORECASE,
)

def is_mysql(name: str) -> bool:
    """Whether a dialect name is MySQL or MariaDB."""
    return name in _MYSQL


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


class _Owned:
    """Mixed into a DBAPI connection class: ``commit()`` and ``rollback()`` do nothing once ``owned``.

    dbtestcase then begins and ends the outer transaction itself, with SQL, as it does on psycopg2
    in autocommit mode, so no test can end it through ``TestDatabase.connection``.
    """

    owned = False

    def commit(self) -> None:
        if not self.owned:
            super().commit()  # type: ignore[misc]

    def rollback(self) -> None:
        if not self.owned:
            super().rollback()  # type: ignore[misc]


# Drivers whose connection class can be subclassed: (module, class name).
_OWNABLE = {"pysqlite": ("sqlite3", "Connection"), "pymysql": ("pymysql.connections", "Connection"),
            "mysqldb": ("MySQLdb.connections", "Connection")}
_owned_classes: dict[str, type] = {}


def _owned_class(driver: str) -> type | None:
    if driver not in _OWNABLE:
        return None
    if driver not in _owned_classes:
        module_name, class_name = _OWNABLE[driver]
        base = getattr(importlib.import_module(module_name), class_name)
        _owned_classes[driver] = type(f"Owned{base.__name__}", (_Owned, base), {"__module__": __name__})
    return _owned_classes[driver]


def prepare_engine(engine: Engine) -> None:
    """Make the engine fit for tests in savepoints.

    The connections are made from a subclass of the driver's connection class whose commit()
    and rollback() can be switched off (pysqlite, PyMySQL, mysqlclient; psycopg2 needs none: it
    ignores them in autocommit mode), through SQLAlchemy's documented ``do_connect`` event.
    SQLite: pysqlite begins and commits on its own and mishandles SAVEPOINT; SQLAlchemy's
    documented workaround hands transaction control back (``isolation_level = None`` and an
    explicit ``BEGIN``). Foreign keys are switched on, as a production database enforces them.
    """
    driver = engine.dialect.driver
    owned = _owned_class(driver)
    if owned is not None:

        @event.listens_for(engine, "do_connect")
        def _connect_owned(dialect: Any, record: Any, cargs: tuple[Any, ...], cparams: dict[str, Any]) -> Any:
            if driver == "pysqlite":
                if "factory" in cparams:
                    return None  # the user's own connection class: leave it alone
                return sqlite3.connect(*cargs, factory=owned, **cparams)
            return owned(*cargs, **cparams)

    if engine.dialect.name != "sqlite" or driver != "pysqlite":
        return

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        if not getattr(connection.connection.dbapi_connection, "owned", False):
            connection.exec_driver_sql("BEGIN")


# Drivers whose commit() and rollback() send nothing in DBAPI autocommit mode, whatever the server holds.
_AUTOCOMMIT_IGNORES_COMMIT = ("psycopg2", "asyncpg")


def own_transaction(connection: Connection) -> bool:
    """Take the outer transaction out of SQLAlchemy's and the driver's hands, where that is possible.

    psycopg2 and SQLAlchemy's asyncpg adapter in autocommit mode, and the owned connection classes
    of :func:`prepare_engine`, ignore ``commit()`` and ``rollback()``; dbtestcase then sends BEGIN
    and ROLLBACK itself. Returns False for other drivers (psycopg 3 commits whatever the server
    holds open), whose outer transaction stays SQLAlchemy's.
    """
    dbapi_connection = connection.connection.dbapi_connection
    if connection.dialect.driver in _AUTOCOMMIT_IGNORES_COMMIT:
        connection.execution_options(isolation_level="AUTOCOMMIT")
    elif isinstance(dbapi_connection, _Owned):
        dbapi_connection.owned = True
    else:
        return False
    connection.exec_driver_sql("BEGIN")
    return True


def release_transaction(connection: Connection) -> None:
    """Undo :func:`own_transaction` before the connection goes back to the pool."""
    dbapi_connection = connection.connection.dbapi_connection
    if isinstance(dbapi_connection, _Owned):
        dbapi_connection.owned = False


def guard_implicit_commits(connection: Connection) -> None:
    """On MySQL/MariaDB, refuse statements inside tests that would commit the outer transaction."""
    if not is_mysql(connection.dialect.name):
        return

    @event.listens_for(connection, "before_cursor_execute", retval=True)
    def _check(conn: Connection, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> Any:
        if _IMPLICIT_COMMIT.match(statement):
            head = " ".join(statement.split())[:60]
            raise ImplicitCommitError(
                f"the statement {head!r} would make {conn.dialect.name} commit the test's transaction at once "
                "(DDL and transaction control commit implicitly there), so its rows would leak into every "
                "later test: create the schema through the metadata before the tests, use a TEMPORARY "
                "table, or use self.session (its commit() stays inside the test's savepoint)."
            )
        return statement, parameters


def is_test_database(url: URL) -> bool:
    """SQLite in memory, or a database (SQLite: a file) whose name contains "test".

    The throwaway servers' URLs name a database ``test``.
    """
    database = url.database or ""
    if url.get_backend_name() == "sqlite":
        if database in ("", ":memory:") or database.startswith("file::memory:"):
            return True
        database = os.path.basename(database)
    return "test" in database.lower()


def check_destructive(url: URL, what: str, allow: bool) -> None:
    """Refuse ``what`` (which destroys tables) on a database that is not evidently a test database.

    Raises:
        DestructiveActionError: the database name lacks "test" and no opt-in was given.
    """
    if allow or os.environ.get(ALLOW_DESTRUCTIVE_ENV, "").strip() == "1" or is_test_database(url):
        return
    raise DestructiveActionError(
        f"{what} drops tables, and the database {url.database!r} ({mask(url)}) does not look like a test "
        f"database (its name lacks 'test'): point the URL at a test database, or opt in with "
        f"allow_destructive=True or {ALLOW_DESTRUCTIVE_ENV}=1."
    )


def sqlstate(exc: BaseException) -> str:
    """The SQLSTATE of a DBAPIError from any PostgreSQL driver (psycopg2 and asyncpg: ``pgcode``;
    psycopg 3: ``sqlstate``), or ""."""
    orig = getattr(exc, "orig", None)
    return str(getattr(orig, "pgcode", None) or getattr(orig, "sqlstate", None) or "")
