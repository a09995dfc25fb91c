"""The throwaway PostgreSQL server: initdb once (cached), start, wait, stop; binaries come from binaries.py."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import hashlib
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
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from .binaries import (
    EMBEDDED_PACKAGES,  # noqa: F401 - re-exported, as the constants used to live here
    ENV_BINDIR,  # noqa: F401
    SYSTEM_BINDIRS,  # noqa: F401
    _locked,
    _run_as,
    _traversable,
    _usable_bindir,
    _version,
    embedded_bindir,
    find_bindir,
)
from .exceptions import ServerError, ServerStartError

if TYPE_CHECKING:
    from typing_extensions import Self  # annotations only: no runtime dependency

__all__ = ["PostgresServer", "embedded_bindir", "find_bindir", "shared_server"]

log = logging.getLogger(__name__)

ENV_CACHE_DIR = "DBTESTCASE_CACHE_DIR"
INITDB_OPTIONS = ("--no-sync", "--locale=C", "-E", "UTF8", "-U", "postgres", "--auth=trust")
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
MIN_SHM_FREE = 256 * 1024 * 1024
_PDEATHSIG = sys.platform.startswith("linux")  # False: rely on the watchdog alone (as a test does)

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
            os.killpg(pid, sig)  # the postmaster leads its own session: its backends go too
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


class PostgresServer:
    """A throwaway PostgreSQL server in a private run directory, which :meth:`stop` removes.

    As root it runs as ``nobody``. Its data directory is a copy of a cached initdb template.

    Args:
        bindir: the directory of ``initdb`` and ``postgres``; None: :func:`find_bindir`.
        cache_dir: where initdb templates are kept; default ``$DBTESTCASE_CACHE_DIR``, else
            ``$XDG_CACHE_HOME/dbtestcase`` or ``~/.cache/dbtestcase``.
    """

    #: Settings passed as ``-c name=value``, fast and unsafe as suits a throwaway cluster. Dynamic shared memory
    #: in files of the data directory (mmap), so that even a SIGKILLed server leaves none in /dev/shm.
    settings: ClassVar[Mapping[str, str]] = {
        "fsync": "off", "full_page_writes": "off", "synchronous_commit": "off", "shared_buffers": "16MB",
        "autovacuum": "off", "wal_level": "minimal", "max_wal_senders": "0", "max_connections": "200",
        "dynamic_shared_memory_type": "mmap",
    }

    def __init__(self, *, bindir: str | None = None, cache_dir: str | None = None) -> None:
        cache_home = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
        self.cache_dir = cache_dir or os.environ.get(ENV_CACHE_DIR) or os.path.join(cache_home, "dbtestcase")
        self.bindir = bindir  # after start(): the directory actually used (maybe a copy)
        self.version: str | None = None
        self.directory: str | None = None
        self.port: int | None = None
        self._requested_bindir = bindir
        self._runas: tuple[int, int] | None = None
        self._owner = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._pipe: int | None = None

    @property
    def pid(self) -> int | None:
        """The postmaster's pid, or None when not running."""
        return self._proc.pid if self._proc else None

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of database ``test`` as superuser ``postgres`` (trust authentication, so no password)."""
        if self.port is None:
            raise ServerError("The PostgresServer is not running: call start() before reading its url.")
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/test"

    def __repr__(self) -> str:
        return f"<PostgresServer pid={self.pid} directory={self.directory!r}>"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> Self:
        """Start the server and wait until it accepts connections; return self.

        Raises:
            ServerNotFoundError: no binaries (see :func:`find_bindir`).
            ServerStartError: initdb or postgres failed; the message ends with their output.
        """
        if self.directory is not None:
            raise ServerError(f"{self!r} is already started; stop() it first.")
        began = time.monotonic()
        bindir = find_bindir(self._requested_bindir)
        self._runas, self._owner = _run_as(), os.getpid()
        try:
            self.bindir = _usable_bindir(bindir, self._runas)
            self.version = _version(self.bindir)
            self.directory = tempfile.mkdtemp(prefix="dbtestcase-pg-", dir=_run_base(self._runas))
            self._start_watchdog()
            sockets, data = os.path.join(self.directory, "socket"), os.path.join(self.directory, "data")
            os.mkdir(sockets, 0o700)
            if self._runas:  # directories we just made; never the user's own
                os.chown(self.directory, *self._runas)
                os.chown(sockets, *self._runas)
            self._make_data(data)
            self._launch(data, sockets)
        except BaseException:
            self._teardown()
            raise
        log.info("started PostgreSQL %s at %s in %s (%.2fs)", self.version, self.url, self.directory,
                 time.monotonic() - began)
        return self

    def stop(self) -> None:
        """Stop the server and remove its directory; safe to call twice, and a no-op in a forked child."""
        if self._owner != os.getpid() or self.directory is None:
            return
        url, directory = self.url if self.port else None, self.directory
        self._teardown()
        log.info("stopped PostgreSQL at %s and removed %s", url, directory)

    def _spawn(self, cmd: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start a child in its own session, as the run user, and bound to this thread's life where we can."""
        if self._runas:
            kwargs.update(user=self._runas[0], group=self._runas[1], extra_groups=[])
        if _PDEATHSIG and threading.current_thread() is threading.main_thread():  # a thread may end first
            kwargs["preexec_fn"] = _deathsig_hook(os.getpid())
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.Popen(cmd, cwd=self.directory, start_new_session=True, **kwargs)

    def _start_watchdog(self) -> None:
        assert self.directory
        read, self._pipe = os.pipe()  # close-on-exec: no other child inherits the write end
        try:
            self._watchdog = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _WATCHDOG, self.directory], stdin=read,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/", start_new_session=True)
        finally:
            os.close(read)

    def _tell(self, pid: int) -> None:
        """Tell the watchdog which process to stop if we die (0: none)."""
        if self._pipe is not None:
            with contextlib.suppress(OSError):
                os.write(self._pipe, b"%d\n" % pid)

    def _make_data(self, data: str) -> None:
        """Fill ``data`` from the cached template, making the template with initdb first if need be."""
        assert self.bindir
        ident = hashlib.sha256(f"{os.path.realpath(self.bindir)}\0{self.version}\0{INITDB_OPTIONS}\0test".encode())
        template = os.path.join(self.cache_dir, f"template-{self.version}-{ident.hexdigest()[:16]}")
        if not os.path.isdir(template):
            os.makedirs(self.cache_dir, exist_ok=True)
            with _locked(template + ".lock"):
                if not os.path.isdir(template):
                    self._initdb(data)
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

    def _initdb(self, data: str) -> None:
        assert self.bindir
        cmd = [os.path.join(self.bindir, "initdb"), "-D", data, *INITDB_OPTIONS]
        proc = self._spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self._tell(proc.pid)
        output = proc.communicate()[0]
        self._tell(0)
        if proc.returncode:
            raise ServerStartError(f"initdb failed with exit code {proc.returncode}.\nCommand: {shlex.join(cmd)}\n"
                                   f"Output:\n{_tail(output)}")
        # A database named "test", so that every process (the guard of DBTESTCASE_ALLOW_DESTRUCTIVE
        # included) sees a test database in the URL. Single-user mode: no server to start yet.
        cmd = [os.path.join(self.bindir, "postgres"), "--single", "-D", data, "-c", "fsync=off", "postgres"]
        proc = self._spawn(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self._tell(proc.pid)
        output = proc.communicate(b"CREATE DATABASE test;\n")[0]
        self._tell(0)
        if proc.returncode or b"ERROR" in output:
            raise ServerStartError(f"creating database test failed (exit code {proc.returncode}).\n"
                                   f"Command: {shlex.join(cmd)}\nOutput:\n{_tail(output)}")

    def _launch(self, data: str, sockets: str) -> None:
        """Run postgres as our own child on a free port; try another port if someone took it meanwhile."""
        assert self.bindir and self.directory
        logfile = os.path.join(self.directory, "postgres.log")
        for attempt in range(1, 6):
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            options = {**self.settings, "listen_addresses": "127.0.0.1", "port": port,
                       "unix_socket_directories": sockets}
            cmd = [os.path.join(self.bindir, "postgres"), "-D", data]
            cmd += [arg for name, value in options.items() for arg in ("-c", f"{name}={value}")]
            with open(logfile, "ab") as out:
                self._proc = self._spawn(cmd, stdout=out, stderr=subprocess.STDOUT)
            self._tell(self._proc.pid)
            problem = self._wait_ready(os.path.join(data, "postmaster.pid"))
            if problem is None:
                self.port = port
                return
            with open(logfile, "rb") as out:
                server_log = out.read()
            if self._proc.poll() is None or b"could not bind" not in server_log or attempt == 5:
                raise ServerStartError(f"PostgreSQL did not start: {problem}.\nCommand: {shlex.join(cmd)}\n"
                                       f"Last lines of the server log:\n{_tail(server_log)}")
            log.debug("port %d was taken; trying another", port)
            self._proc = None

    def _wait_ready(self, pidfile: str) -> str | None:
        """Poll postmaster.pid until its 8th line says ready; return what went wrong, or None."""
        assert self._proc
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            with contextlib.suppress(FileNotFoundError), open(pidfile, "rb") as f:
                lines = f.read().split(b"\n")
                if len(lines) > 7 and lines[7].strip() == b"ready":
                    return None
            if self._proc.poll() is not None:
                return f"postgres exited with code {self._proc.returncode}"
            if time.monotonic() > deadline:
                return f"postgres was not ready after {READY_TIMEOUT:g} s"
            time.sleep(0.002)

    def _teardown(self) -> None:
        """Undo whatever start() did, in reverse order."""
        proc, self._proc, self.port = self._proc, None, None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)  # fast shutdown
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


_shared: PostgresServer | None = None
_shared_lock = threading.Lock()


def _reset_lock() -> None:
    global _shared_lock
    _shared_lock = threading.Lock()  # another thread may have held it at fork time


os.register_at_fork(after_in_child=_reset_lock)


def shared_server() -> PostgresServer:
    """Return the process-wide server, starting it on the first call; atexit stops it.

    Thread-safe. A process forked from the owner gets the owner's server, and cannot stop it.
    """
    global _shared
    with _shared_lock:
        if _shared is None or _shared.directory is None:  # none yet, or stopped
            server = PostgresServer().start()
            atexit.register(server.stop)
            _shared = server
        return _shared
