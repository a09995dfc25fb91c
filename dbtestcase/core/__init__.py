"""The database core: TestDatabase, its one connection and outer transaction, the schema in it, the savepoints.

It knows no test runner (the runner adapters in :mod:`dbtestcase.runners` drive it) and reads of a parallel
run only ``DBTESTCASE_WORKER`` and ``DBTESTCASE_RUN_ID`` (:mod:`dbtestcase.workers`). What differs per
dialect it asks of :mod:`dbtestcase.backends`; throwaway servers it gets from :mod:`dbtestcase.servers`.

``_database``    TestDatabase: its options, its state, setup() and teardown()
``_outer``       one setup: the engine, the connection, the outer transaction, what was built in it
``_savepoints``  SavepointStack: the per-class and per-test SAVEPOINTs, the seam the runners use
``_modules``     setup_module(), teardown_module(), active_database()
``_schema``      creating the tables (in the outer transaction, or committed), Alembic migrations
``_namespaces``  a PostgreSQL schema per TestDatabase, a MySQL/MariaDB database per worker
``_reset``       drop_all() that never hangs on a lock, and the universal reset
``_resolve``     the server of a URL that names none, and the databases set up in this process
``_engine``      engines and connections, with driver failures turned into one-line errors
``_asynclink``   an async URL's AsyncConnection and the event loop it lives on
``_binding``     bind_sessions: the application's session factories on the test's connection
``_queries``     CapturedQueries, for assertNumQueries
``_sequences``   reset_sequences
"""

from ._binding import SessionBinding, check_bindable
from ._database import TestDatabase
from ._engine import create_engine
from ._modules import active_database, setup_module, teardown_module
from ._queries import CapturedQueries
from ._reset import drop_all, reset_schema
from ._resolve import resolve_url, teardown_live
from ._savepoints import CLASS, TEST, SavepointStack
from ._schema import LEFTOVER_MARK
from ._sequences import SequenceBaseline

__all__ = [
    "CLASS",
    "LEFTOVER_MARK",
    "TEST",
    "CapturedQueries",
    "SavepointStack",
    "SequenceBaseline",
    "SessionBinding",
    "TestDatabase",
    "active_database",
    "check_bindable",
    "create_engine",
    "drop_all",
    "reset_schema",
    "resolve_url",
    "setup_module",
    "teardown_live",
    "teardown_module",
]
