"""Namespaces on a shared server: a PostgreSQL schema per TestDatabase, a MySQL/MariaDB database per worker.

Parallel workers (nose2 -N, pytest -n), CI shards and several TestDatabases in one process may all
create the same tables on one server. On PostgreSQL two uncommitted transactions that create a
table of the same name in the same schema wait on each other (the catalog's unique index), so each
TestDatabase creates its tables in a schema of its own, made inside its outer transaction: nobody
else sees it, nobody waits, and it vanishes at rollback, or when a killed run's connection dies.
MySQL/MariaDB have no schemas inside a database and commit DDL at once, so each worker resets a
database of its own.
"""

from __future__ import annotations

import logging
import os
import secrets

from sqlalchemy import MetaData, text
from sqlalchemy.engine import URL, Connection, Engine

from .. import backends
from ..workers import worker_id
from . import _engine
from ._reset import existing_tables

log = logging.getLogger(__name__)

#: Prefix of the schemas made by :func:`enter_schema`.
SCHEMA_PREFIX = "dbtestcase_"
# The first key of the advisory locks that mark a schema as in use by a live run (the second: its name's hash).
_LOCK_CLASS = 0x6462  # "db"
_COMMITTED_SCHEMAS = text(r"SELECT nspname FROM pg_namespace WHERE nspname LIKE 'dbtestcase\_%' ORDER BY nspname")
_LOCK = text("SELECT pg_advisory_lock(:key, hashtext(:name))")
_TRY_LOCK = text("SELECT pg_try_advisory_lock(:key, hashtext(:name))")
_UNLOCK = text("SELECT pg_advisory_unlock(:key, hashtext(:name))")
_reaped: set[str] = set()  # the databases this process has reaped already


def enter_schema(connection: Connection, metadata: MetaData) -> str | None:
    """PostgreSQL: create a schema of our own in the current transaction, first on the search_path.

    The tables of ``metadata`` that name no schema are then created there; ``public`` (and the rest
    of the path) stays reachable after it, for extensions and their types. Returns its name, or None
    where nothing was done: another database, or tables of ``metadata`` that exist already (they are
    used as they are, as before).
    """
    if connection.dialect.name != "postgresql" or existing_tables(connection, metadata):
        return None
    worker = worker_id()
    name = f"{SCHEMA_PREFIX}{worker + '_' if worker else ''}{os.getpid()}_{secrets.token_hex(4)}"
    path = (connection.exec_driver_sql("SHOW search_path").scalar() or "").strip()
    rest = f", {path}" if path and path != '""' else ""  # an empty path: ours alone
    where = connection.engine.url.render_as_string(hide_password=True)
    if not connection.dialect.is_async and where not in _reaped:  # once per database and process; not on an
        _reaped.add(where)  # async engine's facade, which cannot open a second connection here
        reap_dead_schemas(connection.engine)
    # Held by this connection for its life (a session lock outlives the rollback): while it is held, no other
    # run reaps the schema, even if a test commits it; it is released when the connection closes or dies.
    connection.execute(_LOCK, {"key": _LOCK_CLASS, "name": name})
    # Inside the outer transaction, so undone with it; not SET LOCAL, so that a test that commits
    # the outer transaction (drivers that cannot prevent it) leaves later tests on the same tables.
    connection.exec_driver_sql(f'CREATE SCHEMA "{name}"')
    connection.exec_driver_sql(f'SET search_path TO "{name}"{rest}')
    # What SQLAlchemy's inspector (and Alembic's autogenerate) takes as the schema of unqualified
    # tables; read once per engine at its first connection, and this engine is the TestDatabase's own.
    connection.dialect.default_schema_name = name
    log.debug("tables of this run go to schema %s", name)
    return name


def reap_dead_schemas(engine: Engine) -> list[str]:
    """Drop the committed ``dbtestcase_*`` schemas of runs that are dead; return their names.

    A schema is committed only when a test committed the outer transaction and its run was killed before
    its teardown dropped it. Its run holds an advisory lock on its name for as long as its connection
    lives, so a schema whose lock can be taken has no live owner; one whose lock is held is never touched.
    """
    reaped = []
    with _engine.connect(engine) as connection:
        for (name,) in connection.execute(_COMMITTED_SCHEMAS).all():
            key = {"key": _LOCK_CLASS, "name": name}
            if not connection.execute(_TRY_LOCK, key).scalar():
                continue  # a live run's
            try:
                connection.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
                connection.commit()
                reaped.append(name)
            finally:
                connection.execute(_UNLOCK, key)
                connection.commit()
    if reaped:
        log.info("dropped %d schema(s) left committed by dead runs: %s", len(reaped), ", ".join(reaped))
    return reaped


def worker_database(engine: Engine, allow_destructive: bool) -> URL | None:
    """MySQL/MariaDB in a parallel worker: the URL of this worker's own database, created if need be.

    The database is named after the configured one and the worker (``test_gw0``), so a killed run's
    leftover is reused, and reset, by the next run of that worker. Returns None outside workers and on
    other databases.

    Raises:
        DestructiveActionError: the configured database does not look like a test database.
    """
    url, worker = engine.url, worker_id()
    if worker is None or not backends.is_mysql(url.get_backend_name()) or not url.database:
        return None
    backends.check_destructive(url, "resetting a parallel worker's database", allow_destructive)
    name = f"{url.database}_{worker}"[:64]
    with _engine.connect(engine) as connection:
        connection.exec_driver_sql(f"CREATE DATABASE IF NOT EXISTS `{name}`")
    log.debug("worker %s uses database %s", worker, name)
    return url.set(database=name)


def drop_worker_database(engine: Engine) -> None:
    """Drop the database that :func:`worker_database` made, at the end of the worker's run."""
    with _engine.connect(engine) as connection:
        connection.exec_driver_sql(f"DROP DATABASE IF EXISTS `{engine.url.database}`")


def drop_committed_schema(engine: Engine, name: str) -> None:
    """Drop our schema if a test committed it (a driver that cannot keep a test from committing)."""
    with _engine.connect(engine) as connection:
        connection.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        connection.commit()
