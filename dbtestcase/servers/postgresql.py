"""The throwaway PostgreSQL server: initdb once (cached), start, wait; ``binaries`` finds it, ``_process`` runs it."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shlex
import signal
from collections.abc import Mapping
from typing import ClassVar

from ..exceptions import ServerStartError

# Re-exported (the "as" form), as the constants of 0.2's dbtestcase.server.
from ._process import ENV_CACHE_DIR as ENV_CACHE_DIR
from ._process import READY_TIMEOUT as READY_TIMEOUT
from ._process import STOP_TIMEOUT as STOP_TIMEOUT
from ._process import ChildServer
from ._runshare import Shared
from ._system import MIN_SHM_FREE as MIN_SHM_FREE
from ._system import run_as, tail
from .binaries import EMBEDDED_PACKAGES as EMBEDDED_PACKAGES
from .binaries import ENV_BINDIR as ENV_BINDIR
from .binaries import SYSTEM_BINDIRS as SYSTEM_BINDIRS
from .binaries import (
    embedded_bindir,
    find_bindir,
    usable_bindir,
    version,
)

__all__ = ["PostgresServer", "embedded_bindir", "find_bindir", "shared_server"]

log = logging.getLogger(__name__)

INITDB_OPTIONS = ("--no-sync", "--locale=C", "-E", "UTF8", "-U", "postgres", "--auth=trust")


class PostgresServer(ChildServer):
    """A throwaway PostgreSQL server in a private run directory, which :meth:`stop` removes.

    As root it runs as ``nobody``. Its data directory is a copy of a cached initdb template.

    Args:
        bindir: the directory of ``initdb`` and ``postgres``; None: :func:`~dbtestcase.servers.binaries.find_bindir`.
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
    stop_signal = signal.SIGINT  # fast shutdown
    product = "PostgreSQL"
    _run_prefix = "dbtestcase-pg-"
    _poll_interval = 0.002
    _log = log

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of database ``test`` as superuser ``postgres`` (trust authentication, so no password)."""
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self._running_port()}/test"

    def prepare(self) -> None:
        bindir = find_bindir(self._requested_bindir)
        self._runas = run_as()
        self.bindir = usable_bindir(bindir, self._runas)
        self.version = version(self.bindir)

    def _boot(self) -> None:
        os.mkdir(self._path("socket"), 0o700)
        if self._runas:  # a directory we just made
            os.chown(self._path("socket"), *self._runas)
        self._make_data(self._path("data"))
        self._launch(self._path("postgres.log"), b"could not bind", "the server log")

    def _make_data(self, data: str) -> None:
        """Fill ``data`` from the cached template, making the template with initdb first if need be."""
        assert self.bindir
        ident = hashlib.sha256(f"{os.path.realpath(self.bindir)}\0{self.version}\0{INITDB_OPTIONS}\0test".encode())
        template = os.path.join(self.cache_dir, f"template-{self.version}-{ident.hexdigest()[:16]}")
        self._from_template(data, template, lambda: self._initdb(data))

    def _initdb(self, data: str) -> None:
        assert self.bindir
        cmd = [os.path.join(self.bindir, "initdb"), "-D", data, *INITDB_OPTIONS]
        code, output = self._run_step(cmd)
        if code:
            raise ServerStartError(f"initdb failed with exit code {code}.\nCommand: {shlex.join(cmd)}\n"
                                   f"Output:\n{tail(output)}")
        # A database named "test", so that every process (the guard of DBTESTCASE_ALLOW_DESTRUCTIVE
        # included) sees a test database in the URL. Single-user mode: no server to start yet.
        cmd = [os.path.join(self.bindir, "postgres"), "--single", "-D", data, "-c", "fsync=off", "postgres"]
        code, output = self._run_step(cmd, b"CREATE DATABASE test;\n")
        if code or b"ERROR" in output:
            raise ServerStartError(f"creating database test failed (exit code {code}).\n"
                                   f"Command: {shlex.join(cmd)}\nOutput:\n{tail(output)}")

    def _command(self, port: int) -> list[str]:
        assert self.bindir
        options = {**self.settings, "listen_addresses": "127.0.0.1", "port": port,
                   "unix_socket_directories": self._path("socket")}
        cmd = [os.path.join(self.bindir, "postgres"), "-D", self._path("data")]
        return cmd + [arg for name, value in options.items() for arg in ("-c", f"{name}={value}")]

    def _ready(self, port: int) -> bool:
        """Tell whether the 8th line of postmaster.pid says ready."""
        with contextlib.suppress(FileNotFoundError), open(os.path.join(self._path("data"), "postmaster.pid"), "rb") as f:
            lines = f.read().split(b"\n")
            return len(lines) > 7 and lines[7].strip() == b"ready"
        return False


_shared = Shared(PostgresServer)


def shared_server() -> PostgresServer:
    """Return the process-wide server, starting it on the first call; atexit stops it.

    Thread-safe. A process forked from the owner gets the owner's server, and cannot stop it. When
    :func:`~dbtestcase.workers.run_id` is set, the processes of the run share one server instead: the first
    starts it, the others attach, the last one to exit stops it (see :doc:`parallel`).

    .. versionchanged:: 0.2
       One server per parallel run (pytest-xdist, nose2's mp plugin, ``$DBTESTCASE_RUN_ID``).
    """
    return _shared.get()
