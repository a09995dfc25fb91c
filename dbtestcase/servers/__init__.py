"""Throwaway servers: PostgreSQL and MariaDB started for a run and removed after it (stdlib only, no SQLAlchemy).

``postgresql``   PostgresServer and shared_server() (old path: ``dbtestcase.server``)
``mariadb``      MariaDBServer and shared_mariadb_server() (old path: ``dbtestcase.mariadb_server``)
``binaries``     finding PostgreSQL's binaries (old path: ``dbtestcase.binaries``)
``_process``     ChildServer: a server as our child, in a private run directory, with a watchdog
``_runshare``    one server per process, or per parallel run (Shared)
``_runstate``    a parallel run's state on disk, and its watchdog script
``_system``      the run user, lock files, the death signal: what both servers need from the OS
"""

from ._runshare import Shared
from ._runstate import claim_slot

__all__ = ["Shared", "claim_slot"]
