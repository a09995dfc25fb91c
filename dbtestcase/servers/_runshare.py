"""One throwaway server per process (Shared), or per parallel run: the first worker starts it, the others attach,
the last one stops it.

The processes of one run (same uid, same :func:`~dbtestcase.workers.run_id`, same server class, binary and
version) meet in a state directory, ``$TMPDIR/dbtestcase-<uid>/run-<hash>/``::

    lock           flock()ed around every decision: join, leave, and the watchdog's stop
    server.json    the running server (url, port, pid, run directory), written once it is ready
    clients/<pid>  one file per process using the server, holding its start time (against pid reuse)

The first process starts the server, detached from itself (no death signal: it must outlive its starter), and
publishes it in ``server.json``; the others attach once they have checked it is alive and accepts connections.
Each process leaves at exit; the last one stops the server and removes both directories, holding the lock so that
a process joining meanwhile starts a fresh server rather than attach to a dying one. A watchdog (this file, run as
a script) stops the server and removes both directories once no registered process is alive, so SIGKILLing every
worker leaves nothing behind; it polls every :data:`POLL` seconds.

The state on disk and the watchdog are in ``_runstate``. A process is identified by its pid and, on
Linux, its start time in ``/proc``; elsewhere by its pid alone, so a
pid reused by an unrelated process keeps the server alive until that process ends. A forked child is one of the
run's processes from its own first call for the server (which attaches it to its parent's); a parent that exits
before then may stop the server, and the child then starts a fresh one.

.. versionadded:: 0.2
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import logging
import os
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar, Generic, TypeVar

from ..exceptions import ServerStartError
from ..workers import run_id
from . import _runstate as runstate
from ._process import ChildServer
from ._runstate import CLIENTS, POLL

S = TypeVar("S", bound=ChildServer)

__all__ = ["ATTACH_TIMEOUT", "POLL", "Share", "Shared", "join"]

#: Seconds a worker keeps trying to connect to its run's live server before it gives up (and leaves it running).
ATTACH_TIMEOUT = 60.0

log = logging.getLogger(__name__)



def join(server: S, run: str, *, previous: Share | None = None) -> S:
    """Start the run's server with ``server``, or attach ``server`` to it; either way, register this process.

    Args:
        server: a new, unstarted server, of the class the run shares.
        run: the run's id.
        previous: the share of this process's previous server, or of its parent's when forked: in the same run,
            its state directory is kept, so that a forked child gets its parent's server whatever its environment.

    Returns:
        ``server``, running: its ``stop()`` leaves the run.

    Raises:
        ServerNotFoundError: the server's binaries are missing.
        ServerStartError: this process had to start the server, and that failed.
    """
    server.prepare()  # the binary and version choose the state directory
    share = Share(previous.state_dir, run) if previous is not None and previous.run == run else Share.of(server, run)
    with runstate.locked(share.state_dir, create=True):
        share.register()
        try:
            state = runstate.read_state(share.state_dir)
            if state is not None and _attach(server, share, state):
                log.info("attached to %s %s at %s in %s, started by process %d for run %r", server.product,
                         server.version, server.url, server.directory, state["starter"], run)
                return server
            if state is not None:
                _discard(state, server)
            server.share = share
            server.start()
            assert server.pid and server.directory
            share.pid, share.token = server.pid, runstate.started(server.pid)
            runstate.write_state(share.state_dir, {"run": run, "url": server.url, "port": server.port, "pid": share.pid,
                                           "token": share.token, "directory": server.directory,
                                           "version": server.version, "starter": os.getpid()})
        except BaseException:
            server.share = None
            if server.directory is not None:  # started, but not published: nobody else knows it, stop it here
                server.stop()
            share.unregister()
            if not runstate.live_clients(share.state_dir, prune=True):
                runstate.remove(share.state_dir)
            raise
    log.info("shared %s at %s with run %r (state in %s)", server.product, server.url, run, share.state_dir)
    return server


class Share:
    """A server's membership in a parallel run: where the run's state is, and the server's pid."""

    @classmethod
    def of(cls, server: ChildServer, run: str) -> Share:
        """The membership of ``server`` (prepared) in ``run``: processes that agree on class, binary and version."""
        key = f"{run}\0{type(server).__module__}.{type(server).__qualname__}\0{server.binary()}\0{server.version}"
        return cls(os.path.join(runstate.base(), "run-" + hashlib.sha256(key.encode()).hexdigest()[:16]), run)

    def __init__(self, state_dir: str, run: str) -> None:
        self.state_dir = state_dir
        self.run = run
        self.pid = 0  # the server's
        self.token = ""  # the server's start time, where /proc tells it

    def watchdog(self, run_dir: str) -> list[str]:
        """Return the command line of the watchdog of the server in ``run_dir``."""
        return [sys.executable, "-I", "-S", os.path.abspath(runstate.__file__), run_dir, self.state_dir]

    def leave(self, server: ChildServer) -> None:
        """Unregister this process; stop ``server`` and remove both directories if no other process uses it."""
        url, directory = server.url, server.directory
        with runstate.locked(self.state_dir) as held:
            if held:
                self.unregister()
            others = runstate.live_clients(self.state_dir, prune=True) if held else []
            published = runstate.published(self.state_dir) if held else None
            if others and published == directory:
                server.release()
                log.info("left %s at %s; %d other process(es) of run %r still use it", server.product, url,
                         len(others), self.run)
                return
            if not server.is_child:  # not our child: we cannot wait() for it
                runstate.kill(self.pid, self.token, server.stop_signal)
            server.halt()  # also ends our watchdog, if we started the server: its run directory is gone
            if held and not others and published in (None, directory):
                runstate.remove(self.state_dir)  # under the lock: whoever waits for it starts afresh
        log.info("stopped %s at %s and removed %s", server.product, url, directory)

    def register(self) -> None:
        clients = os.path.join(self.state_dir, CLIENTS)
        os.makedirs(clients, mode=0o700, exist_ok=True)
        with open(os.path.join(clients, str(os.getpid())), "w") as f:
            f.write(runstate.started(os.getpid()))

    def unregister(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.state_dir, CLIENTS, str(os.getpid())))


def _attach(server: ChildServer, share: Share, state: dict[str, Any]) -> bool:
    """Point ``server`` at the published one if it is alive; tell whether it is.

    Raises:
        ServerStartError: it is alive but accepted no connection for :data:`ATTACH_TIMEOUT` seconds (a loaded
            machine): other workers may still use it, so it is left running rather than killed.
    """
    if not (runstate.alive(state["pid"], state["token"]) and os.path.isdir(state["directory"])):
        return False
    deadline = time.monotonic() + ATTACH_TIMEOUT
    while True:
        try:  # a connection the kernel accepts: no login, which a busy server (max_connections) might refuse
            socket.create_connection(("127.0.0.1", state["port"]), timeout=5).close()
            break
        except OSError as exc:
            if not runstate.alive(state["pid"], state["token"]):
                return False  # it died meanwhile: start a fresh one
            if time.monotonic() > deadline:
                raise ServerStartError(
                    f"the {server.product} of run {state['run']!r} (pid {state['pid']}, port {state['port']}) is alive "
                    f"but accepted no connection for {ATTACH_TIMEOUT:g} s ({exc}); it was left running, since other "
                    "workers of the run may use it: retry on a less loaded machine, or stop that process."
                ) from None
            time.sleep(POLL)
    share.pid, share.token = state["pid"], state["token"]
    server.adopt(share, directory=state["directory"], port=state["port"], version=state["version"])
    return True


def _discard(state: dict[str, Any], server: ChildServer) -> None:
    """Stop what is left of a published server that died, so a fresh one replaces it."""
    log.warning("the %s of run %r (pid %d, %s) is gone; starting a new one", server.product,
                state["run"], state["pid"], state["directory"])
    runstate.kill(state["pid"], state["token"], signal.SIGQUIT)
    shutil.rmtree(state["directory"], ignore_errors=True)  # its watchdog sees that, and ends


class Shared(Generic[S]):
    """The process-wide server made by ``factory``, started on first use; atexit stops it.

    Thread-safe. A process forked from the owner gets the owner's server, and cannot stop it. In a parallel run
    (:func:`~dbtestcase.workers.run_id`), the run's processes share one server: see ``dbtestcase.servers._runshare``.
    """

    _instances: ClassVar[list[Shared[Any]]] = []

    def __init__(self, factory: Callable[[], S]) -> None:
        self.factory = factory
        self.current: S | None = None
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=self._reset_lock)
        self._instances.append(self)

    @classmethod
    def stop_all(cls) -> None:
        """Stop (or leave, when a run shares them) the process-wide servers: for processes that end without atexit."""
        for shared in cls._instances:
            if shared.current is not None:
                shared.current.stop()

    def _reset_lock(self) -> None:
        self._lock = threading.Lock()  # another thread may have held it at fork time

    def get(self) -> S:
        """Return the server, starting a new one if there is none yet or it was stopped."""
        with self._lock:
            current = self.current
            # A forked child joins its parent's run itself, so that the server lives as long as the child.
            if current is None or current.directory is None or (current.share and current.owner != os.getpid()):
                run = run_id()
                if run is None:
                    server = self.factory().start()
                else:
                    server = join(self.factory(), run, previous=current.share if current else None)
                atexit.register(server.stop)
                self.current = current = server
            return current
