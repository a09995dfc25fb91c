"""dbtestcase: every test on a blank slate, against a real database."""

from .asynccase import AsyncDatabaseTestCase
from .case import DatabaseTestCase, current_session
from .database import TestDatabase, active_database, setup_module, teardown_module
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
from .queries import CapturedQueries
from .reset import drop_all

__version__ = "0.2.0.dev0"

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
