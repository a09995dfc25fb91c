"""Connection failures give one actionable line, and the password never shows."""

from __future__ import annotations

import logging
import unittest

import sqlalchemy as sa

from dbtestcase import ConnectionFailedError, TestDatabase
from tests.functional.support import server_url, skip_unless

METADATA = sa.MetaData()
sa.Table("never_created", METADATA, sa.Column("id", sa.Integer, primary_key=True))


class FailureChecks(unittest.TestCase):
    """What every connection failure must be: one line, no password, in no log line either."""

    def setUp(self) -> None:
        real = server_url()
        self.host, self.port = real.host or "127.0.0.1", real.port or {"postgresql": 5432}.get(real.get_backend_name(), 3306)
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


@skip_unless("postgresql", why="the messages checked are PostgreSQL's")
class ConnectErrors(FailureChecks):
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

    def test_driver_error_kept_but_not_chained(self) -> None:
        """The driver's exception stays attached for debugging, without its tracebacks burying the message."""
        with self.assertRaises(ConnectionFailedError) as caught:
            TestDatabase(METADATA, "postgresql://ann@127.0.0.1:1/test").setup()
        self.assertIsInstance(caught.exception.driver_error, sa.exc.OperationalError)
        self.assertIsNone(caught.exception.__cause__)
        self.assertTrue(caught.exception.__suppress_context__)
        self.assertIsInstance(caught.exception, ConnectionError)

    def test_password_in_the_query_string_is_masked(self) -> None:
        """A password passed as ?password=... is masked like one in the URL's userinfo."""
        message = self.fail_to_set_up("postgresql://ann@127.0.0.1:1/test?password=s3cret")
        self.assertIn("postgresql+psycopg2://ann@127.0.0.1:1/test?password=***", message)


@skip_unless("mysql", "mariadb", why="the messages checked are MySQL's and MariaDB's")
class MysqlConnectErrors(FailureChecks):
    """MySQL/MariaDB failures (1045, 2003, 1049) get the same one-line ConnectionFailedError."""

    def test_server_not_answering(self) -> None:
        """2003: nothing listens on the port."""
        message = self.fail_to_set_up("mysql+pymysql://ann:s3cret@127.0.0.1:1/test")
        self.assertTrue(message.startswith("could not connect to mysql+pymysql://ann:***@127.0.0.1:1/test ("), message)
        self.assertIn("pass mysql://, and dbtestcase starts a throwaway MariaDB", message)

    def test_wrong_credentials(self) -> None:
        """1045: access denied."""
        message = self.fail_to_set_up(f"mysql+pymysql://no_such_user_x:s3cret@{self.host}:{self.port}/test")
        self.assertIn(f"the server at {self.host}:{self.port} refused the login of user 'no_such_user_x'", message)

    def test_missing_database(self) -> None:
        """1049: unknown database."""
        message = self.fail_to_set_up(server_url().set(database="no_such_db_test").render_as_string(hide_password=False))
        self.assertIn("the database 'no_such_db_test' does not exist", message)
        self.assertIn("create it (CREATE DATABASE no_such_db_test)", message)
