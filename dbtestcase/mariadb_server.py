"""The throwaway MariaDB server: mariadb-install-db once (cached), start, wait, stop.

.. versionadded:: 0.2
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import importlib.util
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import TYPE_CHECKING, Any, ClassVar

from .binaries import _locked, _run_as, _traversable
from .exceptions import ServerError, ServerNotFoundError, ServerStartError
from .server import _PDEATHSIG, _WATCHDOG, ENV_CACHE_DIR, READY_TIMEOUT, STOP_TIMEOUT, _deathsig_hook, _run_base, _tail

if TYPE_CHECKING:
    from typing_extensions import Self  # annotations only: no runtime dependency

__all__ = ["ENV_MARIADB_BINDIR", "MariaDBServer", "find_mariadbd", "shared_mariadb_server"]

log = logging.getLogger(__name__)

ENV_MARIADB_BINDIR = "DBTESTCASE_MARIADB_BINDIR"
SERVER_NAMES = ("mariadbd", "mysqld")
SYSTEM_DIRS = ("/usr/sbin", "/usr/local/mysql/bin", "/usr/local/bin")
INSTALL_DB_NAMES = ("mariadb-install-db", "mysql_install_db")
INSTALL_OPTIONS = ("--auth-root-authentication-method=normal", "--skip-test-db", "--skip-name-resolve")
DATABASE = "test"
# Run by mariadb-install-db last. It also drops the accounts named after this host, which --skip-name-resolve
# ignores with a warning at every start, so that the template does not depend on the host name.
_TEMPLATE_SQL = f"""
CREATE DATABASE IF NOT EXISTS `{DATABASE}`;
DELETE FROM mysql.global_priv WHERE Host NOT IN ('localhost', '127.0.0.1', '::1');
DELETE FROM mysql.proxies_priv WHERE Host NOT IN ('localhost', '127.0.0.1', '::1');
"""
_FIXES = (f"Fix it: install MariaDB (for example apt-get install mariadb-server), or set {ENV_MARIADB_BINDIR} to the "
          "directory of its mariadbd; or set DBTESTCASE_URL to a database server you already have.")


def find_mariadbd(explicit: str | None = None) -> str:
    """Return the path of a MariaDB server binary, ``mariadbd`` (or ``mysqld``, its old name).

    Searches the directory ``explicit``, ``$DBTESTCASE_MARIADB_BINDIR``, PATH, then :data:`SYSTEM_DIRS`.

    Raises:
        ServerNotFoundError: nothing found, or ``explicit`` or the variable is wrong; the message lists every
            place searched and the fixes.
    """
    searched: list[str] = []
    for label, value in (("argument bindir", explicit), (f"${ENV_MARIADB_BINDIR}", os.environ.get(ENV_MARIADB_BINDIR))):
        found = value and _server_in(value)
        if found:
            return found
        if value:  # a setting that is wrong is an error, not a hint to look elsewhere
            raise ServerNotFoundError(_not_found([*searched, f"{label}={value!r}: no executable mariadbd or mysqld there"]))
        searched.append(f"{label}: not set")
    for name in SERVER_NAMES:
        found = shutil.which(name)
        if found:
            return found
    searched.append("PATH: no mariadbd or mysqld")
    for directory in SYSTEM_DIRS:
        found = _server_in(directory)
        if found:
            return found
        searched.append(f"{directory}: no mariadbd or mysqld")
    raise ServerNotFoundError(_not_found(searched))


def _server_in(directory: str) -> str | None:
    paths = (os.path.join(directory, name) for name in SERVER_NAMES)
    return next((p for p in paths if os.path.isfile(p) and os.access(p, os.X_OK)), None)


def _not_found(searched: list[str]) -> str:
    places = "".join(f"\n  - {place}" for place in searched)
    return f"No MariaDB server binary (mariadbd or mysqld) was found. Searched:{places}\n{_FIXES}"


def _find_install_db(mariadbd: str) -> tuple[str, str | None]:
    """Return mariadb-install-db for ``mariadbd``, and the --basedir it needs (None: its built-in default).

    Packages keep it in the bin next to sbin; tarballs in ``scripts``, where it wants --basedir.
    """
    here = os.path.dirname(os.path.realpath(mariadbd))
    root = os.path.dirname(here)
    places = [(here, None), (os.path.join(root, "bin"), None), (os.path.join(root, "scripts"), root)]
    for directory, basedir in places:
        for name in INSTALL_DB_NAMES:
            path = os.path.join(directory, name)
            if os.access(path, os.X_OK):
                return path, basedir
    for name in INSTALL_DB_NAMES:
        found = shutil.which(name)
        if found:
            return found, None
    looked = ", ".join(directory for directory, _ in places)
    raise ServerNotFoundError(f"mariadb-install-db (or mysql_install_db) was not found for {mariadbd}: looked in {looked} "
                              f"and on PATH. Install the MariaDB server package that provides it, or set "
                              f"{ENV_MARIADB_BINDIR} to a complete MariaDB installation.")


_versions: dict[str, str] = {}


def _version(mariadbd: str) -> str:
    if mariadbd not in _versions:
        out = subprocess.run([mariadbd, "--version"], check=False, capture_output=True, text=True)
        match = re.search(r"Ver\s+(\d+(?:\.\d+)+)-MariaDB", out.stdout)
        if out.returncode or not match:
            raise ServerStartError(f"{mariadbd} --version said {(out.stdout + out.stderr).strip()!r} (exit code "
                                   f"{out.returncode}), not 'Ver X.Y.Z-MariaDB'; point {ENV_MARIADB_BINDIR} at MariaDB's "
                                   "mariadbd (MySQL's mysqld is not supported).")
        _versions[mariadbd] = match.group(1)
    return _versions[mariadbd]


def _answers(port: int) -> bool:
    """Tell whether the server on ``port`` lets root run SELECT 1 in ``test``, through PyMySQL (which the url needs
    anyway); without PyMySQL, whether it sends the protocol 10 handshake. Other login errors are raised."""
    if importlib.util.find_spec("pymysql") is None:
        return _greets(port)
    import pymysql

    try:
        conn = pymysql.connect(host="127.0.0.1", port=port, user="root", database=DATABASE, connect_timeout=5)
    except pymysql.OperationalError as exc:
        if exc.args and exc.args[0] >= 2000:  # a client error: not listening, or reset while the server loads grants
            return False
        raise
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        conn.close()
    return True


def _greets(port: int) -> bool:
    """Tell whether a server on ``port`` sends the protocol 10 handshake, which it does once it serves clients."""
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
        data = b""
        while len(data) < 5:
            chunk = sock.recv(5 - len(data))
            if not chunk:
                return False
            data += chunk
        return data[4] == 10
    return False


class MariaDBServer:
    """A throwaway MariaDB server in a private run directory, which :meth:`stop` removes.

    As root it runs as ``nobody``. Its data directory is a copy of a cached mariadb-install-db template that
    holds an empty database ``test`` and a user ``root`` with no password.

    Args:
        bindir: the directory of ``mariadbd``; None: :func:`find_mariadbd`.
        cache_dir: where templates are kept; default ``$DBTESTCASE_CACHE_DIR``, else
            ``$XDG_CACHE_HOME/dbtestcase`` or ``~/.cache/dbtestcase``.

    .. versionadded:: 0.2
    """

    #: Server options for the template and every run, small, fast and unsafe as suits a throwaway server.
    options: ClassVar[tuple[str, ...]] = (
        "--innodb-buffer-pool-size=16M", "--innodb-log-file-size=8M", "--innodb-log-buffer-size=2M",
        "--innodb-flush-log-at-trx-commit=0", "--innodb-doublewrite=0", "--innodb-buffer-pool-load-at-startup=0",
        "--innodb-buffer-pool-dump-at-shutdown=0", "--skip-log-bin", "--skip-name-resolve",
        "--default-storage-engine=InnoDB", "--character-set-server=utf8mb4", "--key-buffer-size=1M",
        "--aria-pagecache-buffer-size=8M", "--max-connections=200", "--table-open-cache=400",
    )

    def __init__(self, *, bindir: str | None = None, cache_dir: str | None = None) -> None:
        cache_home = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
        self.cache_dir = cache_dir or os.environ.get(ENV_CACHE_DIR) or os.path.join(cache_home, "dbtestcase")
        self.bindir = bindir
        self.mariadbd: str | None = None  # after start(): the binary actually used
        self.version: str | None = None
        self.directory: str | None = None
        self.port: int | None = None
        self._runas: tuple[int, int] | None = None
        self._owner = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._pipe: int | None = None

    @property
    def pid(self) -> int | None:
        """The mariadbd's pid, or None when not running."""
        return self._proc.pid if self._proc else None

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of database ``test`` as ``root`` (no password), through PyMySQL."""
        if self.port is None:
            raise ServerError("The MariaDBServer is not running: call start() before reading its url.")
        return f"mysql+pymysql://root@127.0.0.1:{self.port}/{DATABASE}"

    def __repr__(self) -> str:
        return f"<MariaDBServer pid={self.pid} directory={self.directory!r}>"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> Self:
        """Start the server and wait until it accepts connections; return self.

        Raises:
            ServerNotFoundError: no mariadbd or mariadb-install-db (see :func:`find_mariadbd`).
            ServerStartError: mariadb-install-db or mariadbd failed; the message ends with their output.
        """
        if self.directory is not None:
            raise ServerError(f"{self!r} is already started; stop() it first.")
        began = time.monotonic()
        self.mariadbd = find_mariadbd(self.bindir)
        self.version = _version(self.mariadbd)
        try:
            self._runas = _run_as()
        except ServerStartError:
            raise ServerStartError("Running as root, MariaDB would run as 'nobody', and there is no such user; run the "
                                   "tests as an ordinary user, or set DBTESTCASE_URL.") from None
        self._owner = os.getpid()
        if self._runas and not _traversable(os.path.dirname(self.mariadbd), *self._runas):
            raise ServerStartError(f"uid {self._runas[0]} (nobody) cannot reach {self.mariadbd}; install MariaDB where "
                                   "every user can read it, or run the tests as an ordinary user.")
        try:
            self.directory = tempfile.mkdtemp(prefix="dbtestcase-mariadb-", dir=_run_base(self._runas))
            self._start_watchdog()
            if self._runas:  # a directory we just made; never the user's own
                os.chown(self.directory, *self._runas)
            self._make_data(os.path.join(self.directory, "data"))
            self._launch(os.path.join(self.directory, "data"))
        except BaseException:
            self._teardown()
            raise
        log.info("started MariaDB %s at %s in %s (%.2fs)", self.version, self.url, self.directory, time.monotonic() - began)
        return self

    def stop(self) -> None:
        """Stop the server and remove its directory; safe to call twice, and a no-op in a forked child."""
        if self._owner != os.getpid() or self.directory is None:
            return
        url, directory = self.url if self.port else None, self.directory
        self._teardown()
        log.info("stopped MariaDB at %s and removed %s", url, directory)

    def _spawn(self, cmd: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start a child in its own session, as the run user, and bound to this thread's life where we can."""
        if self._runas:
            kwargs.update(user=self._runas[0], group=self._runas[1], extra_groups=[])
        if _PDEATHSIG and threading.current_thread() is threading.main_thread():  # a thread may end first
            kwargs["preexec_fn"] = _deathsig_hook(os.getpid())  # SIGQUIT: mariadbd shuts down normally
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
        """Fill ``data`` from the cached template, making the template with mariadb-install-db first if need be."""
        assert self.mariadbd
        install_db, basedir = _find_install_db(self.mariadbd)
        key = "\0".join([os.path.realpath(self.mariadbd), str(self.version), install_db, *INSTALL_OPTIONS, *self.options])
        template = os.path.join(self.cache_dir, f"mariadb-{self.version}-{hashlib.sha256(key.encode()).hexdigest()[:16]}")
        if not os.path.isdir(template):
            os.makedirs(self.cache_dir, exist_ok=True)
            with _locked(template + ".lock"):
                if not os.path.isdir(template):
                    self._install_db(install_db, basedir, data)
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

    def _install_db(self, install_db: str, basedir: str | None, data: str) -> None:
        """Run mariadb-install-db into ``data`` with the same mariadbd and options as the runs, and add ``test``."""
        assert self.directory and self.mariadbd
        extra = os.path.join(self.directory, "template.sql")
        with open(extra, "w") as f:
            f.write(_TEMPLATE_SQL)
        os.chmod(extra, 0o644)
        cmd = [install_db, "--no-defaults", *INSTALL_OPTIONS, f"--datadir={data}", f"--extra-file={extra}"]
        cmd += [f"--basedir={basedir}"] if basedir else []
        cmd += [*self.options, f"--tmpdir={self.directory}"]
        env = {**os.environ, "MYSQLD_BOOTSTRAP": self.mariadbd}  # the binary found, not the script's built-in one
        proc = self._spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        self._tell(proc.pid)
        output = proc.communicate()[0]
        self._tell(0)
        os.unlink(extra)
        if proc.returncode:
            raise ServerStartError(f"mariadb-install-db failed with exit code {proc.returncode}.\n"
                                   f"Command: {shlex.join(cmd)}\nOutput:\n{_tail(output)}")

    def _launch(self, data: str) -> None:
        """Run mariadbd as our own child on a free port; try another port if someone took it meanwhile."""
        assert self.mariadbd and self.directory
        logfile, pidfile = os.path.join(self.directory, "error.log"), os.path.join(self.directory, "mysqld.pid")
        for attempt in range(1, 6):
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            cmd = [self.mariadbd, "--no-defaults", f"--datadir={data}", f"--port={port}", "--bind-address=127.0.0.1",
                   f"--socket={os.path.join(self.directory, 'mysqld.sock')}", f"--pid-file={pidfile}",
                   f"--log-error={logfile}", f"--tmpdir={self.directory}", *self.options]
            with open(logfile, "ab") as out:  # what mariadbd says before it opens the log goes there too
                if self._runas:
                    os.fchown(out.fileno(), *self._runas)  # mariadbd reopens it
                self._proc = self._spawn(cmd, stdout=out, stderr=subprocess.STDOUT)
            self._tell(self._proc.pid)
            problem = self._wait_ready(port, pidfile)
            if problem is None:
                self.port = port
                return
            with open(logfile, "rb") as out:
                error_log = out.read()
            if self._proc.poll() is None or b"Address already in use" not in error_log or attempt == 5:
                raise ServerStartError(f"MariaDB did not start: {problem}.\nCommand: {shlex.join(cmd)}\n"
                                       f"Last lines of {logfile}:\n{_tail(error_log)}")
            log.debug("port %d was taken; trying another", port)
            self._proc.wait()
            self._tell(0)
            self._proc = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(pidfile)

    def _wait_ready(self, port: int, pidfile: str) -> str | None:
        """Poll for the pid file (written once the port is bound), then for an answer; return what went wrong, or None."""
        assert self._proc
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if os.path.exists(pidfile):
                try:
                    if _answers(port):
                        return None
                except Exception as exc:  # noqa: BLE001 - any DBAPI error: the message shows it
                    return (f"root could not log in to database {DATABASE!r} ({exc}); if the cached template in "
                            f"{self.cache_dir} is damaged, remove it (mariadb-*) and try again")
            if self._proc.poll() is not None:
                return f"mariadbd exited with code {self._proc.returncode}"
            if time.monotonic() > deadline:
                return f"mariadbd was not ready after {READY_TIMEOUT:g} s"
            time.sleep(0.005)

    def _teardown(self) -> None:
        """Undo whatever start() did, in reverse order."""
        proc, self._proc, self.port = self._proc, None, None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # normal shutdown
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


_shared: MariaDBServer | None = None
_shared_lock = threading.Lock()


def _reset_lock() -> None:
    global _shared_lock
    _shared_lock = threading.Lock()  # another thread may have held it at fork time


os.register_at_fork(after_in_child=_reset_lock)


def shared_mariadb_server() -> MariaDBServer:
    """Return the process-wide MariaDB server, starting it on the first call; atexit stops it.

    Thread-safe. A process forked from the owner gets the owner's server, and cannot stop it.
    """
    global _shared
    with _shared_lock:
        if _shared is None or _shared.directory is None:  # none yet, or stopped
            server = MariaDBServer().start()
            atexit.register(server.stop)
            _shared = server
        return _shared
