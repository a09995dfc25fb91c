"""Old path of :mod:`dbtestcase.servers.binaries` (finding PostgreSQL's binaries), kept for imports."""

from .servers.binaries import EMBEDDED_PACKAGES, ENV_BINDIR, SYSTEM_BINDIRS, embedded_bindir, find_bindir

__all__ = ["EMBEDDED_PACKAGES", "ENV_BINDIR", "SYSTEM_BINDIRS", "embedded_bindir", "find_bindir"]
