"""Old path of :mod:`dbtestcase.servers.mariadb` (the throwaway MariaDB server), kept for imports."""

from .servers.mariadb import *  # noqa: F403
from .servers.mariadb import (  # noqa: F401 - the constants that used to live here
    DATABASE,
    ENV_CACHE_DIR,
    ENV_MARIADB_BINDIR,
    INSTALL_DB_NAMES,
    INSTALL_OPTIONS,
    READY_TIMEOUT,
    SERVER_NAMES,
    STOP_TIMEOUT,
    SYSTEM_DIRS,
    MariaDBServer,
    find_mariadbd,
    shared_mariadb_server,
)
