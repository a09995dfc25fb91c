"""TestDatabase and setup_module: the outer transaction, and nothing left behind after teardown."""

from __future__ import annotations

import os
import tempfile
import unittest
import uuid
from pathlib import Path
from unittest import mock

import sqlalchemy as sa

import dbtestcase
from dbtestcase import ConfigurationError, LockTimeoutError, TestDatabase
from dbtestcase.core import LEFTOVER_MARK
from tests.functional.support import (
    run_python,
    run_tests,
    server_url,
    skip_unless,
    tables_seen_by_another_connection,
    unique_metadata,
)


class Lifecycle(unittest.TestCase):
    @skip_unless("postgresql", "sqlite", why="the reset strategy of MySQL/MariaDB commits its tables")
    def test_tables_live_only_inside_the_transaction(self) -> None:
        """Tables exist for the shared connection, are invisible to others, and vanish at teardown."""
        metadata, names = unique_metadata("life")
        url = server_url()
        with TestDatabase(metadata, url) as database:
            inspector = sa.inspect(database.connection)
            self.assertEqual(sorted(n for n in names if inspector.has_table(n)), sorted(names))
            database.connection.execute(metadata.tables[names[0]].insert().values(name="x"))
            self.assertEqual(tables_seen_by_another_connection(url, names), [])
        self.assertFalse(database.is_set_up)
        self.assertEqual(tables_seen_by_another_connection(url, names), [])

    def test_teardown_twice_and_setup_idempotent(self) -> None:
        """setup() twice keeps one connection; teardown() twice is harmless."""
        metadata, _ = unique_metadata("twice")
        database = TestDatabase(metadata, server_url())
        self.assertIs(database.setup(), database)
        connection = database.connection
        database.setup()
        self.assertIs(database.connection, connection)
        schema = database.schema_name
        database.teardown()
        database.teardown()
        with self.assertRaisesRegex(ConfigurationError, "is not set up"):
            database.engine
        self.assertEqual(database.schema_name, schema, "the last setup's schema name stays readable, as in 0.2")

    @skip_unless("postgresql", why="SQLite lets one connection write at a time, and a MySQL/MariaDB reset drops every table")
    def test_several_at_once(self) -> None:
        """A module can hold several TestDatabases with different tables at the same time."""
        first, first_names = unique_metadata("multi")
        second, second_names = unique_metadata("multi")
        url = server_url()
        with TestDatabase(first, url) as one, TestDatabase(second, url) as two:
            self.assertTrue(sa.inspect(one.connection).has_table(first_names[0]))
            self.assertFalse(sa.inspect(two.connection).has_table(first_names[0]))
            self.assertTrue(sa.inspect(two.connection).has_table(second_names[0]))

    @skip_unless("postgresql", why="lock_timeout is PostgreSQL's")
    def test_same_tables_twice_fails_fast(self) -> None:
        """Two databases creating the same tables on one server fail in lock_timeout, not forever."""
        metadata, _ = unique_metadata("clash")
        url = server_url()
        with TestDatabase(metadata, url, own_schema=False):
            second = TestDatabase(metadata, url, lock_timeout=0.3, own_schema=False)
            with self.assertRaises(LockTimeoutError) as caught:
                second.setup()
            self.assertIn("waited lock_timeout=0.3s for another transaction that holds the same tables", str(caught.exception))
            self.assertIn("leave own_schema on, or give this one another database", str(caught.exception))
            self.assertFalse(second.is_set_up)

    @skip_unless("postgresql", why="schemas are PostgreSQL's")
    def test_same_tables_twice_in_schemas_of_their_own(self) -> None:
        """Two databases with the same tables on one server each get a schema: no wait, no shared rows, no trace."""
        metadata, names = unique_metadata("twins")
        url = server_url()
        with TestDatabase(metadata, url, lock_timeout=0.3) as one, TestDatabase(metadata, url, lock_timeout=0.3) as two:
            self.assertNotEqual(one.schema_name, two.schema_name)
            for database in (one, two):
                self.assertRegex(database.schema_name or "", rf"^dbtestcase_{os.getpid()}_[0-9a-f]{{8}}$")
                current = database.connection.exec_driver_sql("SELECT current_schema()").scalar()
                self.assertEqual(current, database.schema_name)
            one.connection.execute(metadata.tables[names[0]].insert().values(id=1, name="one's"))
            rows = two.connection.execute(sa.select(metadata.tables[names[0]])).all()
            self.assertEqual(rows, [])
            self.assertEqual(tables_seen_by_another_connection(url, names), [])
            schemas = [one.schema_name, two.schema_name]
        engine = sa.create_engine(url)
        try:
            with engine.connect() as other:
                left = other.execute(
                    sa.text("SELECT nspname FROM pg_namespace WHERE nspname = ANY(:names)"), {"names": schemas}
                ).all()
        finally:
            engine.dispose()
        self.assertEqual(left, [], "the schemas vanished with the outer transactions")

    @skip_unless("postgresql", why="schemas are PostgreSQL's")
    def test_existing_tables_keep_the_default_schema(self) -> None:
        """Tables of the metadata that exist already are used where they are: no schema of our own."""
        metadata, names = unique_metadata("kept")
        url = server_url()
        engine = sa.create_engine(url)
        metadata.create_all(engine)
        try:
            with TestDatabase(metadata, url) as database:
                self.assertIsNone(database.schema_name)
                self.assertEqual([table.name for table in database.preexisting_tables], names)
        finally:
            metadata.drop_all(engine)
            engine.dispose()

    @skip_unless("postgresql", "sqlite", why="the reset strategy of MySQL/MariaDB commits its tables")
    def test_failed_setup_leaves_nothing(self) -> None:
        """A setup that fails (here: a duplicate table name) closes its connection and engine."""
        metadata, names = unique_metadata("broken")
        sa.Table(names[0].upper(), metadata, sa.Column("id", sa.Integer, primary_key=True), quote=False)
        database = TestDatabase(metadata, server_url())
        with self.assertRaises(sa.exc.DBAPIError):
            database.setup()
        self.assertFalse(database.is_set_up)


@skip_unless("postgresql", why="SQLite lets one connection write at a time, and a MySQL/MariaDB reset drops every table")
class ModuleApi(unittest.TestCase):
    def test_setup_and_teardown_module_nest(self) -> None:
        """setup_module makes its database active; teardown_module restores the previous one."""
        before = dbtestcase.active_database()
        first, _ = unique_metadata("nest")
        second, _ = unique_metadata("nest")
        outer = dbtestcase.setup_module(first, server_url())
        try:
            self.assertIs(dbtestcase.active_database(), outer)
            inner = dbtestcase.setup_module(second, server_url())
            self.assertIs(dbtestcase.active_database(), inner)
            dbtestcase.teardown_module()
            self.assertFalse(inner.is_set_up)
            self.assertIs(dbtestcase.active_database(), outer)
        finally:
            dbtestcase.teardown_module()
        self.assertFalse(outer.is_set_up)
        self.assertIs(dbtestcase.active_database(), before)


class ClassOwnedDatabases(unittest.TestCase):
    def test_metadata_attribute(self) -> None:
        """A class with metadata = ... sets up its own database and tears it down after the class."""
        metadata, names = unique_metadata("own")
        seen: list[TestDatabase] = []

        class Own(dbtestcase.DatabaseTestCase):
            database_url = str(server_url().render_as_string(hide_password=False))

            def test_a(self) -> None:
                seen.append(self.test_database)
                self.connection.execute(metadata.tables[names[0]].insert().values(name="x"))

        Own.metadata = metadata
        result = run_tests(Own)
        self.assertTrue(result.wasSuccessful(), result.errors + result.failures)
        self.assertEqual(len(seen), 1)
        self.assertFalse(seen[0].is_set_up, "the class's own database is torn down after the class")

    def test_database_attribute(self) -> None:
        """A class with database = TestDatabase(...) not yet set up sets it up and tears it down."""
        metadata, names = unique_metadata("attr")
        database = TestDatabase(metadata, server_url())

        class WithDatabase(dbtestcase.DatabaseTestCase):
            def test_a(self) -> None:
                self.assertIs(self.test_database, database)
                self.assertTrue(sa.inspect(self.connection).has_table(names[0]))

        WithDatabase.database = database
        result = run_tests(WithDatabase)
        self.assertTrue(result.wasSuccessful(), result.errors + result.failures)
        self.assertFalse(database.is_set_up)


class DropTables(unittest.TestCase):
    def test_committed_then_dropped(self) -> None:
        """drop_tables=True: other connections see the tables during the run; none remain after."""
        metadata, names = unique_metadata("committed")
        url = server_url()
        with TestDatabase(metadata, url, drop_tables=True) as database:
            self.assertEqual(sorted(tables_seen_by_another_connection(url, names)), sorted(names))
            database.connection.execute(metadata.tables[names[0]].insert().values(name="x"))
        self.assertEqual(tables_seen_by_another_connection(url, names), [])

    @skip_unless("postgresql", "sqlite", why="the reset strategy of MySQL/MariaDB drops every table by design")
    def test_refuses_existing_tables_and_drops_nothing(self) -> None:
        """Tables that already exist (someone's data) are named, and kept with their rows."""
        metadata, names = unique_metadata("theirs")
        url = server_url()
        engine = sa.create_engine(url)
        try:
            with engine.begin() as connection:
                metadata.tables[names[0]].create(connection)
                connection.exec_driver_sql(f"INSERT INTO {names[0]} (id) VALUES (7)")
            with self.assertRaises(ConfigurationError) as caught:
                TestDatabase(metadata, url, drop_tables=True).setup()
            self.assertIn("drop_tables=True would drop tables that already exist in", str(caught.exception))
            self.assertIn(names[0], str(caught.exception))
            with engine.connect() as connection:
                self.assertEqual(connection.exec_driver_sql(f"SELECT id FROM {names[0]}").scalar(), 7)
        finally:
            with engine.begin() as connection:
                connection.exec_driver_sql(f"DROP TABLE IF EXISTS {names[0]}")
            engine.dispose()

    @skip_unless("postgresql", why="only PostgreSQL tables carry the leftover mark (SQLite has no comments; MySQL resets)")
    def test_leftovers_of_a_killed_run_are_replaced(self) -> None:
        """Tables marked by an earlier drop_tables run that never tore down are dropped and remade."""
        metadata, names = unique_metadata("leftover")
        url = server_url()
        engine = sa.create_engine(url)
        try:
            with engine.begin() as connection:
                metadata.create_all(connection)
                for name in names:
                    connection.exec_driver_sql(f"COMMENT ON TABLE {name} IS '{LEFTOVER_MARK}'")
                connection.exec_driver_sql(f"INSERT INTO {names[0]} (name) VALUES ('stale')")
            with TestDatabase(metadata, url, drop_tables=True) as database:
                rows = database.connection.exec_driver_sql(f"SELECT count(*) FROM {names[0]}").scalar()
                self.assertEqual(rows, 0, "the stale row went with the leftover table")
            self.assertEqual(tables_seen_by_another_connection(url, names), [])
        finally:
            engine.dispose()


class PreexistingTables(unittest.TestCase):
    def existing(self, prefix: str, *statements: str) -> tuple[sa.MetaData, str, sa.Engine]:
        """A table made (committed) before the tests, then ``statements`` run on it ({t} is its name)."""
        metadata, names = unique_metadata(prefix)
        engine = sa.create_engine(server_url())
        self.addCleanup(engine.dispose)
        with engine.begin() as connection:
            metadata.tables[names[0]].create(connection)
            for statement in statements:
                connection.exec_driver_sql(statement.format(t=names[0]))
        self.addCleanup(dbtestcase.drop_all, engine, metadata, lock_timeout=5, allow_destructive=True)
        return metadata, names[0], engine

    @skip_unless("postgresql", why="it checks a PostgreSQL sequence")
    def test_reset_sequences_refuses_existing_tables(self) -> None:
        """reset_sequences never touches the sequence of a table that existed before the tests."""
        # Empty, but its sequence is at 3.
        metadata, name, engine = self.existing("seq", "INSERT INTO {t} (name) VALUES ('a'), ('b'), ('c')", "DELETE FROM {t}")
        database = TestDatabase(metadata, server_url())

        class Sequences(dbtestcase.DatabaseTestCase):
            reset_sequences = True

            def test_a(self) -> None:
                pass

        Sequences.database = database
        result = run_tests(Sequences)
        self.assertEqual(len(result.errors), 1)
        self.assertIn("Sequences.reset_sequences would reset the sequences of tables that existed before", result.errors[0][1])
        self.assertIn(name, result.errors[0][1])
        self.assertFalse(database.is_set_up)
        with engine.connect() as connection:
            next_id = connection.exec_driver_sql(f"SELECT nextval(pg_get_serial_sequence('{name}', 'id'))").scalar()
        self.assertEqual(next_id, 4, "the sequence was left where it was")

    @skip_unless("postgresql", "sqlite", why="the reset strategy of MySQL/MariaDB drops every table by design")
    def test_tables_with_rows_are_refused_and_kept(self) -> None:
        """Existing tables that hold rows: tests would not start blank, so setup says so and touches nothing."""
        metadata, name, engine = self.existing("dirty", "INSERT INTO {t} (name) VALUES ('precious')")
        with self.assertRaises(ConfigurationError) as caught:
            TestDatabase(metadata, server_url()).setup()
        self.assertIn(f"hold rows: {name}. Tests would not start on a blank slate", str(caught.exception))
        with engine.connect() as connection:
            self.assertEqual(connection.exec_driver_sql(f"SELECT name FROM {name}").scalar(), "precious")


class Workers(unittest.TestCase):
    """In a parallel worker (DBTESTCASE_WORKER or pytest-xdist's PYTEST_XDIST_WORKER set)."""

    def as_worker(self, name: str) -> None:
        environ = {"DBTESTCASE_WORKER": name}
        patcher = mock.patch.dict(os.environ, environ)
        patcher.start()
        self.addCleanup(patcher.stop)

    @skip_unless("mysql", "mariadb", why="a database per worker is the MySQL/MariaDB way")
    def test_mysql_database_per_worker(self) -> None:
        """Two workers reset and use databases of their own (test_<worker>), dropped at teardown."""
        metadata, names = unique_metadata("workers")
        url = server_url()
        self.as_worker("w1")
        one = TestDatabase(metadata, url).setup()
        self.as_worker("w2")
        try:
            with TestDatabase(metadata, url) as two:
                self.assertEqual(one.url.database, f"{url.database}_w1")
                self.assertEqual(two.url.database, f"{url.database}_w2")
                one.connection.execute(metadata.tables[names[0]].insert().values(id=1, name="one's"))
                self.assertEqual(two.connection.execute(sa.select(metadata.tables[names[0]])).all(), [])
                self.assertEqual(tables_seen_by_another_connection(url, names), [], "the configured database is untouched")
                self.assertEqual(sorted(tables_seen_by_another_connection(two.url, names)), sorted(names))
        finally:
            one.teardown()
        engine = sa.create_engine(url)
        try:
            with engine.connect() as other:
                left = other.exec_driver_sql(f"SHOW DATABASES LIKE '{url.database}\\_w_'").all()
        finally:
            engine.dispose()
        self.assertEqual(left, [], "each worker's database was dropped")

    @skip_unless("postgresql", why="schemas are PostgreSQL's")
    def test_postgres_schema_names_the_worker(self) -> None:
        """On PostgreSQL a worker keeps the configured database; its schema's name says which worker it is."""
        metadata, _ = unique_metadata("named")
        self.as_worker("gw3")
        with TestDatabase(metadata, server_url()) as database:
            self.assertEqual(database.url.database, server_url().database)
            self.assertRegex(database.schema_name or "", rf"^dbtestcase_gw3_{os.getpid()}_[0-9a-f]{{8}}$")

    @skip_unless("mysql", "mariadb", why="a database per worker is the MySQL/MariaDB way")
    def test_worker_database_needs_a_test_database(self) -> None:
        """A configured database whose name lacks "test" is refused before any database is created."""
        metadata, _ = unique_metadata("guarded")
        self.as_worker("w1")
        database = TestDatabase(metadata, server_url().set(database="production"))
        message = r"^resetting a parallel worker's database drops tables, and the database 'production'"
        with self.assertRaisesRegex(dbtestcase.DestructiveActionError, message):
            database.setup()


@skip_unless("postgresql", "mysql", "mariadb", why="a fork shares the connection's socket (a client-server database)")
class Forked(unittest.TestCase):
    def test_a_forked_child_never_touches_the_parents_connection(self) -> None:
        """A child forked after setup() sets up its own connection; the parent's transaction goes on untouched."""
        metadata, names = unique_metadata("forked")
        table = metadata.tables[names[0]]
        with TestDatabase(metadata, server_url()) as database:
            database.connection.execute(table.insert().values(id=1, name="parent's"))
            pid = os.fork()
            if pid == 0:  # the child: report through the exit code, never return into the test runner
                code = 1
                try:
                    assert not database.is_set_up, "the parent's connection is not the child's"
                    try:
                        database.connection  # noqa: B018 - the access is the check
                    except ConfigurationError as exc:
                        assert "which this process" in str(exc) and "Call setup() in this process" in str(exc), exc
                    else:
                        raise AssertionError("the child was given the parent's connection")
                    os.environ["DBTESTCASE_WORKER"] = "forked"  # MySQL: a database of its own, as a worker has
                    with database:  # set up afresh, in the child
                        assert database.connection.execute(sa.select(table)).all() == [], "its own, empty tables"
                    database.teardown()  # and a second teardown is still harmless
                    code = 0
                finally:
                    os._exit(code)
            _, status = os.waitpid(pid, 0)
            self.assertEqual(os.waitstatus_to_exitcode(status), 0, "the child's checks failed")
            self.assertTrue(database.is_set_up)
            rows = database.connection.execute(sa.select(table.c.name)).scalars().all()
            self.assertEqual(rows, ["parent's"], "the parent's outer transaction and connection are intact")


@skip_unless("postgresql", why="search_path is PostgreSQL's")
class SearchPath(unittest.TestCase):
    def test_an_empty_search_path(self) -> None:
        """A server or role with an empty search_path: the schema of our own is the whole path."""
        metadata, names = unique_metadata("nopath")
        options = {"connect_args": {"options": "-c search_path="}}
        with TestDatabase(metadata, server_url(), engine_options=options) as database:
            path = database.connection.exec_driver_sql("SHOW search_path").scalar()
            self.assertEqual(path, database.schema_name)
            database.connection.execute(metadata.tables[names[0]].insert().values(id=1, name="x"))


@skip_unless("mysql", "mariadb", why="a database per worker is the MySQL/MariaDB way")
class WorkerThenNot(unittest.TestCase):
    def test_a_later_setup_outside_workers_keeps_the_configured_database(self) -> None:
        """Set up as a worker, torn down, then set up again outside workers: only the worker's database is dropped."""
        metadata, _ = unique_metadata("again")
        url = server_url()
        database = TestDatabase(metadata, url)
        with mock.patch.dict(os.environ, {"DBTESTCASE_WORKER": "w9"}):
            database.setup()
            self.assertEqual(database.url.database, f"{url.database}_w9")
            database.teardown()
        with mock.patch.dict(os.environ, {"DBTESTCASE_WORKER": "", "PYTEST_XDIST_WORKER": ""}):
            with database:
                self.assertEqual(database.url.database, url.database)
        engine = sa.create_engine(url)
        try:
            with engine.connect() as other:
                self.assertIsNotNone(other.exec_driver_sql(f"SHOW DATABASES LIKE '{url.database}'").first())
        finally:
            engine.dispose()


@skip_unless("postgresql", why="schemas and advisory locks are PostgreSQL's")
class Reaper(unittest.TestCase):
    """A schema that a killed run left committed is dropped by the next run; a live run's never is."""

    def commit_schema(self, engine: sa.engine.Engine, name: str) -> None:
        with engine.connect() as connection:
            connection.exec_driver_sql(f'CREATE SCHEMA "{name}"')
            connection.exec_driver_sql(f'CREATE TABLE "{name}".t (id int)')
            connection.commit()
        self.addCleanup(self.drop, engine, name)

    @staticmethod
    def drop(engine: sa.engine.Engine, name: str) -> None:
        with engine.connect() as connection:
            connection.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
            connection.commit()

    @staticmethod
    def schemas(engine: sa.engine.Engine, *names: str) -> list[str]:
        with engine.connect() as connection:
            rows = connection.execute(sa.text("SELECT nspname FROM pg_namespace WHERE nspname = ANY(:n)"),
                                      {"n": list(names)}).scalars().all()
            return sorted(rows)

    def test_dead_runs_schemas_go_and_live_ones_stay(self) -> None:
        """Committed dbtestcase_ schemas: the dead run's is dropped at the next setup, a live one's (locked) and
        a schema of someone else's are kept."""
        engine = sa.create_engine(server_url())
        self.addCleanup(engine.dispose)
        suffix = f"{os.getpid()}_{uuid.uuid4().hex[:8]}"
        dead, live, other = f"dbtestcase_dead_{suffix}", f"dbtestcase_live_{suffix}", f"someone_{suffix}"
        for name in (dead, live, other):
            self.commit_schema(engine, name)
        holder = engine.connect()  # a live run: it holds the lock on its schema's name
        self.addCleanup(holder.close)
        holder.exec_driver_sql(f"SELECT pg_advisory_lock({0x6462}, hashtext('{live}'))")
        # The next run: a process of its own (a process reaps each database once, at its first setup there).
        code = ("import sys, sqlalchemy as sa, dbtestcase\n"
                "metadata = sa.MetaData()\n"
                "sa.Table('reaper_t', metadata, sa.Column('id', sa.Integer, primary_key=True))\n"
                "dbtestcase.TestDatabase(metadata, sys.argv[1]).setup().teardown()\n")
        with tempfile.TemporaryDirectory() as tmp:
            done = run_python(["-c", code, server_url().render_as_string(hide_password=False)], cwd=Path(tmp))
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(self.schemas(engine, dead, live, other), sorted([live, other]))
