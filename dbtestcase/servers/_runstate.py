"""The state of a parallel run on disk, and the watchdog of its shared server (see ``_runshare``).

Standard library only, at the top and below: the watchdog runs this file as a script (``python -I -S``).

.. versionadded:: 0.2
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import shutil
import signal
import stat
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any, Optional

POLL = 0.25  # seconds between two looks of the watchdog at the run's processes
STOP_TIMEOUT = 10.0  # as _process.STOP_TIMEOUT (this file also runs alone): seconds to stop before SIGKILL
LOCK, STATE, CLIENTS = "lock", "server.json", "clients"


_slots: list[int] = []  # the descriptors of the slot locks this process holds: released when it dies


def claim_slot(kind: str) -> int:
    """The lowest slot number ``n`` whose lock ``<base>/<kind>-<n>.lock`` no live process holds, held from now on.

    Stable names for parallel workers: a killed worker's slot (and whatever is named after it) goes to a
    later worker, and two runs on one machine never hold the same slot at once.
    """
    directory = base()
    number = 0
    while True:
        fd = os.open(os.path.join(directory, f"{kind}-{number}.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            number += 1
            continue
        _slots.append(fd)
        return number


def base() -> str:
    """Return ``$TMPDIR/dbtestcase-<uid>`` (runs' state, copies of binaries), made if need be, after checking that
    only we can write it."""
    base = os.path.join(tempfile.gettempdir(), f"dbtestcase-{os.geteuid()}")
    with contextlib.suppress(FileExistsError):
        os.mkdir(base, 0o755)
    st = os.lstat(base)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        from ..exceptions import ServerError

        raise ServerError(f"{base} is not a directory owned by uid {os.geteuid()} and writable only by it "
                          f"(got mode {stat.filemode(st.st_mode)}, uid {st.st_uid}); remove it and try again.")
    return base


@contextlib.contextmanager
def locked(state_dir: str, *, create: bool = False, wait: bool = True) -> Iterator[Optional[bool]]:
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


def remove(state_dir: str) -> None:
    """Remove the state directory: renamed first, so that nobody can open its lock any more."""
    grave = f"{state_dir}.gone-{os.getpid()}-{time.monotonic_ns()}"
    with contextlib.suppress(FileNotFoundError):
        os.rename(state_dir, grave)
        shutil.rmtree(grave, ignore_errors=True)


def read_state(state_dir: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(state_dir, STATE)) as f:
            state: dict[str, Any] = json.load(f)
            return state
    except (FileNotFoundError, ValueError):
        return None


def published(state_dir: str) -> str | None:
    """The run directory of the published server, or None."""
    state = read_state(state_dir)
    return state.get("directory") if state else None


def write_state(state_dir: str, state: dict[str, Any]) -> None:
    tmp = os.path.join(state_dir, f".{STATE}.{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(state, f)
    os.replace(tmp, os.path.join(state_dir, STATE))  # atomic: the watchdog reads it without the lock


def live_clients(state_dir: str, *, prune: bool = False) -> list[int]:
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
        if name.isdigit() and alive(int(name), token):
            live.append(int(name))
        elif prune:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    return live


def _proc_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name, or None where there is no /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()
    except OSError:
        return None


def started(pid: int) -> str:
    """The start time of process ``pid`` (Linux; "" elsewhere): with the pid, it names one process for good."""
    fields = _proc_fields(pid)
    return fields[19] if fields else ""


def alive(pid: int, token: str = "") -> bool:
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
    fields = _proc_fields(pid)
    if fields is None:
        return not os.path.isdir("/proc/self")  # no /proc (macOS): trust kill(); on Linux, it just ended
    return fields[0] != "Z" and (not token or fields[19] == token)


def kill(pid: int, token: str, first: int) -> None:
    """Stop the server ``pid`` if it is still the one started at ``token``: signal ``first``, then SIGKILL to its
    session (it leads one), waiting for each up to :data:`STOP_TIMEOUT`.

    Without a token (no /proc: macOS), the pid may have been reused by an unrelated process since: it gets
    ``first`` alone, never a SIGKILL of a whole process group.
    """
    steps = ((first, os.kill), (signal.SIGKILL, os.killpg)) if token else ((first, os.kill),)
    for sig, send in steps:
        if not alive(pid, token):
            return
        with contextlib.suppress(OSError):
            send(pid, sig)
        end = time.monotonic() + STOP_TIMEOUT
        while alive(pid, token) and time.monotonic() < end:
            time.sleep(0.01)


def watch(run_dir: str, state_dir: str) -> None:
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
                token = started(pid) if pid else ""
            continue
        abandoned = eof and published(state_dir) != run_dir
        if not abandoned and live_clients(state_dir):
            continue
        with locked(state_dir, wait=False) as held:
            if held is None or (not abandoned and live_clients(state_dir)):
                continue  # busy, or somebody joined meanwhile: look again later
            kill(pid, token, signal.SIGQUIT)  # the run is over: no need for a clean shutdown
            shutil.rmtree(run_dir, ignore_errors=True)
            if held and not live_clients(state_dir) and published(state_dir) in (None, run_dir):
                remove(state_dir)
        return


if __name__ == "__main__":
    watch(sys.argv[1], sys.argv[2])
