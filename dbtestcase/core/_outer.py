"""One setup of a TestDatabase: the engine, the one connection, the outer transaction and the schema built in it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import MetaData, Table
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import DBAPIError

from .. import backends
from ..exceptions import ConfigurationError
from . import _asynclink as asynclink
from . import _engine
from . import _namespaces as namespaces
from . import _schema as schema
from ._connstate import PLAIN
from ._reset import drop_all, reset_schema
from ._savepoints import SavepointStack


@dataclass(frozen=True)
class Plan:
    """What a TestDatabase asks of each setup (its constructor's options, checked there)."""

    metadata: MetaData
    strategy: str
    drop_tables: bool
    lock_timeout: float
    allow_destructive: bool
    base_data: Callable[[Connection], None] | None
    create: schema.Creator | None  # Alembic's upgrade, or None for create_all
    own_schema: bool
    echo: bool
    engine_options: Mapping[str, Any]


@dataclass
class Outer:
    """What one setup holds and built; :func:`close` ends it."""

    engine: Engine
    connection: Connection
    link: asynclink.AsyncLink | None = None  # an async URL's AsyncConnection and event loop
    server_side_begin: bool = False  # the kit owns the transaction: commit() on the connection cannot end it
    schema_name: str | None = None
    preexisting_tables: list[Table] = field(default_factory=list)
    created_tables: list[Table] = field(default_factory=list)  # created inside the outer transaction
    checks_constraints: bool = False
    worker_database: bool = False  # MySQL/MariaDB in a parallel worker: a database of the worker's own
    savepoints: SavepointStack | None = None


def open_outer(url: URL, plan: Plan, rebuild: Callable[[], None] | None = None) -> Outer:
    """Connect to ``url``, begin the outer transaction and build the schema as ``plan`` says.

    ``rebuild`` is what the savepoint stack calls when a test ended the outer transaction (sync URLs only).
    """
    if asynclink.is_async(url):
        return _open_async(url, plan)
    return _open_sync(url, plan, rebuild)


def _create_engine(url: URL, plan: Plan) -> tuple[Engine, bool]:
    """The engine, and whether it is a parallel worker's own database (MySQL/MariaDB)."""
    engine = _engine.create_engine(url, echo=plan.echo, **plan.engine_options)
    try:
        worker_url = namespaces.worker_database(engine, plan.allow_destructive)
    except BaseException:
        engine.dispose()
        raise
    if worker_url is None:
        return engine, False
    engine.dispose()
    return _engine.create_engine(worker_url, echo=plan.echo, **plan.engine_options), True


def _open_sync(url: URL, plan: Plan, rebuild: Callable[[], None] | None) -> Outer:
    engine, worker_database = _create_engine(url, plan)
    url = engine.url
    try:
        backends.prepare_engine(engine)
        strategy = backends.resolve_strategy(plan.strategy, engine)
        if strategy == "savepoint" and plan.drop_tables and plan.create is not None:
            # create_committed knows only create_all, and drop_all would leave alembic_version.
            raise ConfigurationError(
                "drop_tables=True with alembic_config is not supported with the savepoint strategy: "
                "leave drop_tables off, and the migrated tables vanish with the outer transaction."
            )
        if strategy == "reset":
            backends.check_destructive(url, "strategy='reset'", plan.allow_destructive)
            reset_schema(engine, plan.metadata, lock_timeout=plan.lock_timeout, base_data=plan.base_data, create=plan.create)
        if plan.drop_tables:
            backends.check_destructive(url, "drop_tables=True", plan.allow_destructive)
            if strategy == "savepoint":
                schema.create_committed(engine, plan.metadata, plan.lock_timeout)
        connection = _engine.connect(engine)
        outer = Outer(engine, connection, worker_database=worker_database)
        try:
            _prepare(outer, plan, strategy, rebuild)
        except BaseException:
            connection.close()
            raise
    except BaseException:
        engine.dispose()
        raise
    return outer


def _open_async(url: URL, plan: Plan) -> Outer:
    """An async URL: the same setup, on an AsyncConnection's sync facade, on a loop of our own."""
    link = asynclink.AsyncLink(url, echo=plan.echo, engine_options=dict(plan.engine_options))
    try:
        strategy = backends.resolve_strategy(plan.strategy, link.sync_engine)
        if strategy != "savepoint" or plan.drop_tables:
            raise ConfigurationError(
                f"an async URL ({url.drivername}) supports the savepoint strategy without drop_tables only: "
                "the tables live in the outer transaction; use a sync URL (postgresql+psycopg2://) for "
                "drop_tables=True or the reset strategy."
            )
        outer = Outer(link.sync_engine, link.connect(), link=link)
        link.run(_prepare, outer, plan, strategy)
    except BaseException:
        link.close()
        raise
    return outer


def _prepare(outer: Outer, plan: Plan, strategy: str, rebuild: Callable[[], None] | None = None) -> None:
    """Begin the outer transaction on the new connection and create the tables in it.

    Where the driver allows (see ``backends.own_transaction``), the kit owns the transaction: SQLAlchemy's
    Connection.commit() and rollback() then never reach the server, so no test can end the outer
    transaction, and the per-test rollback needs a single round trip. The savepoint stack's statement
    guard is set last, once the kit's own DDL has run.
    """
    connection = outer.connection
    outer.server_side_begin = backends.own_transaction(connection)
    # SQLAlchemy's own transaction (nothing at the server on an owned connection): with it, a Session on
    # this connection makes its own SAVEPOINT.
    if not connection.in_transaction():
        connection.begin()
    if strategy == "savepoint" and not plan.drop_tables:  # the tables live in the outer transaction
        if plan.own_schema:
            outer.schema_name = namespaces.enter_schema(connection, plan.metadata)
        outer.preexisting_tables = schema.create_in_transaction(
            connection, plan.metadata, plan.lock_timeout, plan.create, fresh=outer.schema_name is not None
        )
        outer.created_tables = [t for t in plan.metadata.sorted_tables if t not in outer.preexisting_tables]
    if strategy == "savepoint" and plan.base_data is not None:
        plan.base_data(connection)
    backends.check_transactional(connection, plan.metadata)
    outer.checks_constraints = schema.has_deferrable_constraints(connection, plan.metadata)
    outer.savepoints = SavepointStack(connection, server_side_begin=outer.server_side_begin,
                                      checks_constraints=outer.checks_constraints, rebuild=rebuild)


def close(outer: Outer, plan: Plan, *, ended: bool = False) -> None:
    """Roll back the outer transaction, close the connection and the engine; then drop what outlives them.

    ``ended``: a test had ended the outer transaction itself (see :func:`_close`).
    """
    if outer.link is not None:
        try:
            outer.link.run(_close, outer, plan)
        finally:
            outer.link.close()  # and its engine, and its event loop
        return
    try:
        _close(outer, plan, ended=ended)
    finally:
        outer.engine.dispose()


def _close(outer: Outer, plan: Plan, *, ended: bool = False) -> None:
    """``ended``: a test ended the outer transaction, so what was built in it may have been committed."""
    connection, engine = outer.connection, outer.engine
    try:
        if outer.server_side_begin and not connection.closed:
            connection.exec_driver_sql("ROLLBACK", execution_options=PLAIN)
            backends.release_transaction(connection)
    except DBAPIError:
        if not ended:
            raise
    finally:
        connection.close()  # rolls back SQLAlchemy's own transaction, if that is the outer one
    if outer.schema_name is not None and (ended or not outer.server_side_begin):
        # A test ended the outer transaction with a COMMIT (or a driver could not keep it from committing).
        namespaces.drop_committed_schema(engine, outer.schema_name)
    elif ended and outer.created_tables:  # the default schema: drop what this setup created, if committed
        drop_all(engine, plan.metadata, lock_timeout=plan.lock_timeout, tables=outer.created_tables,
                 allow_destructive=True)
    if plan.drop_tables:
        drop_all(engine, plan.metadata, lock_timeout=plan.lock_timeout, allow_destructive=True)
    if outer.worker_database:
        namespaces.drop_worker_database(engine)
