"""Functional tests of dbtestcase.mariadb_server: a real throwaway MariaDB, its template, lifecycle and cleanup."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest
from typing import Any
from unittest import mock

import sqlalchemy as sa

from dbtestcase.exceptions import ServerError, ServerNotFoundError, ServerStartError
from dbtestcase.mariadb_server import ENV_MARIADB_BINDIR, MariaDBServer, find_mariadbd, shared_mariadb_server
from dbtestcase.servers import mariadb as mariadb_server  # where its constants are looked up: patched there
from tests.functional.support import assert_runs_as_nobody, assert_stop_cleans_up, gone, wait_until, why_no_mariadb

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IS_ROOT = os.geteuid() == 0
CACHE = ""  # a private template cache for this module, so the tests do not depend on ~/.cache


SKIP_REASON = why_no_mariadb()
needs_mariadb = unittest.skipIf(SKIP_REASON, SKIP_REASON)


def setUpModule() -> None:
    global CACHE
    CACHE = tempfile.mkdtemp(prefix="dbtestcase-test-mariadb-cache-")


def tearDownModule() -> None:
    shutil.rmtree(CACHE, ignore_errors=True)



def query(url: str, *statements: str) -> list[Any]:
    """Run each statement on a fresh connection; return the first column of each one's first row."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            results = [conn.execute(sa.text(statement)) for statement in statements]
            return [result.scalar() if result.returns_rows else None for result in results]
    finally:
        engine.dispose()


def new_server(**kwargs: str) -> MariaDBServer:
    return MariaDBServer(**{"cache_dir": CACHE, **kwargs})


class ServerTestCase(unittest.TestCase):
    def start(self, srv: MariaDBServer) -> MariaDBServer:
        srv.start()
        self.addCleanup(srv.stop)
        return srv

    def assert_gone(self, pid: int, directory: str) -> None:
        self.assertTrue(wait_until(lambda: gone(pid)), f"mariadbd {pid} still alive")
        self.assertTrue(wait_until(lambda: not os.path.exists(directory)), f"{directory} left behind")


@needs_mariadb
class LifecycleTest(ServerTestCase):
    def test_start_and_query(self) -> None:
        """A started server answers SELECT VERSION() through SQLAlchemy and PyMySQL at its url."""
        srv = self.start(new_server())
        self.assertRegex(srv.url, r"^mysql\+pymysql://root@127\.0\.0\.1:\d+/test$")
        [version] = query(srv.url, "SELECT VERSION()")
        self.assertIn("MariaDB", version)
        self.assertTrue(version.startswith(str(srv.version)), (version, srv.version))

    @unittest.skipUnless(IS_ROOT, "only root switches to nobody")
    def test_runs_as_nobody_when_root(self) -> None:
        """As root, mariadbd runs as nobody (not the mysql user) and owns its data directory."""
        assert_runs_as_nobody(self, self.start(new_server()))

    def test_database_test_exists_and_innodb_is_the_default_engine(self) -> None:
        """The url opens database test, and a table created without ENGINE= is InnoDB."""
        srv = self.start(new_server())
        database, engine, _, table_engine = query(
            srv.url, "SELECT DATABASE()", "SELECT @@default_storage_engine", "CREATE TABLE t (id INT PRIMARY KEY)",
            "SELECT engine FROM information_schema.tables WHERE table_schema = 'test' AND table_name = 't'")
        self.assertEqual((database, engine, table_engine), ("test", "InnoDB", "InnoDB"))

    def test_stop_removes_process_and_directory_and_is_idempotent(self) -> None:
        """stop() ends mariadbd (reaped, no zombie), removes the run directory, and can run twice."""
        srv = new_server().start()
        assert_stop_cleans_up(self, srv)
        with self.assertRaisesRegex(ServerError, r"not running: call start\(\)"):
            srv.url
        MariaDBServer().stop()  # never started: also a no-op

    def test_context_manager_cleans_up_after_exception(self) -> None:
        """The with block starts the server and stops it even when its body raises."""
        with self.assertRaises(ValueError), new_server() as srv:
            pid, directory = srv.pid, srv.directory
            raise ValueError("boom")
        assert pid and directory
        self.assert_gone(pid, directory)

    def test_start_failure_reports_error_log_and_cleans_up(self) -> None:
        """A mariadbd that cannot start raises ServerStartError with its command and error.log, and leaves no dir."""
        real = MariaDBServer._make_data

        def damaged(self: MariaDBServer, data: str) -> None:
            real(self, data)
            shutil.rmtree(os.path.join(data, "mysql"))  # no privilege tables: mariadbd gives up
            made.append(os.path.dirname(data))

        made: list[str] = []
        with mock.patch.object(MariaDBServer, "_make_data", damaged), self.assertRaises(ServerStartError) as caught:
            new_server().start()
        message = str(caught.exception)
        self.assertIn("MariaDB did not start: mariadbd exited with code", message)
        self.assertIn("Command: ", message)
        self.assertIn("/error.log:\n", message)
        self.assertIn("mysql.", message)  # the log names the missing table
        self.assertFalse(os.path.exists(made[0]))

    def test_shared_server_is_one_per_process_and_a_fork_cannot_stop_it(self) -> None:
        """shared_mariadb_server() returns one server per process; stop() in a forked child leaves it running."""
        with mock.patch.dict(os.environ, {"DBTESTCASE_CACHE_DIR": CACHE}):
            srv = shared_mariadb_server()
        self.addCleanup(srv.stop)
        self.assertIs(shared_mariadb_server(), srv)
        child = os.fork()
        if child == 0:  # pragma: no cover - runs in the child
            shared_mariadb_server().stop()
            os._exit(0)
        os.waitpid(child, 0)
        self.assertEqual(query(srv.url, "SELECT 1"), [1])


@needs_mariadb
class TemplateTest(ServerTestCase):
    def test_template_is_made_once_and_reused(self) -> None:
        """The first start runs mariadb-install-db into a cached template; the next start copies it instead."""
        cache = tempfile.mkdtemp(prefix="dbtestcase-test-mariadb-cache-")
        self.addCleanup(shutil.rmtree, cache, ignore_errors=True)
        with mock.patch.object(MariaDBServer, "_install_db", autospec=True,
                               side_effect=MariaDBServer._install_db) as install:
            began = time.monotonic()
            self.start(new_server(cache_dir=cache)).stop()
            cold = time.monotonic() - began
            self.assertEqual(install.call_count, 1)
            templates = [name for name in os.listdir(cache) if not name.endswith(".lock")]
            self.assertEqual(len(templates), 1, templates)
            self.assertTrue(templates[0].startswith("mariadb-"), templates)
            began = time.monotonic()
            srv = self.start(new_server(cache_dir=cache))
            cached = time.monotonic() - began
            self.assertEqual(install.call_count, 1)
        self.assertEqual(query(srv.url, "SELECT DATABASE()"), ["test"])
        print(f"\nMariaDB start: cold {cold:.2f} s, from the cached template {cached:.2f} s", file=sys.stderr)


@needs_mariadb
class KilledOwnerTest(ServerTestCase):
    SCRIPT = textwrap.dedent("""
        import json, sys, time
        from dbtestcase import mariadb_server
        from dbtestcase.servers import _system
        _system.PDEATHSIG = sys.argv[2] == "1"
        srv = mariadb_server.MariaDBServer(cache_dir=sys.argv[1]).start()
        print(json.dumps({"pid": srv.pid, "directory": srv.directory}), flush=True)
        time.sleep(600)
    """)

    def test_sigkill_of_the_owner_leaves_no_process_and_no_directory(self) -> None:
        """SIGKILL of the process that started the server: its mariadbd and run directory go within 15 s,
        through the death signal and, without it, through the watchdog alone."""
        env = {**os.environ, "PYTHONPATH": REPO}
        for deathsig in ("1", "0"):
            with self.subTest(deathsig=deathsig):
                owner = subprocess.Popen([sys.executable, "-c", self.SCRIPT, CACHE, deathsig], env=env,
                                         stdout=subprocess.PIPE, text=True)
                self.addCleanup(owner.kill)  # a failed assertion must not leave it asleep
                assert owner.stdout
                line = owner.stdout.readline()
                self.assertTrue(line, "the owner did not start a server")
                started = json.loads(line)
                os.kill(owner.pid, signal.SIGKILL)
                owner.wait()
                owner.stdout.close()
                self.assert_gone(started["pid"], started["directory"])


class FindTest(unittest.TestCase):
    def test_bogus_variable_is_an_error_that_lists_the_places_searched(self) -> None:
        """A DBTESTCASE_MARIADB_BINDIR with no mariadbd raises ServerNotFoundError naming it, and the fixes."""
        with mock.patch.dict(os.environ, {ENV_MARIADB_BINDIR: "/nonexistent/bogus"}), \
                self.assertRaises(ServerNotFoundError) as caught:
            find_mariadbd()
        self.assertIsInstance(caught.exception, FileNotFoundError)
        self.assertEqual(str(caught.exception), (
            "No MariaDB server binary (mariadbd or mysqld) was found. Searched:\n"
            "  - argument bindir: not set\n"
            "  - $DBTESTCASE_MARIADB_BINDIR='/nonexistent/bogus': no executable mariadbd or mysqld there\n"
            "Fix it: install MariaDB (for example apt-get install mariadb-server), or set DBTESTCASE_MARIADB_BINDIR "
            "to the directory of its mariadbd; or set DBTESTCASE_URL to a database server you already have."))

    def test_nothing_found_lists_every_place_searched(self) -> None:
        """With no setting, nothing on PATH and no system directory, the error lists each place in order."""
        empty = tempfile.mkdtemp()
        self.addCleanup(os.rmdir, empty)
        with mock.patch.dict(os.environ, {"PATH": empty}), mock.patch.object(mariadb_server, "SYSTEM_DIRS", (empty,)), \
                self.assertRaises(ServerNotFoundError) as caught:
            os.environ.pop(ENV_MARIADB_BINDIR, None)
            find_mariadbd()
        self.assertIn("Searched:\n  - argument bindir: not set\n  - $DBTESTCASE_MARIADB_BINDIR: not set\n"
                      f"  - PATH: no mariadbd or mysqld\n  - {empty}: no mariadbd or mysqld\nFix it: ",
                      str(caught.exception))

    @needs_mariadb
    def test_variable_and_argument_are_used_first(self) -> None:
        """find_mariadbd takes the argument's directory first, then the variable's."""
        bindir = os.path.dirname(find_mariadbd())
        with mock.patch.dict(os.environ, {ENV_MARIADB_BINDIR: bindir, "PATH": ""}):
            self.assertEqual(os.path.dirname(find_mariadbd()), bindir)
            with self.assertRaisesRegex(ServerNotFoundError, r"argument bindir='/nonexistent': no executable"):
                find_mariadbd("/nonexistent")


if __name__ == "__main__":
    unittest.main()
