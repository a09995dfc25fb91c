"""TestDatabase: the engine, the one connection, the outer transaction and the schema in it."""

from __future__ import annotations

import atexit
import logging
import weakref
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

from sqlalchemy import MetaData, Table
from sqlalchemy.engine import URL, Connection, Engine

from . import backends, schema
from . import engine as _engine
from .exceptions import ConfigurationError
from .reset import check_arguments, check_transactional, drop_all, reset_schema
from .savepoints import SavepointLevels
from .urls import UrlLike, configured_url, mask, parse_url

log = logging.getLogger(__name__)


class TestDatabase(SavepointLevels):
    """One connection to the test database, inside one outer transaction that is never committed.

    ``setup()`` connects, begins the outer transaction and creates the tables of ``metadata``
    inside it; ``teardown()`` rolls it back, so on PostgreSQL (transactional DDL) the tables
    and every row vanish, also when the process is killed: the server rolls back an open
    transaction whose connection dies.

    Args:
        metadata: the tables to create (``Base.metadata``).
        url: the database; ``None`` reads ``$DBTESTCASE_URL``, and without it a throwaway
            PostgreSQL server is started (once per process); ``mysql://`` alone (no host, no
            database) starts a throwaway MariaDB.
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

    .. versionchanged:: 0.2
       ``strategy``, ``allow_destructive`` and ``base_data``; MySQL/MariaDB and SQLite.

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
        if self._engine is None:
            raise ConfigurationError(f"{self!r} is not set up: call setup() (or use it as a context manager) first.")
        return self._engine

    @property
    def connection(self) -> Connection:
        """The one shared connection, inside the outer transaction; available after :meth:`setup`."""
        if self._connection is None:
            raise ConfigurationError(f"{self!r} is not set up: call setup() (or use it as a context manager) first.")
        return self._connection

    @property
    def is_set_up(self) -> bool:
        """True between :meth:`setup` and :meth:`teardown`."""
        return self._connection is not None

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
        if self._connection is not None:
            return self
        url = _throwaway_url(self._given_url)
        engine = _engine.create_engine(url, echo=self._echo, **self._engine_options)
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
                self._begin(connection)
                if strategy == "savepoint" and not self.drop_tables:
                    self.preexisting_tables = schema.create_in_transaction(
                        connection, self.metadata, self.lock_timeout, self._create
                    )
                if strategy == "savepoint" and self.base_data is not None:
                    self.base_data(connection)
                check_transactional(connection, self.metadata)
                self.checks_constraints = schema.has_deferrable_constraints(connection, self.metadata)
                backends.guard_implicit_commits(connection)
            except BaseException:
                connection.close()
                raise
        except BaseException:
            engine.dispose()
            raise
        self._engine, self._connection = engine, connection
        _live.add(self)
        log.debug("set up %r", self)
        return self

    def teardown(self) -> None:
        """Roll back the outer transaction, close the connection and dispose of the engine.

        Safe to call twice. With ``drop_tables=True`` the tables are then dropped with
        :func:`dbtestcase.drop_all`.
        """
        connection, engine = self._connection, self._engine
        if connection is None or engine is None:
            return
        self._connection = self._engine = None
        self._levels.clear()
        _live.discard(self)
        try:
            try:
                if self._server_side_begin:
                    connection.exec_driver_sql("ROLLBACK")
                    backends.release_transaction(connection)
            finally:
                connection.close()  # rolls back SQLAlchemy's own transaction, if that is the outer one
            if self.drop_tables:
                drop_all(engine, self.metadata, lock_timeout=self.lock_timeout, allow_destructive=True)
        finally:
            engine.dispose()
        log.debug("tore down %r", self)

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


def _throwaway_url(url: URL | None) -> URL:
    """``url``, or a throwaway server's: PostgreSQL for no URL, MariaDB for ``mysql://`` alone."""
    if url is not None and not (
        backends.is_mysql(url.get_backend_name()) and not url.host and not url.database and not url.query
    ):
        return url
    if url is None:
        from .server import shared_server  # imported late: most runs give a URL

        url = parse_url(shared_server().url)
    else:
        from .mariadb_server import shared_mariadb_server

        url = parse_url(shared_mariadb_server().url)
    # atexit runs handlers last-in first-out: ours must close before the server stops.
    atexit.unregister(_teardown_leftovers)
    atexit.register(_teardown_leftovers)
    return url


# --- the module-level API -----------------------------------------------------------------------
_active: list[TestDatabase] = []
_live: weakref.WeakSet[TestDatabase] = weakref.WeakSet()


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


def _teardown_leftovers() -> None:
    """Databases set up at import time and never torn down: close them before the server stops."""
    _active.clear()
    for database in list(_live):
        try:
            database.teardown()
        except Exception:  # the process is exiting: log, do not mask the real outcome
            log.warning("could not tear down %r at exit", database, exc_info=True)


atexit.register(_teardown_leftovers)
