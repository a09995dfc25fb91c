"""Creating the tables: inside the outer transaction, or committed for drop_tables=True."""

from __future__ import annotations

import logging

from sqlalchemy import MetaData, Table, inspect, literal, select, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from . import engine as _engine
from .exceptions import ConfigurationError, LockTimeoutError
from .reset import LOCK_NOT_AVAILABLE, drop_tables, existing_tables, open_transactions
from .urls import mask

log = logging.getLogger(__name__)

#: The comment on tables made with drop_tables=True: a later run may drop them as leftovers.
LEFTOVER_MARK = "dbtestcase: created for tests with drop_tables=True; safe to drop"


def create_in_transaction(connection: Connection, metadata: MetaData, lock_timeout: float) -> list[Table]:
    """create_all inside the outer transaction, never waiting forever for a catalog lock.

    Another uncommitted transaction that creates the same tables (a second TestDatabase on the
    same database, a parallel run) would block CREATE TABLE until it ends.

    Returns:
        The tables that existed already: they are used as they are, never created or dropped.

    Raises:
        LockTimeoutError: another transaction held the same tables for ``lock_timeout`` seconds.
    """
    preexisting = existing_tables(connection, metadata)
    dirty = [t.fullname for t in preexisting if connection.execute(select(literal(1)).select_from(t).limit(1)).first()]
    if dirty:
        raise ConfigurationError(
            f"tables that already exist in {mask(connection.engine.url)} hold rows: {', '.join(dirty)}. Tests would "
            "not start on a blank slate: use an empty test database (or no URL, and dbtestcase starts a "
            "throwaway PostgreSQL), or empty these tables yourself."
        )
    if connection.dialect.name != "postgresql":
        metadata.create_all(connection)
        return preexisting
    connection.exec_driver_sql(f"SET LOCAL lock_timeout = {max(1, int(lock_timeout * 1000))}")
    try:
        metadata.create_all(connection)
    except DBAPIError as exc:
        if getattr(exc.orig, "pgcode", None) != LOCK_NOT_AVAILABLE:
            raise
        connection.exec_driver_sql("ROLLBACK; BEGIN")
        raise LockTimeoutError(
            f"creating the tables in {mask(connection.engine.url)} waited lock_timeout="
            f"{lock_timeout:g}s for another transaction that holds the same tables "
            f"({open_transactions(connection)}). Two test databases with the same tables "
            "cannot share one database at once: tear the other down first, or give this "
            "one another database (url=...)."
        ) from exc
    connection.exec_driver_sql("SET LOCAL lock_timeout = DEFAULT")
    return preexisting


def create_committed(engine: Engine, metadata: MetaData, lock_timeout: float) -> None:
    """drop_tables mode: create the tables committed, marked as ours by a table comment.

    Tables that already exist are never adopted (teardown would drop someone's data), except
    leftovers marked by a run that was killed before its teardown: those are dropped first.

    Raises:
        ConfigurationError: some of the tables exist and are not marked as ours.
    """
    with _engine.connect(engine) as connection:
        inspector = inspect(connection)
        found = existing_tables(connection, metadata)
        # Only PostgreSQL gets here with marks (MySQL resets instead; SQLite has no table comments,
        # so its leftovers cannot be told apart from someone's tables and are refused).
        marks = connection.dialect.name == "postgresql"
        ours = [t for t in found if marks and inspector.get_table_comment(t.name, schema=t.schema).get("text") == LEFTOVER_MARK]
        theirs = [t.fullname for t in found if t not in ours]
        connection.rollback()  # end the inspection's transaction
        if theirs:
            raise ConfigurationError(
                f"drop_tables=True would drop tables that already exist in {mask(engine.url)}: "
                f"{', '.join(theirs)}. dbtestcase drops only tables it created: drop them yourself "
                "(dbtestcase.drop_all), use another database, or leave drop_tables off."
            )
        if ours:
            log.info("dropping %d tables left by a killed run", len(ours))
            with connection.begin():
                drop_tables(connection, metadata, lock_timeout, ours)
        with connection.begin():
            metadata.create_all(connection)
            if marks:
                for table in metadata.sorted_tables:
                    if table.comment is None:
                        name = connection.dialect.identifier_preparer.format_table(table)
                        connection.exec_driver_sql(f"COMMENT ON TABLE {name} IS '{LEFTOVER_MARK}'")


def has_deferrable_constraints(connection: Connection, metadata: MetaData) -> bool:
    """Whether constraints can be deferred (so tests must check them before rolling back).

    PostgreSQL: any deferrable constraint in the database. SQLite: a deferrable foreign key in
    ``metadata``. MySQL/MariaDB check every constraint at once.
    """
    if connection.dialect.name == "postgresql":
        return bool(connection.scalar(text("SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE condeferrable)")))
    if connection.dialect.name == "sqlite":
        return any(fk.deferrable for table in metadata.sorted_tables for fk in table.foreign_key_constraints)
    return False

