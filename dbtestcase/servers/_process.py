"""ChildServer: a throwaway server run as our child in a private run directory, with a watchdog (stdlib only).

One server per process or per parallel run is :mod:`._runshare`'s business; it drives a ChildServer through
the public methods of its "run sharing" section (:meth:`ChildServer.adopt`, :meth:`~ChildServer.release`,
:meth:`~ChildServer.halt`), never through its private state.
"""

from __future__ import annotations

import abc
import contextlib
import functools
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from ..exceptions import ServerError, ServerStartError
from . import _system
from ._system import Watchdog, deathsig_hook, fill_from_template, let_go, minimal_env, prune_stale, run_base, tail, wait_ready

if TYPE_CHECKING:
    from typing_extensions import Self  # annotations only: no runtime dependency

    from ._runshare import Share

__all__ = ["ChildServer"]

ENV_CACHE_DIR = "DBTESTCASE_CACHE_DIR"
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
STEP_TIMEOUT = 300.0  # seconds a setup step (initdb, mariadb-install-db) may take


class ChildServer(abc.ABC):
    """A database server run as our child in a private run directory, which :meth:`stop` removes.

    A watchdog stops the server and removes the directory if this process dies without calling :meth:`stop`.
    Subclasses find their binaries in :meth:`prepare`, fill the directory in :meth:`_boot` and end it with
    :meth:`_launch`, which runs :meth:`_command` until :meth:`_ready`.
    """

    #: The signal that asks the server for a quick, clean shutdown.
    stop_signal: ClassVar[signal.Signals]
    #: The server's name in messages ("PostgreSQL").
    product: ClassVar[str]
    _run_prefix: ClassVar[str]  # of the run directory's name
    _poll_interval: ClassVar[float]  # seconds between two calls of _ready()
    _log: ClassVar[logging.Logger]

    def __init__(self, *, bindir: str | None = None, cache_dir: str | None = None) -> None:
        cache_home = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
        self.cache_dir = cache_dir or os.environ.get(ENV_CACHE_DIR) or os.path.join(cache_home, "dbtestcase")
        self.bindir = bindir
        self._requested_bindir = bindir  # start() may set bindir to the directory actually used (maybe a copy)
        self.version: str | None = None
        self.directory: str | None = None
        self.port: int | None = None
        self._runas: tuple[int, int] | None = None
        #: The pid of the process that started this server or attached to it: only it may stop it.
        self.owner = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._watchdog: Watchdog | None = None
        #: Set by run sharing when the processes of a parallel run share this server: it must then outlive us, its
        #: watchdog watches the run's processes instead of us, and stop() only stops it for the last of them.
        self.share: Share | None = None

    @property
    def pid(self) -> int | None:
        """The server process's pid, or None when not running."""
        if self._proc:
            return self._proc.pid
        return self.share.pid if self.share and self.directory else None  # attached to a run's server

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """The SQLAlchemy URL of the server's database ``test``."""

    def _running_port(self) -> int:
        if self.port is None:
            raise ServerError(f"The {type(self).__name__} is not running: call start() before reading its url.")
        return self.port

    def __repr__(self) -> str:
        return f"<{type(self).__name__} pid={self.pid} directory={self.directory!r}>"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> Self:
        """Start the server and wait until it accepts connections; return self.

        Raises:
            ServerNotFoundError: the server's binaries are missing.
            ServerStartError: a setup step or the server failed; the message ends with their output.
        """
        if self.directory is not None:
            raise ServerError(f"{self!r} is already started; stop() it first.")
        began = time.monotonic()
        self.prepare()
        self.owner = os.getpid()
        try:
            self.directory = tempfile.mkdtemp(prefix=self._run_prefix, dir=run_base(self._runas))
            self._start_watchdog()
            if self._runas:  # a directory we just made; never the user's own
                os.chown(self.directory, *self._runas)
            self._boot()
        except BaseException:
            self.halt()
            raise
        self._log.info("started %s %s at %s in %s (%.2fs)", self.product, self.version, self.url, self.directory,
                       time.monotonic() - began)
        return self

    def stop(self) -> None:
        """Stop the server and remove its directory; safe to call twice, and a no-op in a forked child.

        For a server shared by a parallel run, leave the run: the server stops only when no process uses it.
        """
        if self.owner != os.getpid() or self.directory is None:
            return
        if self.share is not None:
            self.share.leave(self)
            return
        url, directory = self.url if self.port else None, self.directory
        self.halt()
        self._log.info("stopped %s at %s and removed %s", self.product, url, directory)

    @abc.abstractmethod
    def prepare(self) -> None:
        """Find the binaries, set ``version`` and ``_runas`` (the user to run as, or None); nothing to undo yet."""

    @abc.abstractmethod
    def _boot(self) -> None:
        """Fill the run directory and :meth:`_launch` the server; :meth:`start` tears down if this raises."""

    @abc.abstractmethod
    def _command(self, port: int) -> list[str]:
        """Return the command line that runs the server on ``port``."""

    @abc.abstractmethod
    def _ready(self, port: int) -> bool:
        """Tell whether the server serves clients yet.

        Raises:
            ServerStartError: it never will; the message says why.
        """

    def binary(self) -> str:
        """The server binary in use (after :meth:`prepare`): the processes of a run share a server only if
        they agree on it."""
        return os.path.realpath(self.bindir or "")

    # --- run sharing: what _runshare drives --------------------------------------------------------------------
    @property
    def is_child(self) -> bool:
        """Whether the server process is our own child (we started it), so that we can wait() for it."""
        return self._proc is not None

    def adopt(self, share: Share, *, directory: str, port: int, version: str) -> None:
        """Point this unstarted server at one that another process of the run started and published."""
        self.share, self.owner, self.version = share, os.getpid(), version
        self.directory, self.port = directory, port

    def _path(self, name: str) -> str:
        """Return the path of ``name`` in the run directory."""
        assert self.directory
        return os.path.join(self.directory, name)

    def _spawn(self, cmd: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start a child in its own session, as the run user, and bound to this thread's life where we can."""
        if self._runas:
            kwargs.update(user=self._runas[0], group=self._runas[1], extra_groups=[])
        # A shared server must outlive us; a thread may end before us.
        if _system.PDEATHSIG and self.share is None and threading.current_thread() is threading.main_thread():
            kwargs["preexec_fn"] = deathsig_hook(os.getpid())  # SIGQUIT: postgres quits at once, mariadbd cleanly
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        kwargs.setdefault("env", minimal_env())  # the test process's secrets are not the server's business
        return subprocess.Popen(cmd, cwd=self.directory, start_new_session=True, **kwargs)

    def _start_watchdog(self) -> None:
        assert self.directory
        cmd = self.share.watchdog(self.directory) if self.share else [sys.executable, "-I", "-S", "-c", _system.WATCHDOG,
                                                                        self.directory]
        self._watchdog = Watchdog(cmd)

    def _tell(self, pid: int) -> None:
        """Tell the watchdog which process to stop if we die (0: none)."""
        if self._watchdog is not None:
            self._watchdog.tell(pid)

    def _run_step(self, cmd: list[str], stdin: bytes | None = None, **kwargs: Any) -> tuple[int, bytes]:
        """Run a setup step to its end; return its exit code and output (stdout and stderr together).

        Raises:
            ServerStartError: the step ran longer than :data:`STEP_TIMEOUT` (it is killed): every worker of
                the run waits for the template it makes, so a hung step must not hang them all.
        """
        proc = self._spawn(cmd, stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kwargs)
        self._tell(proc.pid)
        try:
            output = proc.communicate(stdin, timeout=STEP_TIMEOUT)[0]
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)  # our child, in a session of its own: its children go too
            output = proc.communicate()[0]
            raise ServerStartError(f"{os.path.basename(cmd[0])} did not finish within {STEP_TIMEOUT:g} s and was "
                                   f"killed.\nCommand: {shlex.join(cmd)}\nOutput:\n{tail(output)}") from None
        finally:
            self._tell(0)
        return proc.returncode, output

    def _from_template(self, data: str, template: str, make: Callable[[], None]) -> None:
        """Fill ``data`` from the cached ``template``, which ``make()`` (filling ``data``) creates if need be."""
        prune_stale(self.cache_dir)
        fill_from_template(data, template, make, cache_dir=self.cache_dir, runas=self._runas)

    def _launch(self, logfile: str, port_taken: bytes, log_name: str) -> None:
        """Run the server as our own child on a free port; try another port if someone took it meanwhile.

        Args:
            logfile: where the server's output goes.
            port_taken: what the server says there when its port is taken.
            log_name: what the error message calls the log.
        """
        for attempt in range(1, 6):
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            cmd = self._command(port)
            with open(logfile, "ab") as out:  # what the server says before it opens its own log goes there too
                if self._runas:
                    os.fchown(out.fileno(), *self._runas)  # mariadbd reopens it
                self._proc = self._spawn(cmd, stdout=out, stderr=subprocess.STDOUT)
            self._tell(self._proc.pid)
            problem = wait_ready(functools.partial(self._ready, port), self._proc, os.path.basename(cmd[0]), READY_TIMEOUT,
                                 self._poll_interval)
            if problem is None:
                self.port = port
                return
            with open(logfile, "rb") as out:
                server_log = out.read()
            if self._proc.poll() is None or port_taken not in server_log or attempt == 5:
                raise ServerStartError(f"{self.product} did not start: {problem}.\nCommand: {shlex.join(cmd)}\n"
                                       f"Last lines of {log_name}:\n{tail(server_log)}")
            self._log.debug("port %d was taken; trying another", port)
            self._proc.wait()
            self._tell(0)
            self._proc = None

    def halt(self) -> None:
        """Undo whatever start() did, in reverse order: stop our child, remove the run directory, end the watchdog.

        No run bookkeeping: :meth:`stop` is what users call.
        """
        proc, self._proc, self.port = self._proc, None, None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(self.stop_signal)
                try:
                    proc.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(OSError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            self._tell(0)  # reaped: its pid may be reused
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None
        if self._watchdog is not None:
            self._watchdog.close()  # the run directory is gone: it exits
            self._watchdog = None

    def release(self) -> None:
        """Let go of a shared server that other processes still use: it keeps running, and so does its watchdog."""
        if self._proc is not None:
            let_go(self._proc)
        if self._watchdog is not None:
            self._watchdog.detach()  # a shared server's watchdog goes on watching the run's processes
        self._proc = self._watchdog = None
        self.directory = self.port = None
