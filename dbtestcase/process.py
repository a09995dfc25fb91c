"""What the throwaway servers share: a run directory, a watchdog, child processes, the stop (one server per process
or per parallel run: runshare.py)."""

from __future__ import annotations

import abc
import contextlib
import ctypes
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

from .binaries import _locked, _traversable
from .exceptions import ServerError, ServerStartError

if TYPE_CHECKING:
    from typing_extensions import Self  # annotations only: no runtime dependency

    from .runshare import Share

__all__ = ["ChildServer"]

ENV_CACHE_DIR = "DBTESTCASE_CACHE_DIR"
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
MIN_SHM_FREE = 256 * 1024 * 1024
_PDEATHSIG = sys.platform.startswith("linux")  # False: rely on the watchdog alone (as a test does)
_let_go: list[subprocess.Popen[bytes]] = []  # children of shared servers others still use: no ResourceWarning

# Runs in its own session, so a Ctrl-C to the terminal does not reach it. Its stdin is a pipe whose write
# end only the owner holds: each line is the pid to stop if the owner dies (0: none); EOF: the owner is gone.
_WATCHDOG = r"""
import os, shutil, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGHUP, signal.SIG_IGN)
pid = 0
for line in sys.stdin.buffer:
    pid = int(line)
def alive():
    try:
        os.kill(pid, 0)
        with open("/proc/%d/stat" % pid) as f:  # a zombie is dead: PID 1 may never reap it
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except ProcessLookupError:
        return False
    except OSError:
        return True
for sig in (signal.SIGQUIT, signal.SIGKILL) if pid else ():
    if alive():
        try:
            os.killpg(pid, sig)  # the server leads its own session: its children go too
        except OSError:
            pass
    end = time.monotonic() + 5
    while alive() and time.monotonic() < end:
        time.sleep(0.01)
shutil.rmtree(sys.argv[1], ignore_errors=True)
"""


def _run_base(runas: tuple[int, int] | None) -> str:
    """Return where run directories go: /dev/shm when it has room, else the temp dir."""
    candidates = [tempfile.gettempdir(), "/tmp"]
    with contextlib.suppress(OSError):
        st = os.statvfs("/dev/shm")
        if st.f_bavail * st.f_frsize >= MIN_SHM_FREE:
            candidates.insert(0, "/dev/shm")
    usable = [c for c in candidates if os.path.isdir(c) and (runas is None or _traversable(c, *runas))]
    return (usable or candidates)[0]


def _deathsig_hook(parent: int) -> Callable[[], None]:
    """Return a preexec_fn asking for SIGQUIT when the parent thread dies (after the user switch clears it)."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def hook() -> None:
        prctl(1, signal.SIGQUIT)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl
            os.kill(os.getpid(), signal.SIGQUIT)
    return hook


def _tail(data: bytes, lines: int = 30) -> str:
    return "\n".join(data.decode(errors="replace").rstrip().splitlines()[-lines:])


class ChildServer(abc.ABC):
    """A database server run as our child in a private run directory, which :meth:`stop` removes.

    A watchdog stops the server and removes the directory if this process dies without calling :meth:`stop`.
    Subclasses find their binaries in :meth:`_prepare`, fill the directory in :meth:`_boot` and end it with
    :meth:`_launch`, which runs :meth:`_command` until :meth:`_ready`.
    """

    _stop_signal: ClassVar[signal.Signals]  # asks the server for a quick, clean shutdown
    _product: ClassVar[str]  # the name in messages
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
        self._owner = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._pipe: int | None = None
        # Set by runshare when the processes of a parallel run share this server: it must then outlive us, its
        # watchdog watches the run's processes instead of us, and stop() only stops it for the last of them.
        self._share: Share | None = None

    @property
    def pid(self) -> int | None:
        """The server process's pid, or None when not running."""
        if self._proc:
            return self._proc.pid
        return self._share.pid if self._share and self.directory else None  # attached to a run's server

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
        self._prepare()
        self._owner = os.getpid()
        try:
            self.directory = tempfile.mkdtemp(prefix=self._run_prefix, dir=_run_base(self._runas))
            self._start_watchdog()
            if self._runas:  # a directory we just made; never the user's own
                os.chown(self.directory, *self._runas)
            self._boot()
        except BaseException:
            self._teardown()
            raise
        self._log.info("started %s %s at %s in %s (%.2fs)", self._product, self.version, self.url, self.directory,
                       time.monotonic() - began)
        return self

    def stop(self) -> None:
        """Stop the server and remove its directory; safe to call twice, and a no-op in a forked child.

        For a server shared by a parallel run, leave the run: the server stops only when no process uses it.
        """
        if self._owner != os.getpid() or self.directory is None:
            return
        if self._share is not None:
            self._share.leave(self)
            return
        url, directory = self.url if self.port else None, self.directory
        self._teardown()
        self._log.info("stopped %s at %s and removed %s", self._product, url, directory)

    @abc.abstractmethod
    def _prepare(self) -> None:
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

    def _binary(self) -> str:
        """The server binary in use (after :meth:`_prepare`): the processes of a run share a server only if
        they agree on it."""
        return os.path.realpath(self.bindir or "")

    def _path(self, name: str) -> str:
        """Return the path of ``name`` in the run directory."""
        assert self.directory
        return os.path.join(self.directory, name)

    def _spawn(self, cmd: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start a child in its own session, as the run user, and bound to this thread's life where we can."""
        if self._runas:
            kwargs.update(user=self._runas[0], group=self._runas[1], extra_groups=[])
        # A shared server must outlive us; a thread may end before us.
        if _PDEATHSIG and self._share is None and threading.current_thread() is threading.main_thread():
            kwargs["preexec_fn"] = _deathsig_hook(os.getpid())  # SIGQUIT: postgres quits at once, mariadbd cleanly
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.Popen(cmd, cwd=self.directory, start_new_session=True, **kwargs)

    def _start_watchdog(self) -> None:
        assert self.directory
        read, self._pipe = os.pipe()  # close-on-exec: no other child inherits the write end
        cmd = self._share.watchdog(self.directory) if self._share else [sys.executable, "-I", "-S", "-c", _WATCHDOG,
                                                                        self.directory]
        try:
            self._watchdog = subprocess.Popen(cmd, stdin=read, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                              cwd="/", start_new_session=True)
        finally:
            os.close(read)

    def _tell(self, pid: int) -> None:
        """Tell the watchdog which process to stop if we die (0: none)."""
        if self._pipe is not None:
            with contextlib.suppress(OSError):
                os.write(self._pipe, b"%d\n" % pid)

    def _run_step(self, cmd: list[str], stdin: bytes | None = None, **kwargs: Any) -> tuple[int, bytes]:
        """Run a setup step to its end; return its exit code and output (stdout and stderr together)."""
        proc = self._spawn(cmd, stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kwargs)
        self._tell(proc.pid)
        output = proc.communicate(stdin)[0]
        self._tell(0)
        return proc.returncode, output

    def _from_template(self, data: str, template: str, make: Callable[[], None]) -> None:
        """Fill ``data`` from the cached ``template``; if there is none yet, ``make()`` fills ``data``, which
        becomes the template."""
        if not os.path.isdir(template):
            os.makedirs(self.cache_dir, exist_ok=True)
            with _locked(template + ".lock"):
                if not os.path.isdir(template):
                    make()
                    tmp = tempfile.mkdtemp(prefix=".tmp-", dir=self.cache_dir)
                    shutil.copytree(data, tmp, symlinks=True, dirs_exist_ok=True)
                    os.rename(tmp, template)  # publish atomically
                    return
        shutil.copytree(template, data, symlinks=True, copy_function=shutil.copyfile)
        if self._runas:
            for dirpath, _, files in os.walk(data):
                os.chown(dirpath, *self._runas)
                for name in files:
                    os.chown(os.path.join(dirpath, name), *self._runas, follow_symlinks=False)

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
            problem = self._wait_ready(port, os.path.basename(cmd[0]))
            if problem is None:
                self.port = port
                return
            with open(logfile, "rb") as out:
                server_log = out.read()
            if self._proc.poll() is None or port_taken not in server_log or attempt == 5:
                raise ServerStartError(f"{self._product} did not start: {problem}.\nCommand: {shlex.join(cmd)}\n"
                                       f"Last lines of {log_name}:\n{_tail(server_log)}")
            self._log.debug("port %d was taken; trying another", port)
            self._proc.wait()
            self._tell(0)
            self._proc = None

    def _wait_ready(self, port: int, name: str) -> str | None:
        """Poll :meth:`_ready` until it holds; return what went wrong with the process ``name``, or None."""
        assert self._proc
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            try:
                if self._ready(port):
                    return None
            except ServerStartError as exc:
                return str(exc)
            if self._proc.poll() is not None:
                return f"{name} exited with code {self._proc.returncode}"
            if time.monotonic() > deadline:
                return f"{name} was not ready after {READY_TIMEOUT:g} s"
            time.sleep(self._poll_interval)

    def _teardown(self) -> None:
        """Undo whatever start() did, in reverse order."""
        proc, self._proc, self.port = self._proc, None, None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(self._stop_signal)
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
        if self._pipe is not None:
            os.close(self._pipe)  # EOF: the watchdog exits
            self._pipe = None
        if self._watchdog is not None:
            try:
                self._watchdog.wait(5)
            except subprocess.TimeoutExpired:
                self._watchdog.kill()
                self._watchdog.wait()
            self._watchdog = None

    def _forget(self) -> None:
        """Let go of a shared server that other processes still use: it keeps running, and so does its watchdog."""
        _let_go.extend(child for child in (self._proc, self._watchdog) if child is not None)
        self._proc = self._watchdog = None
        if self._pipe is not None:
            os.close(self._pipe)  # EOF: a shared server's watchdog goes on watching the run's processes
            self._pipe = None
        self.directory = self.port = None
