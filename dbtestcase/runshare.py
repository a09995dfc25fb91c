"""One throwaway server per parallel run: the first worker starts it, the others attach, the last one stops it.

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

A process is identified by its pid and, on Linux, its start time in ``/proc``; elsewhere by its pid alone, so a
pid reused by an unrelated process keeps the server alive until that process ends. A forked child is one of the
run's processes from its own first call for the server (which attaches it to its parent's); a parent that exits
before then may stop the server, and the child then starts a fresh one.

The top of this module imports only the standard library: the watchdog runs it with ``python -I -S``.

.. versionadded:: 0.2
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import select
import shutil
import signal
import socket
import stat
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Optional, TypeVar

if TYPE_CHECKING:
    from .process import ChildServer

    S = TypeVar("S", bound=ChildServer)

__all__ = ["POLL", "Share", "join"]

log = logging.getLogger(__name__)

POLL = 0.25  # seconds between two looks of the watchdog at the run's processes
STOP_TIMEOUT = 10.0  # as process.STOP_TIMEOUT: seconds a server gets to stop before SIGKILL
LOCK, STATE, CLIENTS = "lock", "server.json", "clients"


def join(server: S, run: str, *, previous: Share | None = None) -> S:
    """Start the run's server with ``server``, or attach ``server`` to it; either way, register this process.

    Args:
        server: a new, unstarted server, of the class the run shares.
        run: the run's id.
        previous: the share of this process's previous server, or of its parent's when forked: in the same run,
            its state directory is kept, so that a forked child gets its parent's server whatever its environment.

    Returns:
        ``server``, running: its :meth:`~dbtestcase.process.ChildServer.stop` leaves the run.

    Raises:
        ServerNotFoundError: the server's binaries are missing.
        ServerStartError: this process had to start the server, and that failed.
    """
    server._prepare()  # the binary and version choose the state directory
    if previous is not None and previous.run == run:
        share = Share(previous.state_dir, run)
    else:
        key = f"{run}\0{type(server).__module__}.{type(server).__qualname__}\0{server._binary()}\0{server.version}"
        share = Share(os.path.join(_base(), "run-" + hashlib.sha256(key.encode()).hexdigest()[:16]), run)
    with _locked(share.state_dir, create=True):
        share._register()
        try:
            state = _read_state(share.state_dir)
            if state is not None and _attach(server, share, state):
                log.info("attached to %s %s at %s in %s, started by process %d for run %r", server._product,
                         server.version, server.url, server.directory, state["starter"], run)
                return server
            if state is not None:
                _discard(state, server)
            server._share = share
            server.start()
            assert server.pid and server.directory
            share.pid, share.token = server.pid, _token(server.pid)
            _write_state(share.state_dir, {"run": run, "url": server.url, "port": server.port, "pid": share.pid,
                                           "token": share.token, "directory": server.directory,
                                           "version": server.version, "starter": os.getpid()})
        except BaseException:
            server._share = None
            if server.directory is not None:  # started, but not published: nobody else knows it, stop it here
                server.stop()
            share._unregister()
            if not _live_clients(share.state_dir, prune=True):
                _remove(share.state_dir)
            raise
    log.info("shared %s at %s with run %r (state in %s)", server._product, server.url, run, share.state_dir)
    return server


class Share:
    """A server's membership in a parallel run: where the run's state is, and the server's pid."""

    def __init__(self, state_dir: str, run: str) -> None:
        self.state_dir = state_dir
        self.run = run
        self.pid = 0  # the server's
        self.token = ""  # the server's start time, where /proc tells it

    def watchdog(self, run_dir: str) -> list[str]:
        """Return the command line of the watchdog of the server in ``run_dir``."""
        return [sys.executable, "-I", "-S", os.path.abspath(__file__), run_dir, self.state_dir]

    def leave(self, server: ChildServer) -> None:
        """Unregister this process; stop ``server`` and remove both directories if no other process uses it."""
        url, directory = server.url, server.directory
        with _locked(self.state_dir) as held:
            if held:
                self._unregister()
            others = _live_clients(self.state_dir, prune=True) if held else []
            published = _published(self.state_dir) if held else None
            if others and published == directory:
                server._forget()
                log.info("left %s at %s; %d other process(es) of run %r still use it", server._product, url,
                         len(others), self.run)
                return
            if server._proc is None:  # not our child: we cannot wait() for it
                _kill(self.pid, self.token, server._stop_signal)
            server._teardown()  # also ends our watchdog, if we started the server: its run directory is gone
            if held and not others and published in (None, directory):
                _remove(self.state_dir)  # under the lock: whoever waits for it starts afresh
        server._log.info("stopped %s at %s and removed %s", server._product, url, directory)

    def _register(self) -> None:
        clients = os.path.join(self.state_dir, CLIENTS)
        os.makedirs(clients, mode=0o700, exist_ok=True)
        with open(os.path.join(clients, str(os.getpid())), "w") as f:
            f.write(_token(os.getpid()))

    def _unregister(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.state_dir, CLIENTS, str(os.getpid())))


def _attach(server: ChildServer, share: Share, state: dict[str, Any]) -> bool:
    """Point ``server`` at the published one if it is alive and answers; tell whether it is."""
    if not (_alive(state["pid"], state["token"]) and os.path.isdir(state["directory"])):
        return False
    try:  # a connection the kernel accepts: no login, which a busy server (max_connections) might refuse
        socket.create_connection(("127.0.0.1", state["port"]), timeout=5).close()
    except OSError:
        return False
    share.pid, share.token = state["pid"], state["token"]
    server._share, server._owner, server.version = share, os.getpid(), state["version"]
    server.directory, server.port = state["directory"], state["port"]
    return True


def _discard(state: dict[str, Any], server: ChildServer) -> None:
    """Stop what is left of a published server that died or stopped answering, so a fresh one replaces it."""
    log.warning("the %s of run %r (pid %d, %s) is not answering; starting a new one", server._product,
                state["run"], state["pid"], state["directory"])
    _kill(state["pid"], state["token"], signal.SIGQUIT)
    shutil.rmtree(state["directory"], ignore_errors=True)  # its watchdog sees that, and ends


def _base() -> str:
    """Return ``$TMPDIR/dbtestcase-<uid>``, made if need be (as binaries.py does), after checking only we write it."""
    base = os.path.join(tempfile.gettempdir(), f"dbtestcase-{os.geteuid()}")
    with contextlib.suppress(FileExistsError):
        os.mkdir(base, 0o755)
    st = os.lstat(base)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        from .exceptions import ServerError

        raise ServerError(f"{base} is not a directory owned by uid {os.geteuid()} and writable only by it "
                          f"(got mode {stat.filemode(st.st_mode)}, uid {st.st_uid}); remove it and try again.")
    return base


@contextlib.contextmanager
def _locked(state_dir: str, *, create: bool = False, wait: bool = True) -> Iterator[Optional[bool]]:
    """Hold the run's lock. Yield True; False if the state directory is gone (unless ``create``: then make it);
    None if someone else holds the lock and not ``wait``."""
    path = os.path.join(state_dir, LOCK)
    while True:
        if create:
            with contextlib.suppress(FileExistsError):
                os.mkdir(state_dir, 0o700)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:  # removed (renamed away) by the last process of a run
            if create:
                continue
            yield False
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))  # released on close, also if we die
            except BlockingIOError:
                yield None
                return
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                same = False
            if same:
                yield True
                return
            if not create:  # the run we waited for has ended meanwhile
                yield False
                return
        finally:
            os.close(fd)


def _remove(state_dir: str) -> None:
    """Remove the state directory: renamed first, so that nobody can open its lock any more."""
    grave = f"{state_dir}.gone-{os.getpid()}-{time.monotonic_ns()}"
    with contextlib.suppress(FileNotFoundError):
        os.rename(state_dir, grave)
        shutil.rmtree(grave, ignore_errors=True)


def _read_state(state_dir: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(state_dir, STATE)) as f:
            state: dict[str, Any] = json.load(f)
            return state
    except (FileNotFoundError, ValueError):
        return None


def _published(state_dir: str) -> str | None:
    """The run directory of the published server, or None."""
    state = _read_state(state_dir)
    return state.get("directory") if state else None


def _write_state(state_dir: str, state: dict[str, Any]) -> None:
    tmp = os.path.join(state_dir, f".{STATE}.{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(state, f)
    os.replace(tmp, os.path.join(state_dir, STATE))  # atomic: the watchdog reads it without the lock


def _live_clients(state_dir: str, *, prune: bool = False) -> list[int]:
    """The pids of the registered processes still alive; ``prune`` unregisters the dead (hold the lock)."""
    clients = os.path.join(state_dir, CLIENTS)
    try:
        names = os.listdir(clients)
    except FileNotFoundError:
        return []
    live = []
    for name in names:
        path = os.path.join(clients, name)
        try:
            with open(path) as f:
                token = f.read().strip()
        except FileNotFoundError:
            continue
        if name.isdigit() and _alive(int(name), token):
            live.append(int(name))
        elif prune:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    return live


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name, or None where there is no /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()
    except OSError:
        return None


def _token(pid: int) -> str:
    """The start time of process ``pid`` (Linux; "" elsewhere): with the pid, it names one process for good."""
    fields = _stat(pid)
    return fields[19] if fields else ""


def _alive(pid: int, token: str = "") -> bool:
    """Tell whether process ``pid`` lives: not a zombie (PID 1 may never reap it) and, where /proc tells, the
    process started at ``token`` rather than a later one that reuses its pid."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's: ours as another uid (the server, as nobody) or a reused pid; /proc tells
    fields = _stat(pid)
    if fields is None:
        return not os.path.isdir("/proc/self")  # no /proc (macOS): trust kill(); on Linux, it just ended
    return fields[0] != "Z" and (not token or fields[19] == token)


def _kill(pid: int, token: str, first: int) -> None:
    """Stop the server ``pid`` if it is still the one started at ``token``: signal ``first``, then SIGKILL to its
    session (it leads one), waiting for each up to :data:`STOP_TIMEOUT`."""
    for sig, send in ((first, os.kill), (signal.SIGKILL, os.killpg)):
        if not _alive(pid, token):
            return
        with contextlib.suppress(OSError):
            send(pid, sig)
        end = time.monotonic() + STOP_TIMEOUT
        while _alive(pid, token) and time.monotonic() < end:
            time.sleep(0.01)


def _watch(run_dir: str, state_dir: str) -> None:
    """The watchdog of a shared server: stop it and remove both directories once no registered process is alive.

    Its stdin is a pipe from the starter, one line per pid to stop (0: none), as for a private server. EOF before
    the server was published means the start was abandoned. It ends, doing nothing, when another process has
    stopped the server (the run directory is gone).
    """
    for sig in (signal.SIGINT, signal.SIGHUP):  # a Ctrl-C in the terminal is not for us
        signal.signal(sig, signal.SIG_IGN)
    pid, token, eof, pending = 0, "", False, b""
    while os.path.isdir(run_dir):
        if eof:
            time.sleep(POLL)
        elif select.select([0], [], [], POLL)[0]:
            chunk = os.read(0, 4096)
            eof = not chunk
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                pid = int(line)
                token = _token(pid) if pid else ""
            continue
        abandoned = eof and _published(state_dir) != run_dir
        if not abandoned and _live_clients(state_dir):
            continue
        with _locked(state_dir, wait=False) as held:
            if held is None or (not abandoned and _live_clients(state_dir)):
                continue  # busy, or somebody joined meanwhile: look again later
            _kill(pid, token, signal.SIGQUIT)  # the run is over: no need for a clean shutdown
            shutil.rmtree(run_dir, ignore_errors=True)
            if held and not _live_clients(state_dir) and _published(state_dir) in (None, run_dir):
                _remove(state_dir)
        return


if __name__ == "__main__":
    _watch(sys.argv[1], sys.argv[2])
