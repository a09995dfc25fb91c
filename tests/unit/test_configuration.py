"""Bad arguments and class attributes fail early, naming the thing and the fix (no server needed)."""

from __future__ import annotations

import os
import unittest
from unittest import mock

import sqlalchemy as sa

import dbtestcase
from dbtestcase import (
    ConfigurationError,
    DbTestCaseError,
    DriverMissingError,
    ServerNotFoundError,
    TestDatabase,
    backends,
)
from dbtestcase._urls import parse_url
from dbtestcase.core import create_engine

METADATA = sa.MetaData()
sa.Table("t", METADATA, sa.Column("id", sa.Integer, primary_key=True))


class Arguments(unittest.TestCase):
    def test_metadata_must_be_metadata(self) -> None:
        """A Base class instead of Base.metadata is named in the message."""
        with self.assertRaises(ConfigurationError) as caught:
            TestDatabase("Base", "postgresql://u@h/db")  # type: ignore[arg-type]
        self.assertEqual(
            str(caught.exception),
            "metadata must be a sqlalchemy.MetaData such as Base.metadata (got 'Base' that is a <class 'str'>).",
        )

    def test_lock_timeout(self) -> None:
        """lock_timeout must be a positive number of seconds."""
        with self.assertRaisesRegex(ConfigurationError, r"lock_timeout must be a number of seconds > 0 \(got 0\)"):
            TestDatabase(METADATA, "postgresql://u@h/db", lock_timeout=0)

    def test_bad_url_fails_at_construction(self) -> None:
        """A bad URL is reported when the TestDatabase is made, before any test runs."""
        with self.assertRaisesRegex(ConfigurationError, "cannot parse the database URL"):
            TestDatabase(METADATA, "nonsense")

    def test_engine_before_setup(self) -> None:
        """Using .engine or .connection before setup() says what to call."""
        database = TestDatabase(METADATA, "postgresql://u@h/db")
        with self.assertRaisesRegex(ConfigurationError, r"is not set up: call setup\(\)"):
            database.connection

    def test_repr_hides_password(self) -> None:
        """The repr never shows the password."""
        database = TestDatabase(METADATA, "postgresql://ann:s3cret@h/db")
        self.assertNotIn("s3cret", repr(database))
        self.assertNotIn("s3cret", str(database.url))

    def test_teardown_before_setup(self) -> None:
        """teardown() is safe before setup() and twice."""
        database = TestDatabase(METADATA, "postgresql://u@h/db")
        database.teardown()
        database.teardown()

    def test_unknown_strategy(self) -> None:
        """A strategy that does not exist is named with the choices."""
        with self.assertRaisesRegex(ConfigurationError, r"strategy must be one of 'auto', 'savepoint', 'reset' \(got 'fast'\)"):
            TestDatabase(METADATA, "postgresql://u@h/db", strategy="fast")

    def test_savepoint_strategy_needs_transactional_ddl(self) -> None:
        """strategy='savepoint' on MySQL (DDL commits at once) is refused with the fix."""
        engine = sa.create_engine("mysql+pymysql://u@h/test_db")
        with self.assertRaisesRegex(ConfigurationError, r"strategy='savepoint' needs transactional DDL, which mysql lacks"):
            backends.resolve_strategy("savepoint", engine)
        self.assertEqual(backends.resolve_strategy("auto", engine), "reset")
        self.assertEqual(backends.resolve_strategy("auto", sa.create_engine("postgresql+psycopg2://u@h/db")), "savepoint")
        self.assertEqual(backends.resolve_strategy("auto", sa.create_engine("sqlite://")), "savepoint")

    def test_base_data_must_be_callable(self) -> None:
        """base_data must be a function."""
        with self.assertRaisesRegex(ConfigurationError, "base_data must be a function taking a Connection"):
            TestDatabase(METADATA, "sqlite://", base_data="INSERT ...")  # type: ignore[arg-type]


class Guard(unittest.TestCase):
    def test_refuses_a_database_not_named_for_tests(self) -> None:
        """Dropping tables in 'shop' is refused, naming the database and both ways to opt in."""
        with mock.patch.dict(os.environ, {backends.ALLOW_DESTRUCTIVE_ENV: ""}):
            with self.assertRaises(dbtestcase.DestructiveActionError) as caught:
                backends.check_destructive(parse_url("postgresql://ann:s3cret@h/shop"), "drop_all", False)
        self.assertEqual(
            str(caught.exception),
            "drop_all drops tables, and the database 'shop' (postgresql+psycopg2://ann:***@h/shop) does not look "
            "like a test database (no word of its name is test, tests, testing or testdb): point the URL at a test "
            "database, or opt in with allow_destructive=True or DBTESTCASE_ALLOW_DESTRUCTIVE=1.",
        )
        self.assertIsInstance(caught.exception, PermissionError)

    def test_test_must_be_a_word_of_the_name(self) -> None:
        """'test' counts as a word of the name, not as a substring: contest, latest and protest_prod are refused."""
        for name in ("test", "test_shop", "shop_test", "SHOP-TESTS", "shop_testing_2", "TestShop", "shopTest", "testdb",
                     "test1", "shop.test"):
            self.assertTrue(backends.is_test_database(parse_url(f"postgresql://u@h/{name}")), name)
        for name in ("contest", "latest", "fastest", "protest_prod", "attestation", "shop", "testimony", "pytest"):
            self.assertFalse(backends.is_test_database(parse_url(f"postgresql://u@h/{name}")), name)
        self.assertFalse(backends.is_test_database(parse_url("sqlite:////srv/tests/latest.db")), "the folder does not count")
        self.assertTrue(backends.is_test_database(parse_url("sqlite:////srv/app/app_test.db")))
        with mock.patch.dict(os.environ, {backends.ALLOW_DESTRUCTIVE_ENV: ""}), \
                self.assertRaises(dbtestcase.DestructiveActionError):
            backends.check_destructive(parse_url("mysql+pymysql://root@h/contest"), "strategy='reset'", False)

    def test_opt_ins(self) -> None:
        """A test name, the argument, the environment variable or a throwaway server each allow it."""
        shop = parse_url("postgresql://u@h/shop")
        with mock.patch.dict(os.environ, {backends.ALLOW_DESTRUCTIVE_ENV: ""}):
            backends.check_destructive(parse_url("postgresql://u@h/myapp_TEST"), "drop_all", False)
            backends.check_destructive(shop, "drop_all", True)
            backends.check_destructive(parse_url("sqlite://"), "drop_all", False)
            backends.check_destructive(parse_url("sqlite:////tmp/test_app.db"), "drop_all", False)
            with self.assertRaises(dbtestcase.DestructiveActionError):
                backends.check_destructive(parse_url("sqlite:////tmp/app.db"), "drop_all", False)
        with mock.patch.dict(os.environ, {backends.ALLOW_DESTRUCTIVE_ENV: "1"}):
            backends.check_destructive(shop, "drop_all", False)


class TransactionControl(unittest.TestCase):
    def test_statements_that_end_the_outer_transaction(self) -> None:
        """COMMIT, ROLLBACK, END, ABORT and the kit's savepoints are caught; a session's savepoints and DML are not."""
        ends = ["COMMIT", "  commit work", "ROLLBACK", "rollback;", "END", "ABORT", "PREPARE TRANSACTION 'x'",
                "RELEASE SAVEPOINT dbtestcase_test_0", "release dbtestcase_class_1", "ROLLBACK TO SAVEPOINT dbtestcase_test_0",
                'rollback to "dbtestcase_test_0"', "RELEASE SAVEPOINT `dbtestcase_test_0`"]
        passes = ["ROLLBACK TO SAVEPOINT sa_savepoint_1", "RELEASE SAVEPOINT sa_savepoint_2", "SAVEPOINT dbtestcase_test_0",
                  "SELECT 'COMMIT'", "UPDATE ends SET x = 1", "COMMITTED_READS", "ENDPOINT",
                  "INSERT INTO rollback_log VALUES (1)"]
        self.assertEqual([s for s in ends if not backends.ends_outer_transaction(s)], [])
        self.assertEqual([s for s in passes if backends.ends_outer_transaction(s)], [])


class Drivers(unittest.TestCase):
    def test_missing_dbapi(self) -> None:
        """A driver that is not installed names the pip package and the driver that works."""
        with self.assertRaises(DriverMissingError) as caught:
            create_engine(parse_url("postgresql+pg8000://ann:s3cret@h/db"))
        message = str(caught.exception)
        self.assertIn("needs the DBAPI driver 'pg8000', which is not installed: pip install pg8000", message)
        self.assertIn("'postgresql+psycopg2://'", message)
        self.assertNotIn("s3cret", message)
        self.assertIsInstance(caught.exception, ImportError)

    def test_unknown_dialect(self) -> None:
        """A dialect SQLAlchemy does not know is named."""
        with self.assertRaisesRegex(DriverMissingError, "SQLAlchemy has no dialect 'nosuchdb'"):
            create_engine(parse_url("nosuchdb://u@h/db"))


class ClassAttributes(unittest.TestCase):
    def test_database_attribute_type(self) -> None:
        """database = something else fails when the class is defined, naming class and attribute."""
        with self.assertRaisesRegex(ConfigurationError, r"^Bad.database must be a dbtestcase.TestDatabase"):
            type("Bad", (dbtestcase.DatabaseTestCase,), {"database": "postgresql://x"})

    def test_metadata_attribute_type(self) -> None:
        """metadata = Base (not Base.metadata) is caught when the class is defined."""
        with self.assertRaisesRegex(ConfigurationError, r"^Bad.metadata must be a sqlalchemy.MetaData"):
            type("Bad", (dbtestcase.DatabaseTestCase,), {"metadata": object()})

    def test_reset_sequences_type(self) -> None:
        """reset_sequences must be a bool."""
        with self.assertRaisesRegex(ConfigurationError, r"^Bad.reset_sequences must be True or False \(got 'yes'\)"):
            type("Bad", (dbtestcase.DatabaseTestCase,), {"reset_sequences": "yes"})

    def test_no_database(self) -> None:
        """A class with no database at all fails its first test with exactly what to add."""
        cls = type("UserTests", (dbtestcase.DatabaseTestCase,), {"test_x": lambda self: None})
        result = unittest.TestResult()
        unittest.TestSuite([cls("test_x")]).run(result)
        self.assertEqual((result.testsRun, len(result.errors)), (1, 1))
        self.assertIn(
            "dbtestcase.exceptions.NoDatabaseError: UserTests has no database to run on: call "
            "dbtestcase.setup_module(Base.metadata) in setUpModule(), or set metadata = Base.metadata "
            "(or database = dbtestcase.TestDatabase(Base.metadata)) on UserTests.",
            result.errors[0][1],
        )


class Hierarchy(unittest.TestCase):
    def test_builtin_bases(self) -> None:
        """Each error is also the builtin it resembles, so generic except clauses keep working."""
        self.assertTrue(issubclass(ConfigurationError, ValueError))
        self.assertTrue(issubclass(dbtestcase.NoDatabaseError, LookupError))
        self.assertTrue(issubclass(ServerNotFoundError, FileNotFoundError))
        self.assertTrue(issubclass(dbtestcase.LockTimeoutError, TimeoutError))
        self.assertTrue(issubclass(dbtestcase.ConnectionFailedError, ConnectionError))
        for name in dbtestcase.__all__:
            value = getattr(dbtestcase, name)
            if isinstance(value, type) and issubclass(value, Exception):
                self.assertTrue(issubclass(value, DbTestCaseError), name)

    def test_public_api(self) -> None:
        """Every name in __all__ exists, and __all__ is sorted."""
        self.assertEqual(dbtestcase.__all__, sorted(dbtestcase.__all__))
        for name in dbtestcase.__all__:
            self.assertTrue(hasattr(dbtestcase, name), name)


if __name__ == "__main__":
    unittest.main()
