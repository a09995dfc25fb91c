"""Creating the tables: inside the outer transaction, or committed for drop_tables=True."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from sqlalchemy import MetaData, Table, inspect, literal, select, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from .._urls import mask
from ..backends import LOCK_NOT_AVAILABLE, limit_lock_wait, sqlstate
from ..exceptions import ConfigurationError, LockTimeoutError, SchemaMismatchError
from . import _engine
from ._reset import drop_tables, existing_tables, open_transactions

log = logging.getLogger(__name__)

Creator = Callable[[Connection], None]  # builds the schema on a connection: create_all, or migrations

#: The comment on tables made with drop_tables=True: a later run may drop them as leftovers.
LEFTOVER_MARK = "dbtestcase: created for tests with drop_tables=True; safe to drop"


def create_in_transaction(
    connection: Connection, metadata: MetaData, lock_timeout: float, create: Creator | None = None, *, fresh: bool = False
) -> list[Table]:
    """create_all inside the outer transaction, never waiting forever for a catalog lock.

    Another uncommitted transaction that creates the same tables (a second TestDatabase on the
    same database, a parallel run) would block CREATE TABLE until it ends.

    ``fresh``: the tables go to a schema made just now (namespaces.enter_schema), where none can
    exist yet: skip looking for them.

    Returns:
        The tables that existed already: they are used as they are, never created or dropped.

    Raises:
        LockTimeoutError: another transaction held the same tables for ``lock_timeout`` seconds.
    """
    preexisting = [] if fresh else existing_tables(connection, metadata)
    dirty = [t.fullname for t in preexisting if connection.execute(select(literal(1)).select_from(t).limit(1)).first()]
    if dirty:
        raise ConfigurationError(
            f"tables that already exist in {mask(connection.engine.url)} hold rows: {', '.join(dirty)}. Tests would "
            "not start on a blank slate: use an empty test database (or no URL, and dbtestcase starts a "
            "throwaway PostgreSQL), or empty these tables yourself."
        )
    create = create or metadata.create_all
    if connection.dialect.name != "postgresql":
        create(connection)
        return preexisting
    limit_lock_wait(connection, lock_timeout)
    try:
        create(connection)
    except DBAPIError as exc:
        if sqlstate(exc) != LOCK_NOT_AVAILABLE:
            raise
        connection.exec_driver_sql("ROLLBACK")
        connection.exec_driver_sql("BEGIN")
        raise LockTimeoutError(
            f"creating the tables in {mask(connection.engine.url)} waited lock_timeout="
            f"{lock_timeout:g}s for another transaction that holds the same tables "
            f"({open_transactions(connection)}). Two test databases with the same tables "
            "cannot share one schema at once: tear the other down first, leave own_schema on, or give this "
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



def migrations(config_path: str, metadata: MetaData) -> Creator:
    """A schema builder that runs Alembic's ``upgrade head`` on the given connection, then checks it.

    The connection reaches the migrations' ``env.py`` as ``config.attributes["connection"]``,
    Alembic's documented recipe for sharing a connection; there, ``context.begin_transaction()``
    sees the outer transaction and does not commit.

    Raises:
        ConfigurationError: Alembic is not installed, or the file does not exist.
        SchemaMismatchError: the migrated schema differs from ``metadata`` (each difference listed).
    """
    try:
        from alembic.config import Config
    except ImportError:
        raise ConfigurationError(
            f"alembic_config={config_path!r} needs Alembic, which is not installed: pip install 'dbtestcase[alembic]'."
        ) from None
    if not os.path.isfile(config_path):
        raise ConfigurationError(f"alembic_config={config_path!r} is not a file: give the path of alembic.ini.")

    def upgrade(connection: Connection) -> None:
        from alembic import command

        config = Config(config_path)
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        check_migrated(connection, metadata)

    return upgrade


def check_migrated(connection: Connection, metadata: MetaData) -> None:
    """Compare the database with the models, as ``alembic revision --autogenerate`` would.

    Raises:
        SchemaMismatchError: a table, column, index or constraint differs; each one is listed.
    """
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    def ours(obj: object, name: str | None, kind: str, reflected: bool, compare_to: object) -> bool:
        return not (kind == "table" and name == "alembic_version")

    context = MigrationContext.configure(connection, opts={"include_object": ours, "compare_type": True})
    differences = compare_metadata(context, metadata)
    if differences:
        listed = "; ".join(_describe(difference) for difference in differences)
        raise SchemaMismatchError(
            f"the migrated schema differs from the models ({len(differences)} differences): {listed}. "
            "Write the migration that is missing (alembic revision --autogenerate) or fix the models."
        )


def _describe(difference: object) -> str:
    if isinstance(difference, list):  # column changes come grouped
        return ", ".join(_describe(item) for item in difference)
    if isinstance(difference, tuple) and difference:
        action, *rest = difference
        names = [getattr(item, "name", None) or str(item) for item in rest if item is not None and not isinstance(item, dict)]
        return f"{action} {' '.join(str(n) for n in names[:3])}".strip()
    return str(difference)
