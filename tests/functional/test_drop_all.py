"""drop_all never hangs on a lock: it closes what it can and names the blocker otherwise."""

from __future__ import annotations

import unittest

import sqlalchemy as sa
from sqlalchemy.orm import Session

import dbtestcase
from dbtestcase import LockTimeoutError
from tests.functional.support import server_url, skip_unless, tables_seen_by_another_connection, unique_metadata


class DropAll(unittest.TestCase):
    def setUp(self) -> None:
        self.metadata, self.names = unique_metadata("drop")
        self.url = server_url()
        self.engine = sa.create_engine(self.url)
        self.metadata.create_all(self.engine)
        self.addCleanup(self.engine.dispose)
        # Through the kit itself: a failed test may leave a session holding a lock, and a plain
        # metadata.drop_all would then wait forever.
        self.addCleanup(dbtestcase.drop_all, self.engine, self.metadata, lock_timeout=5, allow_destructive=True)

    def test_forgotten_session_is_closed_first(self) -> None:
        """A Session left idle in transaction on the engine is closed, so the drop goes through."""
        forgotten = Session(self.engine)
        forgotten.execute(sa.select(self.metadata.tables[self.names[0]]))  # holds AccessShareLock
        dbtestcase.drop_all(self.engine, self.metadata, lock_timeout=2)
        self.assertEqual(tables_seen_by_another_connection(self.url, self.names), [])

    @skip_unless("postgresql", why="pg_locks and lock_timeout are PostgreSQL's")
    def test_blocker_is_named(self) -> None:
        """Another process's open transaction makes drop_all fail fast, naming its pid and application."""
        other = sa.create_engine(self.url, connect_args={"application_name": "blocking-app"})
        self.addCleanup(other.dispose)
        blocker = other.connect()
        self.addCleanup(blocker.close)
        blocker.execute(sa.select(self.metadata.tables[self.names[0]]))
        pid = blocker.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        with self.assertRaises(LockTimeoutError) as caught:
            dbtestcase.drop_all(self.engine, self.metadata, lock_timeout=0.3)
        message = str(caught.exception)
        self.assertIn("drop_all waited lock_timeout=0.3s for a table lock and gave up: blocked by", message)
        self.assertIn(f"pid {pid} (application_name 'blocking-app'", message)
        self.assertIn("state 'idle in transaction'", message)
        self.assertIn(f"pg_terminate_backend(pid) for pid {pid}", message)
        self.assertEqual(sorted(tables_seen_by_another_connection(self.url, self.names)), sorted(self.names))
        blocker.rollback()
        dbtestcase.drop_all(self.engine, self.metadata, lock_timeout=2)
        self.assertEqual(tables_seen_by_another_connection(self.url, self.names), [])

    @skip_unless("postgresql", why="it checks PostgreSQL's lock_timeout setting")
    def test_connection_in_transaction(self) -> None:
        """On a Connection inside a transaction the drop joins it; the caller's commit makes it stick."""
        with self.engine.connect() as connection:
            connection.begin()
            dbtestcase.drop_all(connection, self.metadata, lock_timeout=2)
            self.assertEqual(connection.exec_driver_sql("SHOW lock_timeout").scalar(), "0", "lock_timeout restored")
            connection.commit()
        self.assertEqual(tables_seen_by_another_connection(self.url, self.names), [])

    def test_missing_tables_are_skipped(self) -> None:
        """Dropping twice is fine: tables already gone are skipped."""
        dbtestcase.drop_all(self.engine, self.metadata)
        dbtestcase.drop_all(self.engine, self.metadata)
        self.assertEqual(tables_seen_by_another_connection(self.url, self.names), [])

    def test_bad_arguments(self) -> None:
        """A non-MetaData and a non-positive lock_timeout are refused before anything is dropped."""
        with self.assertRaisesRegex(dbtestcase.ConfigurationError, "metadata must be a sqlalchemy.MetaData"):
            dbtestcase.drop_all(self.engine, "Base")  # type: ignore[arg-type]
        with self.assertRaisesRegex(dbtestcase.ConfigurationError, "lock_timeout must be a number of seconds > 0"):
            dbtestcase.drop_all(self.engine, self.metadata, lock_timeout=-1)
        self.assertEqual(sorted(tables_seen_by_another_connection(self.url, self.names)), sorted(self.names))
