"""Old path of :mod:`dbtestcase.servers.mariadb` (the throwaway MariaDB server), kept for imports.

It re-exports the names of 0.2's ``dbtestcase.mariadb_server``; patch constants (``SYSTEM_DIRS``...) where
they are used, in :mod:`dbtestcase.servers.mariadb`.
"""

from .servers.mariadb import DATABASE as DATABASE
from .servers.mariadb import ENV_CACHE_DIR as ENV_CACHE_DIR
from .servers.mariadb import ENV_MARIADB_BINDIR, MariaDBServer, find_mariadbd, shared_mariadb_server
from .servers.mariadb import INSTALL_DB_NAMES as INSTALL_DB_NAMES
from .servers.mariadb import INSTALL_OPTIONS as INSTALL_OPTIONS
from .servers.mariadb import READY_TIMEOUT as READY_TIMEOUT
from .servers.mariadb import SERVER_NAMES as SERVER_NAMES
from .servers.mariadb import STOP_TIMEOUT as STOP_TIMEOUT
from .servers.mariadb import SYSTEM_DIRS as SYSTEM_DIRS

__all__ = ["ENV_MARIADB_BINDIR", "MariaDBServer", "find_mariadbd", "shared_mariadb_server"]
