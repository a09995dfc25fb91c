"""Old path of :mod:`dbtestcase.servers.postgresql` (the throwaway PostgreSQL server), kept for imports."""

from .servers.postgresql import *  # noqa: F403
from .servers.postgresql import (  # noqa: F401 - the constants that used to live here
    EMBEDDED_PACKAGES,
    ENV_BINDIR,
    ENV_CACHE_DIR,
    INITDB_OPTIONS,
    MIN_SHM_FREE,
    READY_TIMEOUT,
    STOP_TIMEOUT,
    SYSTEM_BINDIRS,
    PostgresServer,
    embedded_bindir,
    find_bindir,
    shared_server,
)
