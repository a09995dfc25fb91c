"""DatabaseTestCase: a SAVEPOINT and a Session per test on the shared connection."""

from __future__ import annotations

import contextlib
import contextvars
import unittest
from collections.abc import Iterator
from typing import Any, ClassVar

from sqlalchemy import MetaData, func, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from ..core import CLASS, CapturedQueries, SequenceBaseline, SessionBinding, TestDatabase
from ..exceptions import ConfigurationError, NoDatabaseError, NoTestRunningError
from ._classes import ClassState, check_class, own_class_cleanups, resolve_database
from ._testdata import run_test_data

__unittest = True  # failure tracebacks start in the user's code

_current_test: contextvars.ContextVar[DatabaseTestCase | None] = contextvars.ContextVar("dbtestcase_test", default=None)


def current_session() -> Session:
    """The running test's Session: the very object ``self.session`` of the DatabaseTestCase running now.

    For code that looks a session up rather than taking one, such as factory_boy's
    ``sqlalchemy_session_factory = dbtestcase.current_session``.

    Raises:
        NoTestRunningError: called outside a DatabaseTestCase test (setUp and cleanups included).

    .. versionadded:: 0.2
    """
    test = _current_test.get()
    if test is None:
        raise NoTestRunningError(
            "dbtestcase.current_session() was called outside a test: it returns the Session of the "
            "DatabaseTestCase test running now; call it from a test (or setUp), or pass a session explicitly."
        )
    return test.session


class DatabaseTestCase(unittest.TestCase):
    """A TestCase whose every test runs in its own SAVEPOINT, rolled back after the test.

    ``self.session`` is a :class:`~sqlalchemy.orm.Session` on the shared connection, made with
    ``join_transaction_mode="create_savepoint"``: ``commit()``, ``rollback()``, ``close()`` and
    ``begin_nested()`` in the code under test stay inside the test. After ``tearDown`` and
    every cleanup, deferred constraints are checked (PostgreSQL) and the savepoint is rolled
    back, so the next test starts on a blank slate. There is no need to call
    ``super().setUp()``.

    The database is, in order: the class attribute :attr:`database`; the one made active by
    :func:`dbtestcase.setup_module`; one the class sets up for itself from :attr:`metadata`.
    """

    #: A :class:`~dbtestcase.TestDatabase` for this class (set up here if it is not yet).
    database: ClassVar[TestDatabase | None] = None
    #: Tables for a database of the class's own, used when no other database is configured.
    metadata: ClassVar[MetaData | None] = None
    #: URL for the class's own database (``metadata``), else ``$DBTESTCASE_URL`` or a throwaway server.
    database_url: ClassVar[str | None] = None
    #: Restart the sequences of the tables before every test, so generated ids are predictable.
    reset_sequences: ClassVar[bool] = False
    #: The application's own ``scoped_session`` / ``sessionmaker`` objects to bind to each test's
    #: connection and savepoint, and restore after it (``bind_sessions = [myapp.Session]``).
    #:
    #: .. versionadded:: 0.2
    bind_sessions: ClassVar[list[Any]] = []

    _dbtc_state: ClassVar[ClassState]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own_class_cleanups(cls)
        check_class(cls)

    # --- hooks --------------------------------------------------------------------------------
    @classmethod
    def setUpTestData(cls) -> None:
        """Create data shared by every test of the class, once, with ``cls.session``.

        It lives in a class-level savepoint and is gone after the class. Class attributes set
        here that hold ORM objects are loaded afresh in each test's ``self.session``, so a test
        that changes them never affects another.
        """

    def create_session(self, connection: Connection) -> Session:
        """Make the test's Session; override to pass options (keep ``create_savepoint``)."""
        return Session(bind=connection, join_transaction_mode="create_savepoint")

    # --- what tests use ------------------------------------------------------------------------
    @property
    def session(self) -> Session:
        """This test's Session, made on first use."""
        session = self.__dict__.get("_dbtc_session")
        if session is None:
            session = self.__dict__["_dbtc_session"] = self.create_session(self.connection)
        return session

    @property
    def connection(self) -> Connection:
        """The shared connection, inside this test's savepoint."""
        return self.test_database.connection

    # --- assertions -----------------------------------------------------------------------------
    def captureQueries(self) -> CapturedQueries:  # noqa: N802 - unittest's naming
        """A context manager collecting the SQL statements run on the test's connection.

        ``with self.captureQueries() as queries: ...`` then ``queries`` is the list of statements
        (SAVEPOINT, RELEASE and ROLLBACK TO left out). Other engines' connections are not seen.

        .. versionadded:: 0.2
        """
        return CapturedQueries(self.connection)

    @contextlib.contextmanager
    def assertNumQueries(self, number: int) -> Iterator[CapturedQueries]:  # noqa: N802 - unittest's naming
        """Fail unless the ``with`` block runs exactly ``number`` SQL statements (N+1 queries show).

        .. versionadded:: 0.2
        """
        with self.captureQueries() as queries:
            yield queries
        if len(queries) != number:
            self.fail(f"{len(queries)} queries were run, {number} expected:\n{queries.describe()}")

    def assertRowCount(self, model: Any, number: int, msg: str | None = None) -> None:  # noqa: N802
        """Fail unless the table of ``model`` (a mapped class or a Table) holds ``number`` rows now.

        Pending objects of ``self.session`` are flushed first.

        .. versionadded:: 0.2
        """
        table = getattr(model, "__table__", model)
        self.session.flush()  # autoflush covers ORM statements only, and a Table makes a Core one
        found = self.session.scalar(select(func.count()).select_from(table))
        if found != number:
            name = getattr(model, "__name__", getattr(table, "name", model))
            self.fail(self._formatMessage(msg, f"{name} holds {found} rows, {number} expected"))

    @property
    def test_database(self) -> TestDatabase:
        """The :class:`~dbtestcase.TestDatabase` this class runs on."""
        return type(self)._dbtc_class_setup().database

    # --- unittest plumbing ---------------------------------------------------------------------
    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        try:
            cls._dbtc_class_setup()
        except NoDatabaseError:
            # A subclass's setUpClass may call setup_module() after this: decide at the first
            # test, which fails with this error if there is still no database then.
            pass

    def setUp(self) -> None:
        """Nothing to do: the test's savepoint is set before ``setUp`` runs, whoever defines it."""

    def _callSetUp(self) -> None:  # noqa: N802 - unittest's hook, called by run() and debug() before setUp
        # Here rather than in setUp: a mixin's setUp, one assigned later, or one that skips super() still
        # runs inside the test's savepoint (Django's _setup_and_call begins around the whole test likewise).
        self._dbtc_begin()
        super()._callSetUp()  # type: ignore[misc]

    def _dbtc_begin(self) -> None:
        """Set the test's savepoint (or take the one kept set), and roll back to it after every cleanup."""
        state = type(self)._dbtc_class_setup()
        database = state.database
        if state.stack is not None and state.stack is not database.savepoints:
            # A test ended the outer transaction and the database began a new one: the class's data went with it.
            type(self)._dbtc_make_data(state)
        level = database.savepoints.test_level()
        self.addCleanup(self._dbtc_end, database, level)
        self.addCleanup(_current_test.reset, _current_test.set(self))
        if self.bind_sessions:
            # Registered last, so it runs first: the app's sessions close before the rollback.
            self.addCleanup(SessionBinding(self.bind_sessions, database.connection).restore)
        if state.sequences is not None:
            state.sequences.restore(database.connection)

    def _dbtc_end(self, database: TestDatabase, level: str) -> None:
        database.savepoints.end_test(level, self.__dict__.pop("_dbtc_session", None))

    @classmethod
    def _dbtc_class_setup(cls) -> ClassState:
        """Find or set up the class's database and run setUpTestData, once per class."""
        __tracebackhide__ = True  # pytest: show the user's test, not this frame
        state = cls.__dict__.get("_dbtc_state")
        if state is not None and not state.closed:
            return state
        database, owned = resolve_database(cls)
        state = ClassState(database, owned)
        cls._dbtc_state = state
        try:
            if database.is_async:
                raise ConfigurationError(
                    f"{cls.__qualname__} is a DatabaseTestCase, but its database {database.url} is async: make it "
                    "a dbtestcase.AsyncDatabaseTestCase, or set the database up with a sync URL (postgresql+psycopg2://)."
                )
            cls._dbtc_make_data(state)
        except BaseException:
            cls._dbtc_class_teardown()
            raise
        cls.addClassCleanup(cls._dbtc_class_teardown)
        return state

    @classmethod
    def _dbtc_make_data(cls, state: ClassState) -> None:
        """The class's savepoint and its data (setUpTestData), and the sequences' baseline after it."""
        database = state.database
        state.stack = database.savepoints
        has_data = cls.setUpTestData.__func__ is not DatabaseTestCase.setUpTestData.__func__  # type: ignore[attr-defined]
        if has_data:
            state.level = database.savepoints.begin(CLASS)
        if cls.reset_sequences:
            if database.preexisting_tables:
                names = ", ".join(table.fullname for table in database.preexisting_tables)
                raise ConfigurationError(
                    f"{cls.__qualname__}.reset_sequences would reset the sequences of tables that "
                    f"existed before the tests ({names}), and PostgreSQL never rolls that back: run "
                    "on a database without them, or remove reset_sequences = True."
                )
            state.sequences = SequenceBaseline.of(database.connection, database.metadata)
            state.sequences.restore(database.connection)
        if has_data:
            run_test_data(cls, database)
        if state.sequences is not None:
            state.sequences.capture(database.connection)

    @classmethod
    def _dbtc_class_teardown(cls) -> None:
        state = cls.__dict__.get("_dbtc_state")
        if state is None or state.closed:
            return
        state.closed = True
        database = state.database
        try:
            if state.level is not None and database.is_set_up:
                database.savepoints.end(state.level)
        finally:
            if state.owned:
                database.teardown()


