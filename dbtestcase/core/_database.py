"""TestDatabase: the engine, the one connection, the outer transaction and the schema in it."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import MetaData, Table
from sqlalchemy.engine import URL, Connection, Engine

from .. import backends
from .._urls import UrlLike, configured_url, mask
from ..exceptions import ConfigurationError
from . import _resolve as resolve
from . import _schema as schema
from ._outer import Outer, Plan, close, open_outer
from ._reset import check_arguments
from ._savepoints import SavepointStack

if TYPE_CHECKING:  # annotations only: importing dbtestcase needs neither greenlet nor an async driver
    from sqlalchemy.ext.asyncio import AsyncConnection

    from ._asynclink import AsyncLink

T = TypeVar("T")

log = logging.getLogger(__name__)


class TestDatabase:
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
        allow_destructive: let the reset strategy and ``drop_tables`` work on a database whose name lacks
            the word "test" (also ``DBTESTCASE_ALLOW_DESTRUCTIVE=1``).
        base_data: called with the connection after the tables are created, to insert data every test
            starts from (committed with the reset strategy, inside the outer transaction otherwise).
        alembic_config: path of an ``alembic.ini``: build the schema with Alembic's ``upgrade head`` on the
            shared connection (inside the outer transaction where DDL is transactional) instead of
            ``create_all``, then check it against ``metadata``.
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
        self.metadata, self.strategy, self.allow_destructive, self.base_data = metadata, strategy, allow_destructive, base_data
        self._create = schema.migrations(alembic_config, metadata) if alembic_config else None
        self.drop_tables, self.lock_timeout, self.own_schema = drop_tables, float(lock_timeout), own_schema
        self._given_url = configured_url(url)  # parse early: a bad URL fails at construction
        self._echo, self._engine_options = echo, dict(engine_options or {})
        self._outer: Outer | None = None  # the current setup's connection and what it built
        self._last: Outer | None = None  # the previous setup's, whose schema_name and tables stay readable
        self._plan: Plan | None = None
        self._resolved: URL | None = None  # the URL set up on (a throwaway server's, when none was given)
        self._pid = 0  # the process that set it up: a forked child must not use that connection

    # --- public state -------------------------------------------------------------------------
    @property
    def url(self) -> URL:
        """The database URL (its ``str()`` hides the password); known once set up if none was given."""
        if self._outer is not None:
            return self._outer.engine.url
        if self._given_url is None:
            raise ConfigurationError("the URL of a throwaway server is known after setup(): call setup() first.")
        return self._given_url

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine; available after :meth:`setup`."""
        return self._set_up().engine

    @property
    def connection(self) -> Connection:
        """The one shared connection, inside the outer transaction; available after :meth:`setup`."""
        return self._set_up().connection

    @property
    def savepoints(self) -> SavepointStack:
        """The SAVEPOINTs held on :attr:`connection`: where the runner adapters begin and end tests.

        .. versionadded:: 0.3
        """
        savepoints = self._set_up().savepoints
        assert savepoints is not None
        return savepoints

    @property
    def checks_constraints(self) -> bool:
        """Whether deferred constraints are checked at the end of every test (the schema has some)."""
        outer = self._outer or self._last
        return outer is not None and outer.checks_constraints

    @property
    def preexisting_tables(self) -> list[Table]:
        """Tables of ``metadata`` that existed before setup(), used as they are and never created or dropped."""
        outer = self._outer or self._last
        return outer.preexisting_tables if outer is not None else []

    @property
    def schema_name(self) -> str | None:
        """On PostgreSQL, the schema of this database's own that holds its tables (see ``own_schema``), else None.

        After :meth:`teardown`, the last setup's (the schema itself is gone with the outer transaction).
        """
        outer = self._outer or self._last
        return outer.schema_name if outer is not None else None

    @property
    def _async_link(self) -> AsyncLink | None:
        return self._outer.link if self._outer is not None else None

    @property
    def is_async(self) -> bool:
        """Whether it is set up on an async URL (asyncpg, psycopg async); use :attr:`async_connection` then.

        .. versionadded:: 0.2
        """
        return self._async_link is not None

    @property
    def async_connection(self) -> AsyncConnection:
        """The shared :class:`~sqlalchemy.ext.asyncio.AsyncConnection` of a database set up on an async URL.

        It lives on :attr:`loop`; :attr:`connection` is its sync facade.

        .. versionadded:: 0.2
        """
        link = self._set_up().link
        if link is None or link.connection is None:
            raise ConfigurationError(
                f"{self!r} has no async connection: set it up with an async URL such as "
                "'postgresql+asyncpg://...' or 'postgresql+psycopg_async://...'."
            )
        return link.connection

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the async connection lives on (an asyncpg connection cannot change loops).

        .. versionadded:: 0.2
        """
        if self._async_link is None:
            raise ConfigurationError(f"{self!r} has no event loop: it is not set up on an async URL.")
        return self._async_link.loop

    async def run_sync(self, function: Callable[..., T], *args: Any) -> T:
        """From a coroutine on :attr:`loop`: run the sync ``function(*args)``, which may use :attr:`connection`.

        .. versionadded:: 0.2
        """
        if self._async_link is None:
            return function(*args)
        return await self._async_link.run_async(function, *args)

    @property
    def is_set_up(self) -> bool:
        """True between :meth:`setup` and :meth:`teardown`, in the process that called :meth:`setup`."""
        return self._outer is not None and self._pid == os.getpid()

    def _inherited(self) -> bool:
        """Set up by the process this one was forked from: the connection is that process's."""
        return self._outer is not None and self._pid != os.getpid()

    def _set_up(self) -> Outer:
        """The current setup, in the process that made it; else a ConfigurationError that says why not."""
        if self._outer is None:
            raise ConfigurationError(f"{self!r} is not set up: call setup() (or use it as a context manager) first.")
        if self._inherited():
            raise ConfigurationError(
                f"{self!r} was set up in process {self._pid}, which this process (pid {os.getpid()}) was forked "
                "from: its connection belongs to that process (nose2's mp plugin forks its workers after importing "
                "the tests). Call setup() in this process, or set the database up in setUpModule() or setUpClass() "
                "rather than at import."
            )
        return self._outer

    def __repr__(self) -> str:
        outer, given, metadata = getattr(self, "_outer", None), getattr(self, "_given_url", None), getattr(self, "metadata", None)
        where = mask(outer.engine.url if outer is not None else given or "throwaway server")
        return f"<TestDatabase {where} tables={len(metadata.tables) if metadata is not None else '?'}>"

    # --- lifecycle ---------------------------------------------------------------------------
    def setup(self) -> TestDatabase:
        """Connect, begin the outer transaction and create the tables; returns ``self``.

        Calling it again while set up does nothing.

        Raises:
            ConnectionFailedError: the server did not answer or refused the login.
            DriverMissingError: the URL's driver is not installed.
            ConfigurationError: ``drop_tables=True`` and some of the tables exist, or existing tables hold rows.
            DestructiveActionError: the reset strategy or ``drop_tables`` where no word of the database's name is "test".
            NonTransactionalTableError: a MySQL/MariaDB table is not InnoDB.
        """
        if self._inherited():
            # Never use, close or garbage-collect the parent's connection here: closing it would end the
            # parent's session, and a rollback would undo its outer transaction. Keep it, untouched.
            _inherited.append(self._outer)
            self._outer = None
            resolve.live.discard(self)
        if self._outer is not None:
            return self
        self._plan = Plan(self.metadata, self.strategy, self.drop_tables, self.lock_timeout, self.allow_destructive,
                          self.base_data, self._create, self.own_schema, self._echo, self._engine_options)
        self._resolved = resolve.resolve_url(self._given_url)
        self._outer = open_outer(self._resolved, self._plan, self._rebuild)
        self._pid = os.getpid()
        resolve.live.add(self)
        log.debug("set up %r", self)
        return self

    def teardown(self) -> None:
        """Roll back the outer transaction, close the connection and dispose of the engine.

        Safe to call twice. With ``drop_tables=True`` the tables are then dropped with
        :func:`dbtestcase.drop_all`.
        """
        outer, plan = self._outer, self._plan
        if outer is None or plan is None or self._inherited():
            return  # not set up, or set up by the parent of this forked process: not ours to end
        self._outer, self._last = None, outer
        resolve.live.discard(self)
        close(outer, plan)
        log.debug("tore down %r", self)

    def _rebuild(self) -> None:
        """A test ended the outer transaction: drop what it may have committed, and set up afresh on the same URL."""
        outer, plan = self._outer, self._plan
        assert outer is not None and plan is not None and self._resolved is not None
        log.warning("a test ended the outer transaction of %r: building it again", self)
        close(outer, plan, ended=True)
        self._outer = open_outer(self._resolved, plan, self._rebuild)

    def __enter__(self) -> TestDatabase:
        return self.setup()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.teardown()


# Connections of databases set up before a fork, kept referenced (and so never closed) in the child.
_inherited: list[Any] = []
