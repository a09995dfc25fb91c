"""dbtestcase: every test on a blank slate, against a real database."""

from .core import CapturedQueries, SavepointStack, TestDatabase, active_database, drop_all, setup_module, teardown_module
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
)
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
    "__version__",
    "active_database",
    "current_session",
    "drop_all",
    "setup_module",
    "teardown_module",
]
