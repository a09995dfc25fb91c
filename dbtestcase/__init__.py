"""dbtestcase: every test on a blank slate, against a real database.

The test cases and the database are imported on first use, so that the package's light modules (the
pytest plugin, :mod:`dbtestcase.workers`, the throwaway servers) import without SQLAlchemy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import runners  # noqa: F401 - light (its test cases load on first use); maps an xdist worker's identity
from ._lazy import exports
from .exceptions import (
    ConfigurationError,
    ConnectionFailedError,
    DbTestCaseError,
    DeferredConstraintError,
    DestructiveActionError,
    DriverMissingError,
    ImplicitCommitError,
    LockTimeoutError,
    NoDatabaseError,
    NonTransactionalTableError,
    NoTestRunningError,
    SchemaMismatchError,
    ServerError,
    ServerNotFoundError,
    ServerStartError,
    TransactionEndedError,
)

if TYPE_CHECKING:
    from .core import CapturedQueries, SavepointStack, TestDatabase, active_database, drop_all, setup_module, teardown_module
    from .runners import AsyncDatabaseTestCase, DatabaseTestCase, current_session

__version__ = "0.3.0.dev0"

__all__ = [
    "AsyncDatabaseTestCase",
    "CapturedQueries",
    "ConfigurationError",
    "ConnectionFailedError",
    "DatabaseTestCase",
    "DbTestCaseError",
    "DeferredConstraintError",
    "DestructiveActionError",
    "DriverMissingError",
    "ImplicitCommitError",
    "LockTimeoutError",
    "NoDatabaseError",
    "NoTestRunningError",
    "NonTransactionalTableError",
    "SavepointStack",
    "SchemaMismatchError",
    "ServerError",
    "ServerNotFoundError",
    "ServerStartError",
    "TestDatabase",
    "TransactionEndedError",
    "__version__",
    "active_database",
    "current_session",
    "drop_all",
    "setup_module",
    "teardown_module",
]

# Where each name imported on first use lives.
_HOMES = {
    **dict.fromkeys(["AsyncDatabaseTestCase", "DatabaseTestCase", "current_session"], ".runners"),
    **dict.fromkeys(["CapturedQueries", "SavepointStack", "TestDatabase", "active_database", "drop_all", "setup_module",
                     "teardown_module"], ".core"),
}
__getattr__, __dir__ = exports(__name__, _HOMES, globals())
