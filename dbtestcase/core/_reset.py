"""Destroying tables safely: drop_all that never hangs on PostgreSQL's locks (and names the
blocker when it must stop), and the universal reset for databases without transactional DDL."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Union

from sqlalchemy import MetaData, Table, inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import close_all_sessions
from sqlalchemy.schema import DropConstraint, DropTable

from ..backends import LOCK_NOT_AVAILABLE, check_destructive, limit_lock_wait, sqlstate
from ..exceptions import ConfigurationError, LockTimeoutError
from . import _engine

log = logging.getLogger(__name__)

Bind = Union[Engine, Connection]

_BLOCKERS = text(
    """
    SELECT DISTINCT a.pid, a.application_name, a.usename, a.state, left(a.query, 200) AS query,
           l.relation::regclass::text AS locked
    FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.granted AND l.pid <> pg_backend_pid()
      AND l.relation IN (SELECT to_regclass(name) FROM unnest(CAST(:names AS text[])) AS name)
    ORDER BY a.pid
    """
)


def drop_all(
    bind: Bind,
    metadata: MetaData,
    *,
    lock_timeout: float = 10.0,
    tables: Sequence[Table] | None = None,
    allow_destructive: bool = False,
) -> None:
    """Drop the tables of ``metadata`` without ever waiting forever for a lock.

    First every open ORM Session of the process is closed (``close_all_sessions``) and, when
    ``bind`` is an Engine, its pooled connections are returned and closed, since a forgotten
    session "idle in transaction" is the usual holder of the lock. Then the tables are dropped
    with PostgreSQL's ``lock_timeout`` set, in one transaction that is committed.

    Args:
        bind: an Engine, or a Connection (inside a transaction: the drop joins it through a
            savepoint and the caller commits).
        metadata: the tables to drop; tables that do not exist are skipped.
        lock_timeout: seconds to wait for each table lock (PostgreSQL's ``lock_timeout``;
            MySQL/MariaDB's ``lock_wait_timeout``).
        tables: only these tables of ``metadata`` (as in ``MetaData.drop_all``).
        allow_destructive: drop even where the database's name lacks "test" (also
            ``DBTESTCASE_ALLOW_DESTRUCTIVE=1``); throwaway servers never need it.

    Raises:
        LockTimeoutError: a lock was still held after ``lock_timeout``; the message names each
            blocking backend (pid, application_name, user, state, start of its query).
        ConfigurationError: ``metadata`` is not a MetaData or ``lock_timeout`` is not > 0.
        DestructiveActionError: the database is not evidently a test database.

    .. versionadded:: 0.1
    .. versionchanged:: 0.2
       ``allow_destructive``, and the guard it opts out of.
    """
    check_arguments(metadata, lock_timeout)
    check_destructive(bind.engine.url, "drop_all", allow_destructive)
    close_all_sessions()
    if isinstance(bind, Engine):
        bind.dispose()
        with _engine.connect(bind) as connection, connection.begin():
            drop_tables(connection, metadata, lock_timeout, tables)
        return
    if bind.in_transaction():
        with bind.begin_nested():
            drop_tables(bind, metadata, lock_timeout, tables)
    else:
        with bind.begin():
            drop_tables(bind, metadata, lock_timeout, tables)


def check_arguments(metadata: object, lock_timeout: object) -> None:
    """Refuse a ``metadata`` that is not a MetaData, or a ``lock_timeout`` that is not seconds > 0.

    Raises:
        ConfigurationError: naming what was got.
    """
    if not isinstance(metadata, MetaData):
        raise ConfigurationError(
            f"metadata must be a sqlalchemy.MetaData such as Base.metadata (got {metadata!r} that is a {type(metadata)})."
        )
    if not isinstance(lock_timeout, (int, float)) or lock_timeout <= 0:
        raise ConfigurationError(f"lock_timeout must be a number of seconds > 0 (got {lock_timeout!r}).")


def existing_tables(connection: Connection, metadata: MetaData) -> list[Table]:
    """The tables of ``metadata`` that exist in the database now."""
    inspector = inspect(connection)
    return [table for table in metadata.sorted_tables if inspector.has_table(table.name, schema=table.schema)]


def drop_tables(connection: Connection, metadata: MetaData, lock_timeout: float, tables: Sequence[Table] | None) -> None:
    """Drop inside the connection's current transaction with ``lock_timeout``; no sessions are closed."""
    if connection.dialect.name != "postgresql":
        limit_lock_wait(connection, lock_timeout)
        metadata.drop_all(connection, tables=tables)
        return
    previous = connection.exec_driver_sql("SHOW lock_timeout").scalar()
    limit_lock_wait(connection, lock_timeout)
    blocked = connection.begin_nested()  # so the blockers can be queried after a timeout
    try:
        metadata.drop_all(connection, tables=tables)
    except DBAPIError as exc:
        blocked.rollback()
        if sqlstate(exc) != LOCK_NOT_AVAILABLE:
            raise
        raise LockTimeoutError(_describe_blockers(connection, metadata, lock_timeout)) from exc
    blocked.commit()
    connection.exec_driver_sql(f"SET LOCAL lock_timeout = '{previous}'")
    log.info("dropped %d tables", len(tables if tables is not None else metadata.tables))


def open_transactions(connection: Connection) -> str:
    """The other backends with an open transaction in this database, for error messages."""
    rows = connection.exec_driver_sql(
        "SELECT pid, application_name, usename, state, left(query, 200) AS query FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid() AND xact_start IS NOT NULL "
        "ORDER BY xact_start"
    ).all()
    return "; ".join(_backend(row) for row in rows) or "none is left now"


def _backend(row: Any) -> str:
    query = " ".join((row.query or "").split())[:80]  # one line, however the SQL was laid out
    return (
        f"pid {row.pid} (application_name {row.application_name!r}, user {row.usename!r}, "
        f"state {row.state!r}, query {query!r})"
    )


def _describe_blockers(connection: Connection, metadata: MetaData, lock_timeout: float) -> str:
    """One sentence naming each backend that holds a lock on one of the tables."""
    preparer = connection.dialect.identifier_preparer
    names = [preparer.format_table(table) for table in metadata.sorted_tables]
    rows = connection.execute(_BLOCKERS, {"names": names}).all()
    head = f"drop_all waited lock_timeout={lock_timeout:g}s for a table lock and gave up"
    if not rows:
        return (
            f"{head}; the holder has gone since. Run it again, and close every Session and "
            "Connection on these tables before dropping them."
        )
    blockers = "; ".join(f"{_backend(row)} holding {row.locked}" for row in rows)
    pids = ", ".join(sorted({str(row.pid) for row in rows}))
    return (
        f"{head}: blocked by {blockers}. Close that Session or Connection first (a session left "
        f"'idle in transaction' holds its locks), or end it with SELECT pg_terminate_backend(pid) "
        f"for pid {pids}."
    )


def reset_schema(
    engine: Engine,
    metadata: MetaData,
    *,
    lock_timeout: float = 10.0,
    base_data: Callable[[Connection], None] | None = None,
    create: Callable[[Connection], None] | None = None,
) -> None:
    """The universal method: make the database hold exactly ``metadata``'s tables, empty, committed.

    Reflects every table in the database as it is now (the models may have changed since the
    last run), drops every foreign key first so that cycles (A -> B -> C -> A) cannot block the
    drop, drops every reflected table, creates the tables of ``metadata``, runs ``base_data`` and
    commits. The caller checks that the database is a test database first.
    """
    with _engine.connect(engine) as connection:
        reflected = MetaData()
        reflected.reflect(connection)
        connection.rollback()
        with connection.begin():
            limit_lock_wait(connection, lock_timeout)
            if connection.dialect.name == "sqlite":
                connection.exec_driver_sql("PRAGMA defer_foreign_keys = ON")  # SQLite cannot drop a constraint
            else:
                for table in reflected.tables.values():
                    for constraint in table.foreign_key_constraints:
                        if constraint.name:
                            connection.execute(DropConstraint(constraint))
            for table in reflected.tables.values():
                connection.execute(DropTable(table))
            (create or metadata.create_all)(connection)
            if base_data is not None:
                base_data(connection)
    log.info("reset %s: dropped %d tables, created %d", engine.url.database, len(reflected.tables), len(metadata.tables))
