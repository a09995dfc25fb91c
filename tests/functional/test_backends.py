"""Every backend: the reset strategy (FK cycles included), MySQL's pitfalls, SQLite, and the guard."""

from __future__ import annotations

import os
import tempfile
import unittest
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session

import dbtestcase
from dbtestcase import DestructiveActionError, ImplicitCommitError, NonTransactionalTableError, TestDatabase
from tests.functional.support import backend, rows_seen_by_another_connection, run_tests, server_url, skip_unless


def cycle_metadata(prefix: str) -> sa.MetaData:
    """Three tables whose foreign keys form a cycle: a -> b -> c -> a."""
    metadata = sa.MetaData()
    for name, target in (("a", "b"), ("b", "c"), ("c", "a")):
        sa.Table(
            f"{prefix}_{name}",
            metadata,
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("ref", sa.Integer, sa.ForeignKey(f"{prefix}_{target}.id", use_alter=True, name=f"fk_{prefix}_{name}")),
        )
    return metadata


def run_case(database: TestDatabase, **tests: object) -> unittest.TestResult:
    """Run a DatabaseTestCase made of ``tests`` on ``database``, as a runner would."""
    return run_tests(type("Case", (dbtestcase.DatabaseTestCase,), {"database": database, **tests}))


def reset_url() -> str:
    return server_url().render_as_string(hide_password=False)


@skip_unless("postgresql", "mysql", "mariadb", why="the reset strategy is for servers (SQLite has transactional DDL)")
class ResetStrategy(unittest.TestCase):
    """The universal method: reflect, drop the foreign keys, drop, create; then tests in savepoints."""

    def setUp(self) -> None:
        self.prefix = f"cyc{os.getpid()}"
        self.metadata = cycle_metadata(self.prefix)
        self.engine = sa.create_engine(server_url())
        self.addCleanup(self.engine.dispose)

    def leftovers(self) -> None:
        """What a killed earlier run (with an older model) left: the cycle full of rows, and a stale table."""
        with self.engine.begin() as connection:
            self.metadata.create_all(connection)
            sa.Table(f"{self.prefix}_stale", sa.MetaData(), sa.Column("id", sa.Integer)).create(connection)
            a, b, c = (self.metadata.tables[f"{self.prefix}_{n}"] for n in "abc")
            connection.execute(a.insert().values(id=1))
            connection.execute(b.insert().values(id=1))
            connection.execute(c.insert().values(id=1, ref=1))
            connection.execute(b.update().values(ref=1))
            connection.execute(a.update().values(ref=1))

    def test_cycle_is_reset(self) -> None:
        """A schema whose foreign keys form a cycle is dropped and recreated empty; the stale table goes."""
        self.leftovers()
        with TestDatabase(self.metadata, reset_url(), strategy="reset", drop_tables=True) as database:
            names = sa.inspect(database.connection).get_table_names()
            self.assertNotIn(f"{self.prefix}_stale", names)
            for table in self.metadata.sorted_tables:
                self.assertEqual(rows_seen_by_another_connection(server_url(), table.name), 0, table.name)
            a = self.metadata.tables[f"{self.prefix}_a"]

            def test_1(case: dbtestcase.DatabaseTestCase) -> None:
                case.session.execute(a.insert().values(id=5))
                case.session.commit()

            def test_2(case: dbtestcase.DatabaseTestCase) -> None:
                case.assertEqual(case.session.scalar(sa.select(sa.func.count()).select_from(a)), 0)

            result = run_case(database, test_1=test_1, test_2=test_2)
            self.assertTrue(result.wasSuccessful(), result.errors + result.failures)
        self.assertEqual(sa.inspect(self.engine).get_table_names().count(f"{self.prefix}_a"), 0, "drop_tables")

    def test_base_data(self) -> None:
        """base_data runs once and is committed: every test starts from it, changes roll back."""
        a = self.metadata.tables[f"{self.prefix}_a"]

        def base(connection: sa.Connection) -> None:
            connection.execute(a.insert().values([{"id": 1}, {"id": 2}]))

        with TestDatabase(self.metadata, reset_url(), strategy="reset", drop_tables=True, base_data=base) as database:
            self.assertEqual(rows_seen_by_another_connection(server_url(), a.name), 2, "committed base data")

            def test_1(case: dbtestcase.DatabaseTestCase) -> None:
                case.session.execute(a.delete())
                case.session.commit()

            def test_2(case: dbtestcase.DatabaseTestCase) -> None:
                case.assertEqual(case.session.scalar(sa.select(sa.func.count()).select_from(a)), 2)

            result = run_case(database, test_1=test_1, test_2=test_2)
            self.assertTrue(result.wasSuccessful(), result.errors + result.failures)


@skip_unless("mysql", "mariadb", why="MySQL/MariaDB pitfalls")
class MySQLPitfalls(unittest.TestCase):
    def test_myisam_is_refused(self) -> None:
        """A table created as MyISAM is named in a clear error, not silently leaked."""
        metadata = sa.MetaData()
        sa.Table(f"myisam_{os.getpid()}", metadata, sa.Column("id", sa.Integer, primary_key=True), mysql_engine="MyISAM")
        database = TestDatabase(metadata, reset_url(), drop_tables=True)
        self.addCleanup(lambda: dbtestcase.drop_all(sa.create_engine(server_url()), metadata))
        with self.assertRaises(NonTransactionalTableError) as caught:
            database.setup()
        self.assertIn(f"myisam_{os.getpid()} (MyISAM)", str(caught.exception))
        self.assertIn("Declare them InnoDB", str(caught.exception))
        self.assertFalse(database.is_set_up)

    def test_ddl_in_a_test_is_refused(self) -> None:
        """CREATE, DROP and TRUNCATE inside a test would commit: they raise; temporary tables are fine."""
        metadata = sa.MetaData()
        table = sa.Table(f"ddl_{os.getpid()}", metadata, sa.Column("id", sa.Integer, primary_key=True))
        with TestDatabase(metadata, reset_url(), drop_tables=True) as database:

            def test_create(case: dbtestcase.DatabaseTestCase) -> None:
                with case.assertRaisesRegex(ImplicitCommitError, "would make .* commit the test's transaction at once"):
                    case.connection.exec_driver_sql("CREATE TABLE ddl_other (id int)")

            def test_truncate(case: dbtestcase.DatabaseTestCase) -> None:
                case.connection.execute(table.insert().values(id=1))
                with case.assertRaises(ImplicitCommitError):
                    case.connection.exec_driver_sql(f"TRUNCATE TABLE {table.name}")

            def test_temporary(case: dbtestcase.DatabaseTestCase) -> None:
                case.connection.exec_driver_sql("CREATE TEMPORARY TABLE ddl_temp (id int)")
                case.connection.exec_driver_sql("DROP TEMPORARY TABLE ddl_temp")

            def test_transaction_control(case: dbtestcase.DatabaseTestCase) -> None:
                for statement in ("BEGIN", "START TRANSACTION", "SET autocommit = 1", "OPTIMIZE TABLE x"):
                    with case.assertRaises(ImplicitCommitError, msg=statement):
                        case.connection.exec_driver_sql(statement)

            result = run_case(
                database,
                test_create=test_create,
                test_temporary=test_temporary,
                test_transaction_control=test_transaction_control,
                test_truncate=test_truncate,
            )
            self.assertTrue(result.wasSuccessful(), result.errors + result.failures)
            self.assertEqual(rows_seen_by_another_connection(server_url(), table.name), 0)
        self.assertFalse(sa.inspect(sa.create_engine(server_url())).has_table("ddl_other"))

    def test_savepoint_strategy_refused(self) -> None:
        """strategy='savepoint' where DDL commits on its own is refused before anything is created."""
        with self.assertRaisesRegex(dbtestcase.ConfigurationError, "needs transactional DDL"):
            TestDatabase(cycle_metadata("never"), reset_url(), strategy="savepoint").setup()


class Guard(unittest.TestCase):
    """The reset strategy and drop_all refuse a database whose name does not say it is for tests."""

    def shop(self) -> tuple[sa.engine.URL, sa.Engine]:
        """A database named like a production one, with a table and a row in it."""
        url = server_url()
        name = f"dbtc_shop_{os.getpid()}"
        if backend() == "sqlite":
            folder = tempfile.mkdtemp(prefix="dbtc-guard-")
            shop = url.set(database=str(Path(folder) / f"{name}.db"))
        else:
            admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
            with admin.connect() as connection:
                connection.exec_driver_sql(f"CREATE DATABASE {name}")
            self.addCleanup(lambda: admin.connect().exec_driver_sql(f"DROP DATABASE {name}"))
            shop = url.set(database=name)
        engine = sa.create_engine(shop)
        self.addCleanup(engine.dispose)
        with engine.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE orders (id int)")
            connection.exec_driver_sql("INSERT INTO orders VALUES (42)")
        return shop, engine

    def assert_untouched(self, engine: sa.Engine) -> None:
        with engine.connect() as connection:
            self.assertEqual(connection.exec_driver_sql("SELECT id FROM orders").scalar(), 42)

    def test_reset_refused(self) -> None:
        """strategy='reset' on 'dbtc_shop_...' is refused, and its table and row stay."""
        shop, engine = self.shop()
        os.environ.pop("DBTESTCASE_ALLOW_DESTRUCTIVE", None)
        with self.assertRaises(DestructiveActionError) as caught:
            TestDatabase(cycle_metadata("guard"), shop.render_as_string(hide_password=False), strategy="reset").setup()
        self.assertIn(f"the database {shop.database!r}", str(caught.exception))
        self.assertIn("allow_destructive=True or DBTESTCASE_ALLOW_DESTRUCTIVE=1", str(caught.exception))
        self.assert_untouched(engine)

    def test_drop_all_refused(self) -> None:
        """drop_all on 'dbtc_shop_...' is refused; with allow_destructive=True it drops."""
        shop, engine = self.shop()
        metadata = sa.MetaData()
        sa.Table("orders", metadata, sa.Column("id", sa.Integer))
        with self.assertRaises(DestructiveActionError):
            dbtestcase.drop_all(engine, metadata)
        self.assert_untouched(engine)
        dbtestcase.drop_all(engine, metadata, allow_destructive=True)
        self.assertFalse(sa.inspect(engine).has_table("orders"))

    def test_savepoint_strategy_needs_no_opt_in(self) -> None:
        """The savepoint strategy commits nothing, so it runs on any database (tables absent or empty)."""
        shop, engine = self.shop()
        if backend() not in ("postgresql", "sqlite"):
            self.skipTest("MySQL/MariaDB have no savepoint strategy")
        metadata = sa.MetaData()
        sa.Table(f"fresh_{os.getpid()}", metadata, sa.Column("id", sa.Integer, primary_key=True))
        with TestDatabase(metadata, shop.render_as_string(hide_password=False)):
            pass
        self.assert_untouched(engine)


class SQLiteInMemory(unittest.TestCase):
    """SQLite in memory (no server at all): per-test savepoints, commit in code under test included."""

    def test_isolation(self) -> None:
        """A committed row is gone in the next test; a rollback after commit keeps the committed row."""
        metadata = sa.MetaData()
        items = sa.Table("items", metadata, sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", sa.String))
        with TestDatabase(metadata, "sqlite://") as database:

            def test_1(case: dbtestcase.DatabaseTestCase) -> None:
                case.assertEqual(case.session.scalar(sa.select(sa.func.count()).select_from(items)), 0)
                case.session.execute(items.insert().values(name="kept"))
                case.session.commit()
                case.session.execute(items.insert().values(name="undone"))
                case.session.rollback()
                case.assertEqual(case.session.scalars(sa.select(items.c.name)).all(), ["kept"])
                other = Session(bind=case.connection, join_transaction_mode="create_savepoint")
                with other.begin_nested():
                    other.execute(items.insert().values(name="nested"))
                other.commit()
                case.connection.commit()  # ignored: dbtestcase owns the outer transaction

            result = run_case(database, test_1=test_1, test_2=test_1, test_3=test_1)
            self.assertTrue(result.wasSuccessful(), result.errors + result.failures)


def _has_mariadbd() -> bool:
    from dbtestcase.mariadb_server import find_mariadbd

    try:
        find_mariadbd()
    except FileNotFoundError:
        return False
    return True


@unittest.skipIf(os.environ.get("DBTESTCASE_URL"), "runs in the throwaway-server pass, where no URL is given")
@unittest.skipUnless(_has_mariadbd(), "no mariadbd installed")
class ThrowawayMariaDB(unittest.TestCase):
    def test_bare_mysql_url(self) -> None:
        """mysql:// alone starts a throwaway MariaDB: reset strategy, savepoints, the database named test."""
        metadata = sa.MetaData()
        items = sa.Table("items", metadata, sa.Column("id", sa.Integer, primary_key=True))
        with TestDatabase(metadata, "mysql://") as database:
            self.assertEqual(database.url.database, "test")
            self.assertNotEqual(database.url.port, 3306, "not the machine's own MariaDB")
            self.assertTrue(database.connection.dialect.is_mariadb)

            def test_1(case: dbtestcase.DatabaseTestCase) -> None:
                case.assertEqual(case.session.scalar(sa.select(sa.func.count()).select_from(items)), 0)
                case.session.execute(items.insert().values(id=1))
                case.session.commit()

            result = run_case(database, test_1=test_1, test_2=test_1)
            self.assertTrue(result.wasSuccessful(), result.errors + result.failures)
