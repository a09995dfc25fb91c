"""Functional tests of dbtestcase.servers._runshare: one throwaway server shared by the processes of a parallel run."""

from __future__ import annotations

import importlib.util
import json
import os
import pwd
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import unittest
import uuid
from pathlib import Path
from typing import Any, Optional
from unittest import mock

from dbtestcase.exceptions import ServerError
from dbtestcase.servers import _runstate as runstate
from tests.functional.support import gone, run_python, uid_of, wait_until, why_no_mariadb, write_project

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IS_ROOT = os.geteuid() == 0
CACHE = ""  # a private template cache for this module, so the tests do not depend on ~/.cache
# Variables that would choose a database, a run or a worker for the processes we start: each test sets its own.
_CHOOSERS = ("DBTESTCASE_URL", "DBTESTCASE_RUN_ID", "DBTESTCASE_WORKER", "PYTEST_XDIST_TESTRUNUID",
             "PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT")


NO_MARIADB = why_no_mariadb()


def setUpModule() -> None:
    global CACHE
    CACHE = tempfile.mkdtemp(prefix="dbtestcase-test-shared-cache-")


def tearDownModule() -> None:
    shutil.rmtree(CACHE, ignore_errors=True)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _CHOOSERS}
    return {**env, "PYTHONPATH": REPO, "DBTESTCASE_CACHE_DIR": CACHE, **extra}


def new_run() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


def mentioning(text: str) -> list[int]:
    """The live processes (zombies aside) whose command line mentions ``text``: a server, its watchdog."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != os.getpid():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    if text.encode() in f.read() and not gone(int(name)):
                        found.append(int(name))
            except OSError:
                continue
    return found


# A process that uses the run's server: prints what it got as JSON, then obeys lines on stdin.
CLIENT = textwrap.dedent("""
    import json, os, sys, time
    import sqlalchemy as sa
    from dbtestcase import mariadb_server, server
    from dbtestcase.servers._process import ChildServer

    if os.environ.get("SLOW_TEARDOWN"):  # widen the moment the last process stops the server, lock held
        halt = ChildServer.halt
        def slow(self):
            print(json.dumps({"tearing_down": True}), flush=True)
            time.sleep(float(os.environ["SLOW_TEARDOWN"]))
            halt(self)
        ChildServer.halt = slow
    srv = mariadb_server.shared_mariadb_server() if sys.argv[1] == "mariadb" else server.shared_server()
    print(json.dumps({"url": srv.url, "pid": srv.pid, "directory": srv.directory, "me": os.getpid(),
                      "state": srv.share and srv.share.state_dir}), flush=True)
    for line in sys.stdin:
        if line.strip() == "query":
            engine = sa.create_engine(srv.url, poolclass=sa.pool.NullPool)
            with engine.connect() as conn:
                print(json.dumps({"query": conn.execute(sa.text("SELECT 1")).scalar()}), flush=True)
            engine.dispose()
        elif line.strip() == "exit":
            break
""")


class Client:
    """One process of a run, started by a test: ``info`` is what shared_server() gave it."""

    def __init__(self, case: unittest.TestCase, run: Optional[str], kind: str = "postgresql", **env: str) -> None:
        self.case = case
        self.log = tempfile.TemporaryFile()
        case.addCleanup(self.log.close)
        run_env = {"DBTESTCASE_RUN_ID": run} if run else {}
        self.proc = subprocess.Popen([sys.executable, "-c", CLIENT, kind], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True, env=clean_env(**run_env, **env))
        case.addCleanup(self._cleanup)
        self.info = self.read(90)

    def read(self, timeout: float = 30) -> dict[str, Any]:
        assert self.proc.stdout
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        self.case.assertTrue(line, f"process {self.proc.pid} said nothing; its stderr:\n{self.stderr()}")
        result: dict[str, Any] = json.loads(line)
        return result

    def stderr(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def send(self, command: str) -> None:
        assert self.proc.stdin
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def query(self) -> Any:
        self.send("query")
        return self.read()["query"]

    def exit(self) -> None:
        self.send("exit")
        self.case.assertEqual(self.proc.wait(60), 0, self.stderr())

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def _cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe:
                pipe.close()


class SharedServerCase(unittest.TestCase):
    kind = "postgresql"

    def client(self, run: Optional[str], **env: str) -> Client:
        client = Client(self, run, self.kind, **env)
        self.addCleanup(self.kill_leftovers, client.info)
        return client

    @staticmethod
    def kill_leftovers(info: dict[str, Any]) -> None:
        """After a failed test: no server, watchdog or directory left for the next tests."""
        for pid in mentioning(info["directory"]):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(info["directory"], ignore_errors=True)
        if info["state"]:
            shutil.rmtree(info["state"], ignore_errors=True)

    def assert_shared(self, *clients: Client) -> None:
        first = clients[0].info
        for client in clients[1:]:
            for key in ("url", "pid", "directory", "state"):
                self.assertEqual(client.info[key], first[key], key)
        for client in clients:
            self.assertEqual(client.query(), 1)

    def assert_running(self, info: dict[str, Any]) -> None:
        self.assertFalse(gone(info["pid"]), f"the server {info['pid']} is gone")
        self.assertTrue(os.path.isdir(info["directory"]))
        self.assertTrue(os.path.isdir(info["state"]))

    def assert_all_gone(self, info: dict[str, Any]) -> None:
        """The server, its watchdog, its run directory and the run's state directory are all gone."""
        self.assertTrue(wait_until(lambda: gone(info["pid"])), f"server {info['pid']} still alive")
        self.assertTrue(wait_until(lambda: not mentioning(info["directory"])),
                        f"still running: {mentioning(info['directory'])} (the watchdog?)")
        self.assertTrue(wait_until(lambda: not os.path.exists(info["directory"])), f"{info['directory']} left behind")
        if info["state"]:
            self.assertTrue(wait_until(lambda: not os.path.exists(info["state"])), f"{info['state']} left behind")


class SharePostgresTest(SharedServerCase):
    def test_one_run_shares_one_server_and_the_last_one_stops_it(self) -> None:
        """Two processes of one run get the same server; it outlives the starter's exit; the last exit stops it."""
        run = new_run()
        starter, other = self.client(run), self.client(run)
        self.assert_shared(starter, other)
        info = starter.info
        self.assertTrue(os.path.basename(info["state"]).startswith("run-"), info["state"])
        if IS_ROOT:
            self.assertEqual(uid_of(info["pid"]), pwd.getpwnam("nobody").pw_uid)
        starter.exit()
        self.assert_running(info)
        self.assertEqual(other.query(), 1)
        other.exit()
        self.assert_all_gone(info)

    def test_server_survives_sigkill_of_its_starter(self) -> None:
        """SIGKILL of the starter leaves the server to the others; a third process attaches to it meanwhile."""
        run = new_run()
        starter, other = self.client(run), self.client(run)
        starter.kill()
        self.assertFalse(wait_until(lambda: gone(other.info["pid"]), timeout=1.0), "the server died with its starter")
        self.assert_running(other.info)
        third = self.client(run)
        self.assert_shared(other, third)
        other.exit()
        self.assertEqual(third.query(), 1)
        third.exit()
        self.assert_all_gone(other.info)

    def test_sigkill_of_every_process_leaves_nothing(self) -> None:
        """SIGKILL of all three processes of a run: the watchdog stops the server and removes both directories."""
        run = new_run()
        clients = [self.client(run) for _ in range(3)]
        self.assert_shared(*clients)
        for client in clients:
            client.kill()
        self.assert_all_gone(clients[0].info)

    def test_different_runs_get_different_servers(self) -> None:
        """Processes of two runs get two servers, with two state directories."""
        first, second = self.client(new_run()), self.client(new_run())
        for key in ("url", "pid", "directory", "state"):
            self.assertNotEqual(first.info[key], second.info[key], key)
        first.exit()
        self.assert_all_gone(first.info)
        self.assert_running(second.info)
        second.exit()
        self.assert_all_gone(second.info)

    def test_no_run_id_means_a_private_server(self) -> None:
        """Without a run id, each process has its own server, as before, and its exit stops it."""
        first, second = self.client(None), self.client(None)
        self.assertNotEqual(first.info["pid"], second.info["pid"])
        self.assertIsNone(first.info["state"])
        first.exit()
        self.assert_all_gone(first.info)
        self.assertEqual(second.query(), 1)
        second.kill()
        self.assert_all_gone(second.info)

    def test_joining_while_the_last_one_stops_starts_a_fresh_server(self) -> None:
        """A process that joins while the last one is stopping the server waits, then starts a new one."""
        run = new_run()
        last = self.client(run, SLOW_TEARDOWN="1.5")
        old = last.info
        last.send("exit")
        self.assertTrue(last.read()["tearing_down"])  # now it holds the lock, for 1.5 s
        newcomer = self.client(run)
        self.assertEqual(last.proc.wait(30), 0, last.stderr())
        self.assertNotEqual(newcomer.info["pid"], old["pid"])
        self.assertEqual(newcomer.info["state"], old["state"])
        self.assertTrue(gone(old["pid"]))
        self.assertFalse(os.path.exists(old["directory"]))
        self.assertEqual(newcomer.query(), 1)
        newcomer.exit()
        self.assert_all_gone(newcomer.info)

    def test_a_forked_child_joins_its_parents_run(self) -> None:
        """A child forked from a process of a run gets the same server, and keeps it alive after the parent exits
        (once it has called shared_server(): from then on it is one of the run's processes)."""
        script = textwrap.dedent("""
            import json, os, sys
            from dbtestcase import server
            srv = server.shared_server()
            joined, tell = os.pipe()
            if os.fork() == 0:
                mine = server.shared_server()
                print(json.dumps({"url": mine.url, "pid": mine.pid, "directory": mine.directory, "me": os.getpid(),
                                  "state": mine.share.state_dir, "child": True}), flush=True)
                os.write(tell, b"j")  # after the print: one line at a time on the shared stdout
                sys.stdin.readline()
                sys.exit(0)  # atexit: the child leaves, last
            os.read(joined, 1)
            print(json.dumps({"url": srv.url, "pid": srv.pid, "directory": srv.directory, "me": os.getpid(),
                              "state": srv.share.state_dir, "child": False}), flush=True)
        """)
        parent = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True, env=clean_env(DBTESTCASE_RUN_ID=new_run()))
        self.addCleanup(parent.kill)
        assert parent.stdin and parent.stdout
        self.addCleanup(parent.stdin.close)
        self.addCleanup(parent.stdout.close)
        lines = {record["child"]: record for record in (json.loads(parent.stdout.readline()) for _ in range(2))}
        self.addCleanup(self.kill_leftovers, lines[False])
        self.addCleanup(lambda: gone(lines[True]["me"]) or os.kill(lines[True]["me"], signal.SIGKILL))
        for key in ("url", "pid", "directory", "state"):
            self.assertEqual(lines[True][key], lines[False][key], key)
        self.assertEqual(parent.wait(30), 0)
        self.assertFalse(wait_until(lambda: gone(lines[False]["pid"]), timeout=1.0), "the server died with the parent")
        self.assert_running(lines[False])
        parent.stdin.write("\n")
        parent.stdin.flush()
        self.assertTrue(wait_until(lambda: gone(lines[True]["me"])), "the child did not exit")
        self.assert_all_gone(lines[False])

@unittest.skipIf(NO_MARIADB, NO_MARIADB)
class ShareMariaDBTest(SharedServerCase):
    kind = "mariadb"

    def test_one_run_shares_one_server_and_the_last_one_stops_it(self) -> None:
        """Two processes of one run get the same MariaDB; it outlives the starter; the last exit stops it."""
        run = new_run()
        starter, other = self.client(run), self.client(run)
        self.assert_shared(starter, other)
        starter.exit()
        self.assert_running(starter.info)
        self.assertEqual(other.query(), 1)
        other.exit()
        self.assert_all_gone(starter.info)


class WithoutServerTest(unittest.TestCase):
    """The parts that need no server: naming a process for good, the state base's safety, the nose2 hooks."""

    @unittest.skipUnless(os.path.isdir("/proc/self"), "start times come from /proc")
    def test_a_reused_pid_is_not_the_registered_process(self) -> None:
        """A pid is alive only with the start time it was registered with: a reused pid counts as dead."""
        me = os.getpid()
        self.assertTrue(runstate.alive(me, runstate.started(me)))
        self.assertTrue(runstate.alive(me))
        self.assertFalse(runstate.alive(me, "1"))  # started at another time: another process with our pid
        self.assertFalse(runstate.alive(0))

    def test_a_state_base_others_may_write_is_refused(self) -> None:
        """$TMPDIR/dbtestcase-<uid> writable by others is an error that names it and the fix."""
        tmp = tempfile.mkdtemp(prefix="dbtestcase-test-base-")
        self.addCleanup(shutil.rmtree, tmp, True)
        base = os.path.join(tmp, f"dbtestcase-{os.geteuid()}")
        os.mkdir(base)
        os.chmod(base, 0o777)
        with mock.patch.object(tempfile, "tempdir", tmp), self.assertRaises(ServerError) as cm:
            runstate.base()
        self.assertEqual(str(cm.exception), f"{base} is not a directory owned by uid {os.geteuid()} and writable "
                                            f"only by it (got mode drwxrwxrwx, uid {os.geteuid()}); remove it and try again.")

    def test_nose2_hooks(self) -> None:
        """registerInSubprocess adds the plugin's class and a run id, keeping the user's; startSubprocess names
        the worker."""
        from nose2 import session
        from nose2.plugins.mp import RegisterInSubprocessEvent, SubprocessEvent

        from dbtestcase.nose2plugin import DbTestCasePlugin

        plugin = DbTestCasePlugin(session=session.Session())
        with mock.patch.dict(os.environ):
            for variable in _CHOOSERS:
                os.environ.pop(variable, None)
            event = RegisterInSubprocessEvent()
            plugin.registerInSubprocess(event)
            self.assertEqual(event.pluginClasses, [DbTestCasePlugin])
            self.assertRegex(os.environ["DBTESTCASE_RUN_ID"], rf"^nose2-{os.getpid()}-[0-9a-f]{{8}}$")
            os.environ["DBTESTCASE_RUN_ID"] = "mine"
            plugin.registerInSubprocess(RegisterInSubprocessEvent())
            self.assertEqual(os.environ["DBTESTCASE_RUN_ID"], "mine")
            plugin.startSubprocess(SubprocessEvent(None, None, None, [], None))
            self.assertRegex(os.environ["DBTESTCASE_WORKER"], r"^nose2_\d+$")


# The same module twice (test_a, test_b): its tests record which server and worker they ran on.
SAMPLE = """
    import json, os

    import sqlalchemy as sa

    import dbtestcase
    from dbtestcase.server import shared_server
    from dbtestcase.workers import run_id, worker_id

    metadata = sa.MetaData()
    # Two workers in one database: tables of their own (per module and process) keep them from blocking each other.
    items = sa.Table(f"items_{__name__}_{os.getpid()}", metadata, sa.Column("id", sa.Integer, primary_key=True))


    def setUpModule():
        dbtestcase.setup_module(metadata)


    def tearDownModule():
        dbtestcase.teardown_module()


    class RecordTest(dbtestcase.DatabaseTestCase):
        def test_record(self):
            self.session.execute(items.insert().values(id=1))
            srv = shared_server()
            record = {"module": __name__, "me": os.getpid(), "port": dbtestcase.active_database().url.port, "pid": srv.pid,
                      "directory": srv.directory, "state": srv.share and srv.share.state_dir,
                      "run": run_id(), "worker": worker_id(), "env_worker": os.environ.get("DBTESTCASE_WORKER")}
            path = os.path.join(os.environ["RECORDS"], f"{__name__}-{os.getpid()}.json")
            with open(path, "w") as f:
                json.dump(record, f)
"""


class RunnerTest(SharedServerCase):
    """Real parallel runs of a sample project with no URL: nose2 -N 2 and pytest -n 2."""

    def run_sample(self, args: list[str]) -> list[dict[str, Any]]:
        tmp = tempfile.TemporaryDirectory(prefix="dbtestcase-shared-runner-")
        self.addCleanup(tmp.cleanup)
        project = write_project(Path(tmp.name), {"test_a.py": SAMPLE, "test_b.py": SAMPLE})
        (project / "records").mkdir()
        env = {k: "" for k in _CHOOSERS}  # run_python starts from os.environ: blank what would choose for us
        done = run_python(args, cwd=project, env={**env, "RECORDS": str(project / "records"),
                                                  "DBTESTCASE_CACHE_DIR": CACHE}, timeout=90)
        output = done.stdout + done.stderr
        self.assertEqual(done.returncode, 0, output)
        records = [json.loads(path.read_text()) for path in sorted((project / "records").iterdir())]
        for record in records:
            self.addCleanup(self.kill_leftovers, record)
        self.assertEqual(len({record["me"] for record in records}), 2, f"not two workers: {records}\n{output}")
        for key in ("port", "pid", "directory", "state", "run"):
            self.assertEqual(len({record[key] for record in records}), 1, f"{key} differs: {records}")
        self.assertTrue(records[0]["state"], records)
        self.assert_all_gone(records[0])
        return records

    def test_nose2_mp_workers_share_one_server(self) -> None:
        """nose2 -N 2: the workers load the plugin, get one run id and their own names, and share one server."""
        records = self.run_sample(["-m", "nose2", "-v", "--plugin", "dbtestcase.nose2plugin", "--plugin",
                                   "nose2.plugins.mp", "-N", "2", "test_a", "test_b"])
        self.assertEqual(sorted(record["module"] for record in records), ["test_a", "test_b"])
        self.assertRegex(records[0]["run"], r"^nose2-\d+-[0-9a-f]{8}$")
        for record in records:
            self.assertRegex(record["env_worker"], r"^nose2_\d+$")
            self.assertEqual(record["worker"], record["env_worker"])
        self.assertEqual(len({record["worker"] for record in records}), 2, "each worker its own name")

    @unittest.skipUnless(importlib.util.find_spec("xdist"), "pytest-xdist is not installed")
    def test_pytest_xdist_workers_share_one_server(self) -> None:
        """pytest -n 2 (each test on each worker): both workers share one server, through xdist's run id."""
        records = self.run_sample(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2", "--dist", "each",
                                   "test_a.py", "test_b.py"])
        self.assertEqual(len(records), 4, records)
        self.assertRegex(records[0]["run"], r"^[0-9a-f]{32}$")  # xdist's PYTEST_XDIST_TESTRUNUID
        self.assertEqual(sorted(record["worker"] for record in records), ["gw0", "gw0", "gw1", "gw1"])


if __name__ == "__main__":
    unittest.main()
