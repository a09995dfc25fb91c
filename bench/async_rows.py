"""The async rows of make bench: AsyncDatabaseTestCase on asyncpg, timed in the same rounds as the sync floor."""

from __future__ import annotations

import importlib.util
import unittest
from typing import Callable

import sqlalchemy as sa
from common import unittest_runner

import dbtestcase


class PlainAsync(unittest.IsolatedAsyncioTestCase):
    """An async test with nothing in it and no database: what IsolatedAsyncioTestCase itself costs."""

    async def test_empty(self) -> None:
        pass


def available() -> bool:
    return all(importlib.util.find_spec(name) for name in ("asyncpg", "greenlet"))


def async_approaches(url: sa.engine.URL, metadata: sa.MetaData) -> tuple[dict[str, Callable[[], None]], Callable[[], None]]:
    """Approaches to time (a name and a one-test runner each), and the function that tears them down.

    The async database runs on the same server as the sync one, beside it: each TestDatabase
    creates its tables in a schema of its own.
    """
    database = dbtestcase.TestDatabase(metadata, url.set(drivername="postgresql+asyncpg")).setup()

    class KitAsync(dbtestcase.AsyncDatabaseTestCase):
        async def test_empty(self) -> None:
            pass

        async def test_session(self) -> None:
            (await self.session.execute(sa.select(1))).all()

    KitAsync.database = database

    def teardown() -> None:
        KitAsync.doClassCleanups()
        database.teardown()

    return {
        "plain IsolatedAsyncioTestCase, empty": unittest_runner(PlainAsync, "test_empty"),
        "kit async, empty": unittest_runner(KitAsync, "test_empty"),
        "kit async, session used": unittest_runner(KitAsync, "test_session"),
    }, teardown


def report_async(results: dict[str, float]) -> None:
    """Print the async rows against the sync floor (and the sync kit) of the same body."""
    if "kit async, empty" not in results:
        print("  async rows: skipped (asyncpg or greenlet is not installed)")
        return
    print("  async (asyncpg), unittest's own cost taken out:")
    for body in ("empty", "session used"):
        value, floor, kit = results[f"kit async, {body}"], results[f"floor, {body}"], results[f"kit, {body}"]
        ratio = f"{value / floor:.2f}x floor, {value / kit:.2f}x sync kit"
        print(f"  {'kit async, ' + body:36} {value * 1e6:8.0f}us {ratio:>28}")
    plain = results["plain IsolatedAsyncioTestCase, empty"]
    print(f"  {'plain IsolatedAsyncioTestCase, empty':36} {plain * 1e6:8.0f}us {'(a new event loop per test)':>28}")
