"""Connection failures give one actionable line, and the password never shows."""

from __future__ import annotations

import logging
import unittest

import sqlalchemy as sa

from dbtestcase import ConnectionFailedError, TestDatabase
from tests.functional.support import server_url, skip_unless

METADATA = sa.MetaData()
sa.Table("never_created", METADATA, sa.Column("id", sa.Integer, primary_key=True))


@skip_unless("postgresql", why="the messages checked are PostgreSQL's")
class ConnectErrors(unittest.TestCase):
    def setUp(self) -> None:
        real = server_url()
        self.host, self.port = real.host or "127.0.0.1", real.port or 5432
        self.logs: list[str] = []
        handler = logging.Handler(logging.DEBUG)
        handler.emit = lambda record: self.logs.append(record.getMessage())  # type: ignore[method-assign]
        root = logging.getLogger()
        root.addHandler(handler)
        previous = root.level
        root.setLevel(logging.DEBUG)
        self.addCleanup(root.setLevel, previous)
        self.addCleanup(root.removeHandler, handler)

    def fail_to_set_up(self, url: str) -> str:
        with self.assertRaises(ConnectionFailedError) as caught:
            TestDatabase(METADATA, url).setup()
        message = str(caught.exception)
        self.assertNotIn("s3cret", message)
        self.assertFalse([line for line in self.logs if "s3cret" in line], "a log line shows the password")
        self.assertEqual(len(message.splitlines()), 1, message)
        return message

    def test_server_not_answering(self) -> None:
        """Nothing listens on the port: the masked URL and what to check."""
        message = self.fail_to_set_up("postgresql://ann:s3cret@127.0.0.1:1/test")
        self.assertTrue(message.startswith("could not connect to postgresql+psycopg2://ann:***@127.0.0.1:1/test ("), message)
        self.assertIn("is the server running and listening there?", message)

    def test_wrong_credentials(self) -> None:
        """An unknown login: names the user, hides the password, says to check the URL."""
        message = self.fail_to_set_up(f"postgresql://no_such_role_x:s3cret@{self.host}:{self.port}/postgres")
        self.assertIn(f"the server at {self.host}:{self.port} refused the login of user 'no_such_role_x'", message)
        self.assertIn("check the user name and password in the URL", message)

    def test_missing_database(self) -> None:
        """A database that does not exist: says how to create it."""
        message = self.fail_to_set_up(f"postgresql://postgres:s3cret@{self.host}:{self.port}/no_such_db_x")
        self.assertIn(f"the database 'no_such_db_x' does not exist on {self.host}:{self.port}", message)
        self.assertIn("create it (createdb no_such_db_x)", message)

    def test_chained_cause(self) -> None:
        """The driver's exception stays attached for debugging."""
        with self.assertRaises(ConnectionFailedError) as caught:
            TestDatabase(METADATA, "postgresql://ann@127.0.0.1:1/test").setup()
        self.assertIsInstance(caught.exception.__cause__, sa.exc.OperationalError)
        self.assertIsInstance(caught.exception, ConnectionError)
