"""The throwaway servers' bookkeeping on a loaded or odd machine: time limits, no wrong kills, no stale cache."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import uuid
from unittest import mock

from dbtestcase.exceptions import ServerStartError
from dbtestcase.servers import _process, _runshare, _runstate, _system
from dbtestcase.servers.postgresql import PostgresServer
from tests.functional.support import gone

# A process that ignores the server's stop signal and says when it is ready to be signalled.
STUBBORN = "import signal, sys, time\nsignal.signal(signal.SIGQUIT, signal.SIG_IGN)\nprint('ready', flush=True)\n" \
           "while True:\n    time.sleep(1)\n"


def stubborn_process(case: unittest.TestCase) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", STUBBORN], stdout=subprocess.PIPE, text=True, start_new_session=True)
    case.addCleanup(proc.wait)
    case.addCleanup(lambda: proc.poll() is None and proc.kill())
    assert proc.stdout is not None
    case.assertEqual(proc.stdout.readline().strip(), "ready")
    return proc


class Kill(unittest.TestCase):
    def test_no_sigkill_of_a_process_group_whose_identity_is_unknown(self) -> None:
        """Without a start-time token (no /proc), a pid that ignores the stop signal is never SIGKILLed."""
        proc = stubborn_process(self)
        with mock.patch.object(_runstate, "STOP_TIMEOUT", 0.2):
            _runstate.kill(proc.pid, "", signal.SIGQUIT)
        self.assertIsNone(proc.poll(), "a process that may have reused the pid was killed")

    def test_a_verified_process_is_killed(self) -> None:
        """With its token, the same stubborn process gets the SIGKILL after the stop signal."""
        proc = stubborn_process(self)
        with mock.patch.object(_runstate, "STOP_TIMEOUT", 5):
            _runstate.kill(proc.pid, _runstate.started(proc.pid), signal.SIGQUIT)
        self.assertEqual(proc.wait(10), -signal.SIGKILL)


class StepTimeLimit(unittest.TestCase):
    def test_a_hung_initdb_fails_with_its_command_instead_of_hanging(self) -> None:
        """An initdb that never ends is killed after STEP_TIMEOUT, and start() fails naming it."""
        bindir = tempfile.mkdtemp(prefix="dbtestcase-test-hung-")
        os.chmod(bindir, 0o755)
        self.addCleanup(shutil.rmtree, bindir, True)
        scripts = {"postgres": "#!/bin/sh\necho 'postgres (PostgreSQL) 99.0'\n",
                   "initdb": "#!/bin/sh\necho starting\nexec sleep 600\n"}
        for name, body in scripts.items():
            path = os.path.join(bindir, name)
            with open(path, "w") as f:
                f.write(body)
            os.chmod(path, 0o755)
        cache = tempfile.mkdtemp(prefix="dbtestcase-test-cache-")
        self.addCleanup(shutil.rmtree, cache, True)
        began = time.monotonic()
        with mock.patch.object(_process, "STEP_TIMEOUT", 1.0), self.assertRaises(ServerStartError) as caught:
            PostgresServer(bindir=bindir, cache_dir=cache).start()
        self.assertLess(time.monotonic() - began, 60)
        message = str(caught.exception)
        self.assertIn("initdb did not finish within 1 s and was killed", message)
        self.assertIn("starting", message, "the step's output so far is shown")
        self.assertEqual([n for n in os.listdir(cache) if not n.endswith(".lock")], [], "no half-made template kept")


class Attach(unittest.TestCase):
    def test_a_live_server_that_does_not_answer_is_left_running(self) -> None:
        """A published server that is alive but accepts no connection is not killed: join fails, naming it."""
        holder = stubborn_process(self)  # stands for a live server whose port accepts nothing
        run = f"test-{uuid.uuid4().hex}"
        server = PostgresServer()
        server.prepare()
        share = _runshare.Share.of(server, run)
        directory = tempfile.mkdtemp(prefix="dbtestcase-test-run-")
        self.addCleanup(shutil.rmtree, directory, True)
        with _runstate.locked(share.state_dir, create=True):
            _runstate.write_state(share.state_dir, {
                "run": run, "url": "unused", "port": 1, "pid": holder.pid, "token": _runstate.started(holder.pid),
                "directory": directory, "version": server.version, "starter": holder.pid})
        self.addCleanup(_runstate.remove, share.state_dir)
        with mock.patch.object(_runshare, "ATTACH_TIMEOUT", 0.5), self.assertRaises(ServerStartError) as caught:
            _runshare.join(PostgresServer(), run)
        self.assertIn(f"(pid {holder.pid}, port 1) is alive but accepted no connection for 0.5 s", str(caught.exception))
        self.assertIsNone(holder.poll(), "the live server was killed")
        self.assertTrue(os.path.isdir(directory), "its directory was removed")
        self.assertFalse(gone(holder.pid))


class Prune(unittest.TestCase):
    def test_stale_entries_go_and_fresh_or_busy_ones_stay(self) -> None:
        """Half-made .tmp- folders over an hour old and entries unused for STALE_DAYS go; the rest stays."""
        base = tempfile.mkdtemp(prefix="dbtestcase-test-prune-")
        self.addCleanup(shutil.rmtree, base, True)
        old = time.time() - 40 * 86400

        def entry(name: str, *, age: float | None = None) -> str:
            path = os.path.join(base, name)
            os.makedirs(path)
            _system.touch(path + ".lock")
            if age is not None:
                os.utime(path + ".lock", (age, age))
            return path

        stale, fresh, busy = entry("pg-stale", age=old), entry("pg-fresh"), entry("pg-busy", age=old)
        half_made = os.path.join(base, ".tmp-abc")
        os.makedirs(half_made)
        os.utime(half_made, (old, old))
        recent_tmp = os.path.join(base, ".tmp-new")
        os.makedirs(recent_tmp)
        with open(busy + ".lock") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # a run is using it now (other open file description: flock conflicts)
            code = ("import sys; from dbtestcase.servers import _system; "
                    "print(sorted(_system.prune_stale(sys.argv[1])))")
            out = subprocess.run([sys.executable, "-c", code, base], capture_output=True, text=True, check=True)
        self.assertEqual(out.stdout.strip(), str(sorted([stale, half_made])))
        self.assertEqual(sorted(os.listdir(base)), sorted(
            ["pg-fresh", "pg-fresh.lock", "pg-busy", "pg-busy.lock", ".tmp-new"]))
        self.assertTrue(os.path.isdir(fresh) and os.path.isdir(busy) and os.path.isdir(recent_tmp))


class Environment(unittest.TestCase):
    def test_the_server_and_its_watchdog_inherit_no_secrets(self) -> None:
        """A variable of the test process (a CI secret) is in neither the server's nor the watchdog's environment."""
        with mock.patch.dict(os.environ, {"DBTESTCASE_TEST_SECRET": "s3cret-token"}):
            server = PostgresServer().start()
        self.addCleanup(server.stop)
        assert server.pid is not None
        watchdogs = [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
                     if server.directory and server.directory.encode() in _cmdline(pid) and pid != server.pid]
        self.assertTrue(watchdogs, "no watchdog found for the server")
        for pid in [server.pid, *watchdogs]:
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = f.read()
            self.assertNotIn(b"s3cret-token", environ, f"process {pid}")
            self.assertIn(b"LC_ALL=C", environ, f"process {pid}")


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""
