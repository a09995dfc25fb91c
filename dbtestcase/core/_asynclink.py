"""Async URLs (asyncpg, psycopg async): the AsyncConnection and the event loop it lives on.

An asyncpg connection is bound to the event loop it was made in, so a TestDatabase on an async URL
owns one loop for its whole life: the connection is made there, and AsyncDatabaseTestCase runs every
test on it. The kit's own work (savepoints, schema) is the same sync code as everywhere, run on the
AsyncConnection's sync facade through ``run_sync``. SQLAlchemy's asyncio extension (and greenlet) is
imported only here, and only for an async URL.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import DBAPIError

from .._urls import mask
from ..exceptions import ConnectionFailedError, DriverMissingError
from . import _engine

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

T = TypeVar("T")


def is_async(url: URL) -> bool:
    """Tell whether ``url`` names an asyncio driver (``postgresql+asyncpg``, ``+psycopg_async``, ...)."""
    try:
        return bool(url.get_dialect().is_async)
    except Exception:  # noqa: BLE001 - an unknown dialect: create_engine reports it clearly
        return False


class AsyncLink:
    """An AsyncEngine, its one AsyncConnection and the event loop they live on.

    Raises:
        DriverMissingError: the driver, or greenlet, is not installed.
    """

    def __init__(self, url: URL, *, echo: bool, engine_options: dict[str, Any]) -> None:
        try:
            import greenlet  # noqa: F401 - SQLAlchemy's asyncio extension runs on it
        except ImportError:
            raise DriverMissingError(
                f"the async URL {mask(url)} needs greenlet, which is not installed: "
                "pip install greenlet (or 'sqlalchemy[asyncio]'), or use 'postgresql+psycopg2://'."
            ) from None
        self.engine: AsyncEngine = _engine.create_async_engine(url, echo=echo, **engine_options)
        self.loop = asyncio.new_event_loop()
        self.connection: AsyncConnection | None = None

    @property
    def sync_engine(self) -> Engine:
        return self.engine.sync_engine

    def connect(self) -> Connection:
        """Open the AsyncConnection on the loop; return its sync facade.

        Raises:
            ConnectionFailedError: the server did not answer or refused the login.
        """
        try:
            self.connection = self.loop.run_until_complete(self.engine.connect())
        except (DBAPIError, OSError, asyncio.TimeoutError) as exc:  # asyncpg's own, before SQLAlchemy wraps them
            # (asyncio.TimeoutError is an OSError only from Python 3.11)
            raise ConnectionFailedError(_engine.explain(self.engine.url, exc), exc) from None
        return self.connection.sync_connection  # type: ignore[return-value]

    def run(self, function: Callable[..., T], *args: Any) -> T:
        """Run the sync ``function(*args)`` on the connection's sync facade, from outside the loop."""
        return self.loop.run_until_complete(self.run_async(function, *args))

    async def run_async(self, function: Callable[..., T], *args: Any) -> T:
        """Run the sync ``function(*args)`` on the connection's sync facade, from a coroutine on the loop."""
        assert self.connection is not None
        return await self.connection.run_sync(lambda _connection: function(*args))

    def close(self) -> None:
        """Close the connection (the server rolls back what it holds), dispose of the engine, close the loop."""
        loop, connection, self.connection = self.loop, self.connection, None
        if loop.is_closed():
            return
        try:
            if connection is not None:
                with contextlib.suppress(Exception):  # a dead server: nothing is left to roll back
                    loop.run_until_complete(connection.close())
            loop.run_until_complete(self.engine.dispose())
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()
