"""The throwaway MariaDB server: mariadb-install-db once (cached), start, wait, stop.

.. versionadded:: 0.2
"""

from __future__ import annotations

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
from typing import ClassVar

from ..exceptions import ServerNotFoundError, ServerStartError
from ._process import ENV_CACHE_DIR as ENV_CACHE_DIR  # re-exported (the "as" form), as in 0.2
from ._process import READY_TIMEOUT as READY_TIMEOUT
from ._process import STOP_TIMEOUT as STOP_TIMEOUT
from ._process import ChildServer
from ._runshare import Shared
from ._system import minimal_env, run_as, tail, traversable

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


class MariaDBServer(ChildServer):
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

    stop_signal = signal.SIGTERM  # normal shutdown
    product = "MariaDB"
    _run_prefix = "dbtestcase-mariadb-"
    _poll_interval = 0.005
    _log = log

    def __init__(self, *, bindir: str | None = None, cache_dir: str | None = None) -> None:
        super().__init__(bindir=bindir, cache_dir=cache_dir)
        self.mariadbd: str | None = None  # after start(): the binary actually used

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of database ``test`` as ``root`` (no password), through PyMySQL."""
        return f"mysql+pymysql://root@127.0.0.1:{self._running_port()}/{DATABASE}"

    def prepare(self) -> None:
        self.mariadbd = find_mariadbd(self.bindir)
        self.version = _version(self.mariadbd)
        try:
            self._runas = run_as()
        except ServerStartError:
            raise ServerStartError("Running as root, MariaDB would run as 'nobody', and there is no such user; run the "
                                   "tests as an ordinary user, or set DBTESTCASE_URL.") from None
        if self._runas and not traversable(os.path.dirname(self.mariadbd), *self._runas):
            raise ServerStartError(f"uid {self._runas[0]} (nobody) cannot reach {self.mariadbd}; install MariaDB where "
                                   "every user can read it, or run the tests as an ordinary user.")

    def binary(self) -> str:
        assert self.mariadbd
        return os.path.realpath(self.mariadbd)

    def _boot(self) -> None:
        self._make_data(self._path("data"))
        self._launch(self._path("error.log"), b"Address already in use", self._path("error.log"))

    def _make_data(self, data: str) -> None:
        """Fill ``data`` from the cached template, making the template with mariadb-install-db first if need be."""
        assert self.mariadbd
        install_db, basedir = _find_install_db(self.mariadbd)
        key = "\0".join([os.path.realpath(self.mariadbd), str(self.version), install_db, *INSTALL_OPTIONS, *self.options])
        template = os.path.join(self.cache_dir, f"mariadb-{self.version}-{hashlib.sha256(key.encode()).hexdigest()[:16]}")
        self._from_template(data, template, lambda: self._install_db(install_db, basedir, data))

    def _install_db(self, install_db: str, basedir: str | None, data: str) -> None:
        """Run mariadb-install-db into ``data`` with the same mariadbd and options as the runs, and add ``test``."""
        assert self.directory and self.mariadbd
        extra = self._path("template.sql")
        with open(extra, "w") as f:
            f.write(_TEMPLATE_SQL)
        os.chmod(extra, 0o644)
        cmd = [install_db, "--no-defaults", *INSTALL_OPTIONS, f"--datadir={data}", f"--extra-file={extra}"]
        cmd += [f"--basedir={basedir}"] if basedir else []
        cmd += [*self.options, f"--tmpdir={self.directory}"]
        env = minimal_env(MYSQLD_BOOTSTRAP=self.mariadbd)  # the binary found, not the script's built-in one
        code, output = self._run_step(cmd, env=env)
        os.unlink(extra)
        if code:
            raise ServerStartError(f"mariadb-install-db failed with exit code {code}.\n"
                                   f"Command: {shlex.join(cmd)}\nOutput:\n{tail(output)}")

    def _command(self, port: int) -> list[str]:
        assert self.mariadbd and self.directory
        return [self.mariadbd, "--no-defaults", f"--datadir={self._path('data')}", f"--port={port}",
                "--bind-address=127.0.0.1", f"--socket={self._path('mysqld.sock')}", f"--pid-file={self._path('mysqld.pid')}",
                f"--log-error={self._path('error.log')}", f"--tmpdir={self.directory}", *self.options]

    def _ready(self, port: int) -> bool:
        """Tell whether root can run SELECT 1 in ``test``, once the pid file (written once the port is bound) is there."""
        if not os.path.exists(self._path("mysqld.pid")):
            return False
        try:
            return _answers(port)
        except Exception as exc:  # any DBAPI error: the message shows it
            raise ServerStartError(f"root could not log in to database {DATABASE!r} ({exc}); if the cached template in "
                                   f"{self.cache_dir} is damaged, remove it (mariadb-*) and try again") from exc


_shared = Shared(MariaDBServer)


def shared_mariadb_server() -> MariaDBServer:
    """Return the process-wide MariaDB server, starting it on the first call; atexit stops it.

    Thread-safe. A process forked from the owner gets the owner's server, and cannot stop it. When
    :func:`~dbtestcase.workers.run_id` is set, the processes of the run share one server instead: the first
    starts it, the others attach, the last one to exit stops it (see :doc:`parallel`).
    """
    return _shared.get()
