"""What both throwaway servers need from the operating system: the run user, reachability, lock files, the run
directory's place, the death signal and the watchdog script (stdlib only)."""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator

from ..exceptions import ServerStartError


def run_as() -> tuple[int, int] | None:
    """Return the (uid, gid) to run PostgreSQL as: nobody's when we are root (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return None
    try:
        user = pwd.getpwnam("nobody")
    except KeyError:
        raise ServerStartError("PostgreSQL refuses to run as root and there is no 'nobody' user to run it as; "
                               "run the tests as an ordinary user, or set DBTESTCASE_URL.") from None
    return user.pw_uid, user.pw_gid


def traversable(path: str, uid: int, gid: int) -> bool:
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
def locked(path: str) -> Iterator[None]:
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released on close, also if we die
        yield




def tail(data: bytes, lines: int = 30) -> str:
    """The last ``lines`` lines of a process's output, for error messages."""
    return "\n".join(data.decode(errors="replace").rstrip().splitlines()[-lines:])


MIN_SHM_FREE = 256 * 1024 * 1024
#: False: rely on the watchdog alone (as a test does).
PDEATHSIG = sys.platform.startswith("linux")  # False: rely on the watchdog alone (as a test does)

# Runs in its own session, so a Ctrl-C to the terminal does not reach it. Its stdin is a pipe whose write
# end only the owner holds: each line is the pid to stop if the owner dies (0: none); EOF: the owner is gone.
WATCHDOG = r"""
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


def run_base(runas: tuple[int, int] | None) -> str:
    """Return where run directories go: /dev/shm when it has room, else the temp dir."""
    candidates = [tempfile.gettempdir(), "/tmp"]
    with contextlib.suppress(OSError):
        st = os.statvfs("/dev/shm")
        if st.f_bavail * st.f_frsize >= MIN_SHM_FREE:
            candidates.insert(0, "/dev/shm")
    usable = [c for c in candidates if os.path.isdir(c) and (runas is None or traversable(c, *runas))]
    return (usable or candidates)[0]


def deathsig_hook(parent: int) -> Callable[[], None]:
    """Return a preexec_fn asking for SIGQUIT when the parent thread dies (after the user switch clears it)."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def hook() -> None:
        prctl(1, signal.SIGQUIT)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl
            os.kill(os.getpid(), signal.SIGQUIT)
    return hook




def fill_from_template(data: str, template: str, make: Callable[[], None], *, cache_dir: str,
                       runas: tuple[int, int] | None) -> None:
    """Fill ``data`` from the cached ``template``; if there is none yet, ``make()`` fills ``data``, which then
    becomes the template (published atomically, under a lock, so concurrent runs make it once)."""
    os.makedirs(cache_dir, exist_ok=True)
    touch(template + ".lock")  # its last use, for prune_stale
    if not os.path.isdir(template):
        with locked(template + ".lock"):
            if not os.path.isdir(template):
                make()
                tmp = tempfile.mkdtemp(prefix=".tmp-", dir=cache_dir)
                shutil.copytree(data, tmp, symlinks=True, dirs_exist_ok=True)
                os.rename(tmp, template)  # publish atomically
                return
    shutil.copytree(template, data, symlinks=True, copy_function=shutil.copyfile)
    if runas:
        for dirpath, _, files in os.walk(data):
            os.chown(dirpath, *runas)
            for name in files:
                os.chown(os.path.join(dirpath, name), *runas, follow_symlinks=False)


def wait_ready(ready: Callable[[], bool], proc: subprocess.Popen[bytes], name: str, timeout: float,
               interval: float) -> str | None:
    """Poll ``ready()`` until it holds; return what went wrong with the process ``name``, or None.

    ``ready()`` may raise ServerStartError: the server never will be ready, and the message says why.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            if ready():
                return None
        except ServerStartError as exc:
            return str(exc)
        if proc.poll() is not None:
            return f"{name} exited with code {proc.returncode}"
        if time.monotonic() > deadline:
            return f"{name} was not ready after {timeout:g} s"
        time.sleep(interval)


#: Days a cached template or binaries copy may go unused before :func:`prune_stale` removes it.
STALE_DAYS = 30.0
_HOUR = 3600.0


# What a server, a setup step or a watchdog inherits of our environment: nothing else (CI secrets, tokens).
_KEPT_ENV = ("PATH", "TMPDIR", "TZ", "LD_LIBRARY_PATH", "DYLD_LIBRARY_PATH")


def minimal_env(**extra: str) -> dict[str, str]:
    """The environment of a child server process: the search paths, the C locale, and ``extra``."""
    env = {name: os.environ[name] for name in _KEPT_ENV if name in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    return {**env, "LC_ALL": "C", "LANG": "C", **extra}


def touch(path: str) -> None:
    """Create ``path`` or set its modification time to now: the last use of what it locks."""
    with open(path, "a"):
        os.utime(path)


def prune_stale(directory: str, *, max_age_days: float = STALE_DAYS) -> list[str]:
    """Remove from ``directory`` what killed runs left and what no run used for ``max_age_days``; return it.

    ``.tmp-*`` folders older than an hour are half-made templates or copies (a build killed before it
    published); an entry ``X`` with a lock file ``X.lock`` untouched for ``max_age_days`` is removed under
    that lock, taken without waiting, so an entry in use is never touched.
    """
    removed: list[str] = []
    now = time.time()
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return removed
    for name in names:
        path = os.path.join(directory, name)
        with contextlib.suppress(OSError):
            age = now - os.lstat(path).st_mtime
            if name.startswith(".tmp-") and age > _HOUR:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
            elif name.endswith(".lock") and age > max_age_days * 86400:
                entry = path[: -len(".lock")]
                with open(path) as lock:
                    try:
                        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        continue  # in use right now
                    if now - os.stat(path).st_mtime > max_age_days * 86400:  # not touched meanwhile
                        shutil.rmtree(entry, ignore_errors=True)
                        os.unlink(path)
                        removed.append(entry)
    return removed


_let_go: list[subprocess.Popen[bytes]] = []


def let_go(child: subprocess.Popen[bytes]) -> None:
    """Keep a child that goes on running without us (a shared server, its watchdog) referenced: never waited
    for here, and no ResourceWarning about it."""
    _let_go.append(child)


class Watchdog:
    """A watchdog process, told through a pipe which pid to stop if we die (EOF: we are gone).

    The write end of the pipe is close-on-exec, so no other child inherits it: only our death, or
    :meth:`close` / :meth:`detach`, gives the watchdog its EOF.
    """

    def __init__(self, cmd: list[str]) -> None:
        read, self._pipe = os.pipe()
        try:
            self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                cmd, stdin=read, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/", start_new_session=True,
                env=minimal_env())
        except BaseException:
            os.close(self._pipe)
            raise
        finally:
            os.close(read)

    def tell(self, pid: int) -> None:
        """The process to stop if we die (0: none)."""
        with contextlib.suppress(OSError):
            os.write(self._pipe, b"%d\n" % pid)

    def close(self) -> None:
        """EOF to the watchdog, then wait for it to end (killing it after 5 s)."""
        self._eof()
        if self._proc is not None:
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def detach(self) -> None:
        """EOF to the watchdog, which goes on (a shared server's watches the run's processes)."""
        self._eof()
        if self._proc is not None:
            let_go(self._proc)
            self._proc = None

    def _eof(self) -> None:
        if self._pipe >= 0:
            os.close(self._pipe)
            self._pipe = -1
