"""TestDatabase: the engine, the one connection, the outer transaction and the schema in it."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

from sqlalchemy import MetaData, Table
from sqlalchemy.engine import URL, Connection, Engine

from . import asyncdb, backends, namespaces, schema, throwaway
from . import engine as _engine
from .exceptions import ConfigurationError
from .reset import check_arguments, check_transactional, drop_all, reset_schema
from .savepoints import SavepointLevels
from .urls import UrlLike, configured_url, mask

log = logging.getLogger(__name__)


class TestDatabase(SavepointLevels, asyncdb.AsyncAccess):
    """One connection to the test database, inside one outer transaction that is never committed.

    ``setup()`` connects, begins the outer transaction and creates the tables of ``metadata``
    inside it; ``teardown()`` rolls it back, so on PostgreSQL (transactional DDL) the tables
    and every row vanish, also when the process is killed: the server rolls back an open
    transaction whose connection dies.

    Args:
        metadata: the tables to create (``Base.metadata``).
        url: the database; ``None`` reads ``$DBTESTCASE_URL``, and without it a throwaway
            PostgreSQL server is started (once per process); ``mysql://`` alone (no host, no
            database) starts a throwaway MariaDB. An async URL (``postgresql+asyncpg://...``,
            ``postgresql+psycopg_async://...``) sets up an AsyncConnection for
            :class:`~dbtestcase.AsyncDatabaseTestCase`; alone (``postgresql+asyncpg://``) it means
            ``$DBTESTCASE_URL``'s server, else a throwaway one, with that driver.
        drop_tables: create the tables *committed*, so that other connections (threads,
            subprocesses, an application server) see them, and drop them at teardown with
            :func:`dbtestcase.drop_all`. With the savepoint strategy, refuses to start if one of
            the tables already exists (the reset strategy drops every table anyway).
        lock_timeout: seconds the ``drop_tables`` DROP may wait for a lock before it names
            the blocking sessions and fails.
        echo: log every SQL statement (``create_engine(echo=True)``).
        engine_options: more keyword arguments for ``sqlalchemy.create_engine``.
        strategy: ``"auto"`` (from the dialect), ``"savepoint"`` (create the tables inside the
            outer transaction: PostgreSQL, SQLite) or ``"reset"`` (the universal method for
            databases without transactional DDL, such as MySQL/MariaDB: reflect, drop the
            foreign keys, drop every table, create, commit; the tables stay until the next reset).
        allow_destructive: let the reset strategy and ``drop_tables`` work on a database whose
            name lacks "test" (also ``DBTESTCASE_ALLOW_DESTRUCTIVE=1``).
        base_data: called with the connection after the tables are created, to insert data every
            test starts from (committed with the reset strategy, inside the outer transaction
            otherwise).
        alembic_config: path of an ``alembic.ini``: build the schema with Alembic's
            ``upgrade head`` on the shared connection (inside the outer transaction where DDL is
            transactional) instead of ``create_all``, then check it against ``metadata``.
        own_schema: PostgreSQL, savepoint strategy: create the tables in a schema of this
            database's own (:attr:`schema_name`), made inside the outer transaction and put first
            on the ``search_path``, so that parallel workers, CI shards and other TestDatabases on
            the same server never wait on each other. Skipped when tables of ``metadata`` exist
            already, and with ``drop_tables``. False: the default schema, as in 0.1.

    .. versionchanged:: 0.2
       ``strategy``, ``allow_destructive``, ``base_data`` and ``own_schema``; MySQL/MariaDB and SQLite;
       async URLs; in a parallel worker on MySQL/MariaDB, a database of the worker's own.

    Raises:
        ConfigurationError: ``metadata`` is not a MetaData, or an option is out of range.
    """

    __test__ = False  # "Test" prefix: keep pytest from collecting this class.

    def __init__(
        self,
        metadata: MetaData,
        url: UrlLike | None = None,
        *,
        drop_tables: bool = False,
        lock_timeout: float = 10.0,
        echo: bool = False,
        engine_options: Mapping[str, Any] | None = None,
        strategy: str = "auto",
        allow_destructive: bool = False,
        base_data: Callable[[Connection], None] | None = None,
        alembic_config: str | None = None,
        own_schema: bool = True,
    ) -> None:
        check_arguments(metadata, lock_timeout)
        backends.check_strategy(strategy)
        if base_data is not None and not callable(base_data):
            raise ConfigurationError(f"base_data must be a function taking a Connection (got {base_data!r}).")
        self.metadata = metadata
        self.strategy = strategy
        self.allow_destructive = allow_destructive
        self.base_data = base_data
        self._create = schema.migrations(alembic_config, metadata) if alembic_config else None
        self.drop_tables = drop_tables
        self.lock_timeout = float(lock_timeout)
        self._given_url = configured_url(url)  # parse early: a bad URL fails at construction
        self._echo = echo
        self._engine_options = dict(engine_options or {})
        self._engine: Engine | None = None
        self._connection: Connection | None = None
        self._levels: list[str] = []  # names of the SAVEPOINTs we hold, innermost last
        self.checks_constraints = False
        #: Tables of ``metadata`` that existed before setup(), used as they are and never created or dropped.
        self.preexisting_tables: list[Table] = []
        self._server_side_begin = False
        self._link: asyncdb.AsyncLink | None = None  # an async URL's connection and event loop
        self._pid = 0  # the process that set it up: a forked child must not use that connection
        self.own_schema = own_schema
        #: PostgreSQL: the schema of this database's own that holds its tables (see ``own_schema``), else None.
        self.schema_name: str | None = None
        self._worker_database = False  # MySQL/MariaDB in a parallel worker: a database of the worker's own

    # --- public state -------------------------------------------------------------------------
    @property
    def url(self) -> URL:
        """The database URL (its ``str()`` hides the password); known once set up if none was given."""
        if self._engine is not None:
            return self._engine.url
        if self._given_url is None:
            raise ConfigurationError("the URL of a throwaway server is known after setup(): call setup() first.")
        return self._given_url

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine; available after :meth:`setup`."""
        self._check_process()
        if self._engine is None:
            raise ConfigurationError(f"{self!r} is not set up: call setup() (or use it as a context manager) first.")
        return self._engine

    @property
    def connection(self) -> Connection:
        """The one shared connection, inside the outer transaction; available after :meth:`setup`."""
        self._check_process()
        if self._connection is None:
            raise ConfigurationError(f"{self!r} is not set up: call setup() (or use it as a context manager) first.")
        return self._connection

    @property
    def is_set_up(self) -> bool:
        """True between :meth:`setup` and :meth:`teardown`, in the process that called :meth:`setup`."""
        return self._connection is not None and self._pid == os.getpid()

    def _inherited(self) -> bool:
        """Set up by the process this one was forked from: the connection is that process's."""
        return self._connection is not None and self._pid != os.getpid()

    def _check_process(self) -> None:
        if self._inherited():
            raise ConfigurationError(
                f"{self!r} was set up in process {self._pid}, which this process (pid {os.getpid()}) was forked "
                "from: its connection belongs to that process (nose2's mp plugin forks its workers after importing "
                "the tests). Call setup() in this process, or set the database up in setUpModule() or setUpClass() "
                "rather than at import."
            )

    def __repr__(self) -> str:
        engine, given = getattr(self, "_engine", None), getattr(self, "_given_url", None)
        where = mask(engine.url if engine is not None else given or "throwaway server")
        metadata = getattr(self, "metadata", None)
        return f"<TestDatabase {where} tables={len(metadata.tables) if metadata is not None else '?'}>"

    # --- lifecycle ---------------------------------------------------------------------------
    def setup(self) -> TestDatabase:
        """Connect, begin the outer transaction and create the tables; returns ``self``.

        Calling it again while set up does nothing.

        Raises:
            ConnectionFailedError: the server did not answer or refused the login.
            DriverMissingError: the URL's driver is not installed.
            ConfigurationError: ``drop_tables=True`` and some of the tables already exist, or
                existing tables hold rows, or the strategy does not fit the database.
            DestructiveActionError: the reset strategy or ``drop_tables`` on a database whose
                name lacks "test", without ``allow_destructive``.
            NonTransactionalTableError: a MySQL/MariaDB table is not InnoDB.
        """
        if self._inherited():
            # Never use, close or garbage-collect the parent's connection here: closing it would end the
            # parent's session, and a rollback would undo its outer transaction. Keep it, untouched.
            _inherited.append((self._connection, self._engine, self._link))
            self._connection = self._engine = self._link = None
            self._levels = []
            throwaway.live.discard(self)
        if self._connection is not None:
            return self
        url = throwaway.resolve_url(self._given_url)
        if asyncdb.is_async(url):
            self._setup_async(url)
        else:
            self._setup_sync(url)
        self._pid = os.getpid()
        throwaway.live.add(self)
        log.debug("set up %r", self)
        return self

    def _create_engine(self, url: URL) -> Engine:
        """The engine; in a parallel worker on MySQL/MariaDB, on the worker's own database."""
        engine = _engine.create_engine(url, echo=self._echo, **self._engine_options)
        try:
            worker_url = namespaces.worker_database(engine, self.allow_destructive)
        except BaseException:
            engine.dispose()
            raise
        self._worker_database = worker_url is not None  # of this setup: a later one may run outside workers
        if worker_url is None:
            return engine
        engine.dispose()
        return _engine.create_engine(worker_url, echo=self._echo, **self._engine_options)

    def _setup_sync(self, url: URL) -> None:
        engine = self._create_engine(url)
        url = engine.url
        try:
            backends.prepare_engine(engine)
            strategy = backends.resolve_strategy(self.strategy, engine)
            if strategy == "savepoint" and self.drop_tables and self._create is not None:
                # create_committed knows only create_all, and drop_all would leave alembic_version.
                raise ConfigurationError(
                    "drop_tables=True with alembic_config is not supported with the savepoint strategy: "
                    "leave drop_tables off, and the migrated tables vanish with the outer transaction."
                )
            if strategy == "reset":
                backends.check_destructive(url, "strategy='reset'", self.allow_destructive)
                reset_schema(
                    engine, self.metadata, lock_timeout=self.lock_timeout, base_data=self.base_data, create=self._create
                )
            if self.drop_tables:
                backends.check_destructive(url, "drop_tables=True", self.allow_destructive)
                if strategy == "savepoint":
                    schema.create_committed(engine, self.metadata, self.lock_timeout)
            connection = _engine.connect(engine)
            try:
                self._prepare(connection, strategy)
            except BaseException:
                connection.close()
                raise
        except BaseException:
            engine.dispose()
            raise
        self._engine, self._connection = engine, connection

    def _setup_async(self, url: URL) -> None:
        """An async URL: the same setup, on an AsyncConnection's sync facade, on a loop of our own."""
        link = asyncdb.AsyncLink(url, echo=self._echo, engine_options=self._engine_options)
        try:
            strategy = backends.resolve_strategy(self.strategy, link.sync_engine)
            if strategy != "savepoint" or self.drop_tables:
                raise ConfigurationError(
                    f"an async URL ({url.drivername}) supports the savepoint strategy without drop_tables only: "
                    "the tables live in the outer transaction; use a sync URL (postgresql+psycopg2://) for "
                    "drop_tables=True or the reset strategy."
                )
            connection = link.connect()
            link.run(self._prepare, connection, strategy)
        except BaseException:
            link.close()
            raise
        self._engine, self._connection, self._link = link.sync_engine, connection, link

    def _prepare(self, connection: Connection, strategy: str) -> None:
        """Begin the outer transaction on the new connection and create the tables in it."""
        self._begin(connection)
        self.schema_name = None
        if strategy == "savepoint" and not self.drop_tables:  # the tables live in the outer transaction
            if self.own_schema:
                self.schema_name = namespaces.enter_schema(connection, self.metadata)
            self.preexisting_tables = schema.create_in_transaction(
                connection, self.metadata, self.lock_timeout, self._create, fresh=self.schema_name is not None
            )
        if strategy == "savepoint" and self.base_data is not None:
            self.base_data(connection)
        check_transactional(connection, self.metadata)
        self.checks_constraints = schema.has_deferrable_constraints(connection, self.metadata)
        backends.guard_implicit_commits(connection)

    def teardown(self) -> None:
        """Roll back the outer transaction, close the connection and dispose of the engine.

        Safe to call twice. With ``drop_tables=True`` the tables are then dropped with
        :func:`dbtestcase.drop_all`.
        """
        connection, engine, link = self._connection, self._engine, self._link
        if connection is None or engine is None or self._inherited():
            return  # not set up, or set up by the parent of this forked process: not ours to end
        self._connection = self._engine = self._link = None
        self._levels.clear()
        throwaway.live.discard(self)
        if link is not None:
            try:
                link.run(self._close, connection, engine)
            finally:
                link.close()  # and its engine, and its event loop
        else:
            try:
                self._close(connection, engine)
            finally:
                engine.dispose()
        log.debug("tore down %r", self)

    def _close(self, connection: Connection, engine: Engine) -> None:
        """Roll back the outer transaction and close the connection; then drop what outlives it."""
        try:
            if self._server_side_begin:
                connection.exec_driver_sql("ROLLBACK")
                backends.release_transaction(connection)
        finally:
            connection.close()  # rolls back SQLAlchemy's own transaction, if that is the outer one
        if self.schema_name is not None and not self._server_side_begin:
            # A driver that cannot keep a test from committing may have committed our schema.
            namespaces.drop_committed_schema(engine, self.schema_name)
        if self.drop_tables:
            drop_all(engine, self.metadata, lock_timeout=self.lock_timeout, allow_destructive=True)
        if self._worker_database:
            namespaces.drop_worker_database(engine)

    def __enter__(self) -> TestDatabase:
        return self.setup()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.teardown()

    # --- internals ---------------------------------------------------------------------------
    def _begin(self, connection: Connection) -> None:
        """Begin the outer transaction.

        With psycopg2 the connection is put in DBAPI autocommit mode and the transaction is
        begun with an explicit BEGIN: SQLAlchemy's Connection.commit() and rollback() then never
        reach the server (psycopg2 ignores them in autocommit mode), so no test can end the
        outer transaction, and the per-test rollback needs a single round trip.
        """
        self._server_side_begin = backends.own_transaction(connection)
        # SQLAlchemy's own transaction (a no-op at the server in autocommit mode; the BEGIN
        # above autobegan it): with it, a Session on this connection makes its own SAVEPOINT.
        if not connection.in_transaction():
            connection.begin()


# Connections of databases set up before a fork, kept referenced (and so never closed) in the child.
_inherited: list[tuple[Any, Any, Any]] = []


# --- the module-level API -----------------------------------------------------------------------
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
