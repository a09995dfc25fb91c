"""Testing async application code with AsyncDatabaseTestCase (asyncpg, or psycopg 3 async).

- ``setup_module(Base.metadata, url="postgresql+asyncpg://")``: an async URL; alone, it means the
  server of $DBTESTCASE_URL, else a throwaway PostgreSQL, with asyncpg;
- ``self.session`` is an AsyncSession inside the test's savepoint: the service's ``await commit()``
  stays in the test, and the next test starts on a blank slate.
"""

from __future__ import annotations

import importlib.util
import unittest

import dbtestcase

DRIVER = "asyncpg" if importlib.util.find_spec("asyncpg") else "psycopg_async"
if importlib.util.find_spec("greenlet") is None or importlib.util.find_spec(DRIVER.split("_")[0]) is None:
    raise unittest.SkipTest("install 'dbtestcase[async]' (asyncpg and greenlet) to run the async example")

from bookshop import aio  # noqa: E402
from bookshop.models import Base, Book  # noqa: E402


def setUpModule():
    dbtestcase.setup_module(Base.metadata, url=f"postgresql+{DRIVER}://")


def tearDownModule():
    dbtestcase.teardown_module()


class AsyncPublishTests(dbtestcase.AsyncDatabaseTestCase):
    async def test_publish_commits(self):
        """The service commits; the test sees the book."""
        book = await aio.publish(self.session, "Dune", "Frank Herbert")
        self.assertIsNotNone(book.id)
        self.assertEqual(await aio.count_books(self.session), 1)
        await self.assertRowCount(Book, 1)

    async def test_blank_slate(self):
        """Nothing of the other test is left."""
        self.assertEqual(await aio.count_books(self.session), 0)

    async def test_two_books_two_queries(self):
        """assertNumQueries works around awaited code."""
        await aio.publish(self.session, "Emma", "Jane Austen")
        with self.assertNumQueries(1):
            self.assertEqual(await aio.count_books(self.session), 1)


if __name__ == "__main__":
    unittest.main()
