"""Old path of :mod:`dbtestcase.servers.postgresql` (the throwaway PostgreSQL server), kept for imports.

It re-exports the names of 0.2's ``dbtestcase.server``; patch constants (``SYSTEM_BINDIRS``...) where they
are used, in :mod:`dbtestcase.servers.binaries` and :mod:`dbtestcase.servers.postgresql`.
"""

from .servers.postgresql import EMBEDDED_PACKAGES as EMBEDDED_PACKAGES
from .servers.postgresql import ENV_BINDIR as ENV_BINDIR
from .servers.postgresql import ENV_CACHE_DIR as ENV_CACHE_DIR
from .servers.postgresql import INITDB_OPTIONS as INITDB_OPTIONS
from .servers.postgresql import MIN_SHM_FREE as MIN_SHM_FREE
from .servers.postgresql import READY_TIMEOUT as READY_TIMEOUT
from .servers.postgresql import STOP_TIMEOUT as STOP_TIMEOUT
from .servers.postgresql import SYSTEM_BINDIRS as SYSTEM_BINDIRS
from .servers.postgresql import PostgresServer, embedded_bindir, find_bindir, shared_server

__all__ = ["PostgresServer", "embedded_bindir", "find_bindir", "shared_server"]
