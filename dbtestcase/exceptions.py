"""The exceptions dbtestcase raises.

Every error derives from :class:`DbTestCaseError`, and each one also derives from the
builtin exception it resembles, so ``except FileNotFoundError`` keeps working::

    DbTestCaseError(Exception)
    +-- ConfigurationError(ValueError)           bad argument, URL, class attribute
    |   +-- NoDatabaseError(LookupError)         a DatabaseTestCase with no database
    +-- ConnectionFailedError(ConnectionError)   server unreachable, login refused
    +-- DriverMissingError(ImportError)          the URL's DBAPI driver is not installed
    +-- ServerError(RuntimeError)                a throwaway server (PostgreSQL, MariaDB)
    |   +-- ServerNotFoundError(FileNotFoundError)   no server binaries anywhere
    |   +-- ServerStartError                     the server or its initialisation failed
    +-- LockTimeoutError(TimeoutError)           drop_all blocked by another backend
    +-- DeferredConstraintError(AssertionError)  a test left a deferred constraint broken
    +-- DestructiveActionError(PermissionError)  dropping tables in a database not named for tests
    +-- ImplicitCommitError(RuntimeError)        MySQL DDL inside a test would commit its rows
    +-- TransactionEndedError(RuntimeError)      a test ended, or would end, the outer transaction
    +-- NonTransactionalTableError(TypeError)    a MySQL table without transactions (MyISAM)
    +-- NoTestRunningError(LookupError)          current_session() called outside a test
    +-- SchemaMismatchError(AssertionError)      the migrated schema differs from the models
"""

from __future__ import annotations


class DbTestCaseError(Exception):
    """Base class of every error raised by dbtestcase."""


class ConfigurationError(DbTestCaseError, ValueError):
    """An argument, URL, option or class attribute is wrong."""


class NoDatabaseError(ConfigurationError, LookupError):
    """A DatabaseTestCase ran with no database configured."""


class ConnectionFailedError(DbTestCaseError, ConnectionError):
    """The database server did not answer or refused the login.

    The message holds the driver's own first line; the driver's exception itself is
    ``driver_error`` (not chained, so that its tracebacks do not bury the message).
    """

    #: The driver's exception (SQLAlchemy's DBAPIError, or an OSError from an async driver).
    #:
    #: .. versionadded:: 0.3
    driver_error: BaseException | None = None

    def __init__(self, message: str, driver_error: BaseException | None = None) -> None:
        super().__init__(message)
        self.driver_error = driver_error


class DriverMissingError(DbTestCaseError, ImportError):
    """The DBAPI driver named by the URL is not installed."""


class ServerError(DbTestCaseError, RuntimeError):
    """A throwaway server (PostgreSQL or MariaDB) could not be set up, started or stopped."""


class ServerNotFoundError(ServerError, FileNotFoundError):
    """No server binaries were found (PostgreSQL's, or MariaDB's for a ``mysql://`` URL)."""


class ServerStartError(ServerError):
    """The server or its initialisation failed; the message carries the end of the server log."""


class LockTimeoutError(DbTestCaseError, TimeoutError):
    """A DROP waited longer than ``lock_timeout`` for a lock held by another backend."""


class DeferredConstraintError(DbTestCaseError, AssertionError):
    """A test left a deferred constraint violated; it would fail at COMMIT in production."""


class DestructiveActionError(DbTestCaseError, PermissionError):
    """Dropping tables was refused: the database's name does not say it is for tests.

    .. versionadded:: 0.2
    """


class ImplicitCommitError(DbTestCaseError, RuntimeError):
    """A statement in a test would commit the outer transaction (DDL on MySQL/MariaDB).

    .. versionadded:: 0.2
    """


class TransactionEndedError(DbTestCaseError, RuntimeError):
    """A test ended the outer transaction, or ran a statement that would (a raw COMMIT or ROLLBACK, a
    RELEASE of the kit's savepoint, closing the shared connection).

    .. versionadded:: 0.3
    """


class NonTransactionalTableError(DbTestCaseError, TypeError):
    """A MySQL/MariaDB table uses an engine without transactions (MyISAM): rollback cannot undo it.

    .. versionadded:: 0.2
    """


class NoTestRunningError(DbTestCaseError, LookupError):
    """:func:`dbtestcase.current_session` was called while no DatabaseTestCase test runs.

    .. versionadded:: 0.2
    """


class SchemaMismatchError(DbTestCaseError, AssertionError):
    """After ``alembic_config``'s migrations, the database differs from the models.

    .. versionadded:: 0.2
    """
