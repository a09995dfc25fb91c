"""AsyncDatabaseTestCase: a SAVEPOINT and an AsyncSession per test, on the database's own event loop."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import importlib.util
import inspect
import sys
import unittest
from collections.abc import Awaitable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any, Callable, ClassVar, TypeVar

from sqlalchemy import MetaData, func, select

from ..core import CapturedQueries, TestDatabase
from ..exceptions import ConfigurationError, NoDatabaseError
from ._classes import ClassState, check_class, own_class_cleanups, resolve_database

if TYPE_CHECKING:  # annotations only: importing dbtestcase needs neither greenlet nor an async driver
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

__unittest = True  # failure tracebacks start in the user's code

T = TypeVar("T")


def default_async_url() -> str:
    """``postgresql+asyncpg://`` where asyncpg is installed, else psycopg's async driver: alone, such a URL
    means ``$DBTESTCASE_URL``'s server, else a throwaway one."""
    return "postgresql+asyncpg://" if importlib.util.find_spec("asyncpg") else "postgresql+psycopg_async://"


class AsyncDatabaseTestCase(unittest.IsolatedAsyncioTestCase):
    """An IsolatedAsyncioTestCase whose every test runs in its own SAVEPOINT, rolled back after the test.

    ``self.session`` is an :class:`~sqlalchemy.ext.asyncio.AsyncSession` on the shared
    :class:`~sqlalchemy.ext.asyncio.AsyncConnection` (``join_transaction_mode="create_savepoint"``):
    ``await session.commit()`` in the code under test stays inside the test. The database is set up
    with the same functions as for :class:`~dbtestcase.DatabaseTestCase`, given an async URL
    (``setup_module(Base.metadata, url="postgresql+asyncpg://...")``).

    An asyncpg connection is bound to the event loop it was made in, so every test of the class runs
    on the database's loop (:attr:`TestDatabase.loop`) instead of a new loop per test; tasks a test
    leaves running are cancelled after it, as IsolatedAsyncioTestCase does. ``setUp``/``tearDown``
    and ``asyncSetUp``/``asyncTearDown`` need no ``super()`` call.

    .. versionadded:: 0.2
    """

    #: A :class:`~dbtestcase.TestDatabase` on an async URL for this class (set up here if it is not yet).
    database: ClassVar[TestDatabase | None] = None
    #: Tables for a database of the class's own, used when no other database is configured.
    metadata: ClassVar[MetaData | None] = None
    #: Async URL for the class's own database (``metadata``); default ``postgresql+asyncpg://``, which
    #: means ``$DBTESTCASE_URL``'s server, else a throwaway one (psycopg's async driver without asyncpg).
    database_url: ClassVar[str | None] = None

    _dbtc_state: ClassVar[ClassState]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own_class_cleanups(cls)
        check_class(cls)
        _refuse_sync_only(cls)

    # --- hooks --------------------------------------------------------------------------------
    def create_session(self, connection: AsyncConnection) -> AsyncSession:
        """Make the test's AsyncSession; override to pass options (keep ``create_savepoint``).

        ``expire_on_commit=False``, as SQLAlchemy advises for asyncio: an attribute expired by a commit
        would be loaded lazily, which asyncio cannot do implicitly (``MissingGreenlet``).
        """
        from sqlalchemy.ext.asyncio import AsyncSession

        return AsyncSession(bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False)

    # --- what tests use ------------------------------------------------------------------------
    @property
    def session(self) -> AsyncSession:
        """This test's AsyncSession, made on first use."""
        session = self.__dict__.get("_dbtc_session")
        if session is None:
            session = self.__dict__["_dbtc_session"] = self.create_session(self.connection)
        return session

    @property
    def connection(self) -> AsyncConnection:
        """The shared AsyncConnection, inside this test's savepoint."""
        return self.test_database.async_connection

    @property
    def test_database(self) -> TestDatabase:
        """The :class:`~dbtestcase.TestDatabase` this class runs on."""
        return type(self)._dbtc_class_setup().database

    # --- assertions -----------------------------------------------------------------------------
    def captureQueries(self) -> CapturedQueries:  # noqa: N802 - unittest's naming
        """A context manager collecting the SQL statements run on the test's connection (see
        :meth:`DatabaseTestCase.captureQueries`); a plain ``with`` around awaited code."""
        return CapturedQueries(self.test_database.connection)

    @contextlib.contextmanager
    def assertNumQueries(self, number: int) -> Iterator[CapturedQueries]:  # noqa: N802 - unittest's naming
        """Fail unless the ``with`` block runs exactly ``number`` SQL statements."""
        with self.captureQueries() as queries:
            yield queries
        if len(queries) != number:
            self.fail(f"{len(queries)} queries were run, {number} expected:\n{queries.describe()}")

    def assertRowCount(self, model: Any, number: int, msg: str | None = None) -> Coroutine[Any, Any, None]:  # noqa: N802
        """Fail unless the table of ``model`` holds ``number`` rows now: ``await self.assertRowCount(...)``.

        Pending objects of ``self.session`` are flushed first. A call that is never awaited would check
        nothing, so it fails the test at its end, naming the fix.

        .. versionchanged:: 0.3
           A call left without ``await`` fails the test.
        """
        coroutine = self._dbtc_row_count(model, number, msg)
        self.__dict__.setdefault("_dbtc_assertions", []).append(coroutine)
        return coroutine

    async def _dbtc_row_count(self, model: Any, number: int, msg: str | None) -> None:
        table = getattr(model, "__table__", model)
        await self.session.flush()
        found = await self.session.scalar(select(func.count()).select_from(table))
        if found != number:
            name = getattr(model, "__name__", getattr(table, "name", model))
            self.fail(self._formatMessage(msg, f"{name} holds {found} rows, {number} expected"))

    # --- unittest plumbing ---------------------------------------------------------------------
    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        with contextlib.suppress(NoDatabaseError):  # decided at the first test, as DatabaseTestCase does
            cls._dbtc_class_setup()

    @classmethod
    def _dbtc_class_setup(cls) -> ClassState:
        """Find or set up the class's database, once per class; it must be async."""
        __tracebackhide__ = True
        state = cls.__dict__.get("_dbtc_state")
        if state is not None and not state.closed:
            return state
        database, owned = resolve_database(cls, default_async_url())
        if not database.is_async:
            if owned:
                database.teardown()
            raise ConfigurationError(
                f"{cls.__qualname__} is an AsyncDatabaseTestCase, but its database {database.url} is not async: "
                "set it up with an async URL, such as setup_module(Base.metadata, url='postgresql+asyncpg://...') "
                "(or 'postgresql+asyncpg://' alone for $DBTESTCASE_URL's server or a throwaway one)."
            )
        state = cls._dbtc_state = ClassState(database, owned)
        cls.addClassCleanup(cls._dbtc_class_teardown)
        return state

    @classmethod
    def _dbtc_class_teardown(cls) -> None:
        state = cls.__dict__.get("_dbtc_state")
        if state is not None and not state.closed:
            state.closed = True
            if state.owned:
                state.database.teardown()

    def run(self, result: unittest.TestResult | None = None) -> unittest.TestResult | None:
        # Not IsolatedAsyncioTestCase.run, which would make a new event loop for this test: the
        # shared connection lives on the database's loop, so the test runs there (see _dbtc_await).
        self.__dict__["_dbtc_loop"] = None
        try:
            return unittest.TestCase.run(self, result)
        finally:
            self._dbtc_finish()

    def debug(self) -> None:
        try:
            unittest.TestCase.debug(self)
        finally:
            self._dbtc_finish()

    def _callSetUp(self) -> None:  # noqa: N802 - unittest's hook
        self._dbtc_context = contextvars.copy_context()
        database = type(self)._dbtc_class_setup().database
        self.__dict__["_dbtc_loop"] = database.loop
        asyncio.set_event_loop(database.loop)
        level = self._dbtc_await(database.run_sync(database.savepoints.test_level))
        self.addCleanup(self._dbtc_end, database, level)
        self.addCleanup(self._dbtc_check_awaited)  # runs before the rollback: cleanups run last-in first-out
        self._dbtc_context.run(self.setUp)
        if _overrides(self, "asyncSetUp"):  # a task per call costs: skip the empty default
            self._dbtc_await(self.asyncSetUp())

    def _callTestMethod(self, method: Callable[[], Any]) -> None:  # noqa: N802
        self._dbtc_maybe_await(self._dbtc_context.run(method))

    def _callTearDown(self) -> None:  # noqa: N802
        if _overrides(self, "asyncTearDown"):
            self._dbtc_await(self.asyncTearDown())
        self._dbtc_context.run(self.tearDown)

    def _callCleanup(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> None:  # noqa: N802
        self._dbtc_maybe_await(self._dbtc_context.run(function, *args, **kwargs))

    def _dbtc_check_awaited(self) -> None:
        """Fail the test if an assertion coroutine was never awaited (it checked nothing)."""
        never = [c for c in self.__dict__.pop("_dbtc_assertions", []) if inspect.getcoroutinestate(c) == "CORO_CREATED"]
        for coroutine in never:
            coroutine.close()  # no "never awaited" RuntimeWarning on top of this failure
        if never:
            raise self.failureException(
                f"{len(never)} call(s) of self.assertRowCount(...) in {self.id()} were never awaited, so they checked "
                "nothing: write await self.assertRowCount(...)."
            )

    async def _dbtc_end(self, database: TestDatabase, level: str) -> None:
        session = self.__dict__.pop("_dbtc_session", None)
        await database.run_sync(database.savepoints.end_test, level, session.sync_session if session is not None else None)

    def _dbtc_maybe_await(self, value: Any) -> Any:
        return self._dbtc_await(value) if isinstance(value, Awaitable) else value

    def _dbtc_await(self, awaitable: Awaitable[T]) -> T:
        """Run ``awaitable`` to its end on the database's loop, in this test's context."""
        loop = self.__dict__.get("_dbtc_loop")
        if loop is None:
            raise ConfigurationError(f"{self.id()}: no event loop yet; the database is set up in setUp.")
        coroutine: Coroutine[Any, Any, T] = awaitable if isinstance(awaitable, Coroutine) else _wrap(awaitable)
        if sys.version_info >= (3, 11):
            task = loop.create_task(coroutine, context=self._dbtc_context)
        else:
            task = self._dbtc_context.run(loop.create_task, coroutine)
        return loop.run_until_complete(task)

    def _dbtc_finish(self) -> None:
        """Cancel the tasks the test left running, and unset the event loop."""
        loop = self.__dict__.pop("_dbtc_loop", None)
        if loop is None or loop.is_closed():
            return
        try:
            leftovers = [task for task in asyncio.all_tasks(loop) if not task.done()]
            for task in leftovers:
                task.cancel()
            if leftovers:
                loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
        finally:
            asyncio.set_event_loop(None)


def _refuse_sync_only(cls: type) -> None:
    """Refuse what only DatabaseTestCase runs, rather than ignore it silently."""
    name = cls.__qualname__
    if "setUpTestData" in cls.__dict__:
        raise ConfigurationError(
            f"{name}.setUpTestData would never run: AsyncDatabaseTestCase does not run setUpTestData (a sync "
            "classmethod with a sync Session); create the rows in asyncSetUp(), which runs inside each test's "
            "savepoint, or make the class a dbtestcase.DatabaseTestCase."
        )
    for attribute, instead in (("reset_sequences", "compare rows by value rather than by id"),
                               ("bind_sessions", "pass self.session to the code under test")):
        if cls.__dict__.get(attribute):
            raise ConfigurationError(
                f"{name}.{attribute} is not supported by AsyncDatabaseTestCase yet, and would be ignored: remove it "
                f"and {instead}, or make the class a dbtestcase.DatabaseTestCase."
            )


def _overrides(test: unittest.IsolatedAsyncioTestCase, name: str) -> bool:
    return getattr(type(test), name) is not getattr(unittest.IsolatedAsyncioTestCase, name)


async def _wrap(awaitable: Awaitable[T]) -> T:
    return await awaitable
