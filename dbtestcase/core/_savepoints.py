"""SavepointStack: the SAVEPOINTs a TestDatabase holds on its connection, the seam every runner adapter uses."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from ..backends import sqlstate
from ..exceptions import DeferredConstraintError, TransactionEndedError
from ._connstate import PLAIN, ConnectionGuard

__unittest = True  # DeferredConstraintError tracebacks start in the test, not here

# PostgreSQL drivers that run two statements sent as one string and report an error in the first: one
# round trip instead of two (psycopg 3 does not report it; asyncpg refuses two).
_MULTI_STATEMENT_DRIVERS = ("psycopg2",)

# SQLSTATE class 23: integrity constraint violation.
_INTEGRITY_CLASS = "23"


#: The kind of the level that tests run in, and of the level a class's data (setUpTestData) lives in.
TEST, CLASS = "test", "class"



class SavepointStack:
    """The SAVEPOINTs a :class:`~dbtestcase.TestDatabase` holds on its one connection, innermost last.

    The contract between the database and the runner adapters (the unittest and async cases, the nose2
    and pytest plugins): :meth:`begin` sets a level, :meth:`end_test` undoes a test in one round trip and
    keeps the level set for the next test, :meth:`end` removes a level with all above it. A level is a
    name, ``dbtestcase_<kind>_<depth>``. A stack lives as long as one :meth:`~dbtestcase.TestDatabase.setup`;
    :attr:`TestDatabase.savepoints <dbtestcase.TestDatabase.savepoints>` is the current one.

    .. versionadded:: 0.3
    """

    def __init__(
        self,
        connection: Connection,
        *,
        server_side_begin: bool,
        checks_constraints: bool,
        rebuild: Callable[[], None] | None = None,
    ) -> None:
        self.connection = connection
        #: Whether deferred constraints are checked at the end of every test (the schema has some).
        self.checks_constraints = checks_constraints
        self._server_side_begin = server_side_begin  # the kit's own BEGIN: commit() cannot reach the server
        self._levels: list[str] = []
        self._guard = ConnectionGuard(connection, owned=server_side_begin)
        self._rebuild = rebuild  # begins a new outer transaction (and stack) after a test ended this one

    def _sql(self, statement: str) -> Any:
        """Run the kit's own ``statement``: on a plain cursor, whatever options a test set on the connection."""
        return self.connection.exec_driver_sql(statement, execution_options=PLAIN)

    @property
    def levels(self) -> tuple[str, ...]:
        """The names of the levels set now, outermost first."""
        return tuple(self._levels)

    @property
    def top(self) -> str | None:
        """The innermost level, if any."""
        return self._levels[-1] if self._levels else None

    def begin(self, kind: str = TEST) -> str:
        """Set a new SAVEPOINT on the connection and return its name, which starts with ``dbtestcase_<kind>``."""
        name = f"dbtestcase_{kind}_{len(self._levels)}"
        self._sql(f"SAVEPOINT {name}")
        self._levels.append(name)
        return name

    def test_level(self) -> str:
        """The level for the next test: the innermost one if it is a test level, else a new one.

        A reused level is clean: what ran on the connection since the last test ended is undone first.
        """
        top = self.top
        if top is None or not top.startswith(f"dbtestcase_{TEST}_"):
            return self.begin(TEST)
        if self._guard.touched:  # what ran between two tests (a tearDown deferred by pytest --pdb, a fixture)
            self._undo(top, None, check_constraints=False)
            self._guard.touched = False
        return top

    def rollback(self, name: str, *, check_constraints: bool = True) -> None:
        """Undo everything since SAVEPOINT ``name``, which stays set for the next test.

        With ``check_constraints`` and deferrable constraints in the schema, they are checked
        first (``SET CONSTRAINTS ALL IMMEDIATE``) in the same round trip.

        Raises:
            DeferredConstraintError: a deferred constraint was violated (rolled back anyway).
        """
        connection = self.connection
        if not (check_constraints and self.checks_constraints):
            self._sql(f"ROLLBACK TO SAVEPOINT {name}")
            return
        if connection.dialect.name != "postgresql":
            try:
                self.check_constraints()
            finally:
                self._sql(f"ROLLBACK TO SAVEPOINT {name}")
            return
        try:
            if connection.dialect.driver in _MULTI_STATEMENT_DRIVERS:
                self._sql(f"SET CONSTRAINTS ALL IMMEDIATE; ROLLBACK TO SAVEPOINT {name}")
            else:
                self._sql("SET CONSTRAINTS ALL IMMEDIATE")
                self._sql(f"ROLLBACK TO SAVEPOINT {name}")
        except DBAPIError as exc:
            self._sql(f"ROLLBACK TO SAVEPOINT {name}")
            _raise_if_constraint(exc)

    def end_test(self, name: str, session: Session | None = None) -> None:
        """Close ``session`` and undo everything since SAVEPOINT ``name``, which stays set.

        Deferred constraints are checked first, while the test's rows are still there; the test is
        undone whatever the check finds.

        Raises:
            DeferredConstraintError: the test left a deferred constraint violated.
        """
        ended = self._guard.outer_ended() if self._rebuild is not None else None  # async: no rebuild (see _undo)
        if ended is not None:
            self._recover(f"the test {ended}, which ended the outer transaction", session)
        try:
            self._undo(name, session, check_constraints=True)
        finally:
            self._guard.touched = False
            self._guard.restore_options()

    def _recover(self, what: str, session: Session | None) -> None:
        """The test ended the outer transaction: begin a new one, then fail the test.

        With ``rebuild`` (sync URLs) the database drops what may have been committed and builds the schema
        again; without it (async URLs) a new outer transaction begins on the same connection.

        Raises:
            TransactionEndedError: always, naming what happened and the fix.
        """
        self._levels.clear()
        if session is not None:
            with contextlib.suppress(Exception):
                session.close()
        if self._rebuild is not None:
            self._rebuild()
            after = ("what it wrote may have been committed, so dbtestcase dropped what the run had committed and "
                     "began a new outer transaction with the schema built anew")
        else:
            self.connection.begin()
            after = ("what it wrote was committed (its schema is dropped at teardown) or lost with the tables; "
                     "dbtestcase began a new outer transaction on the same connection")
        raise TransactionEndedError(
            f"{what}: {after}. Use self.session.commit() or connection.begin_nested(), whose commit() stays "
            "inside the test's savepoint."
        )

    def _undo(self, name: str, session: Session | None, *, check_constraints: bool) -> None:
        connection = self.connection
        if self._server_side_begin:
            # One round trip undoes the test, the session's savepoint included. SQLAlchemy's
            # view of the session's savepoint is then dropped with Connection.rollback(), which
            # sends nothing to the server on a connection the kit owns.
            try:
                self.rollback(name, check_constraints=check_constraints)
            finally:
                if connection.in_transaction():
                    connection.rollback()
                if session is not None:
                    session.close()
                # Sessions made on this connection must find it in a transaction, or they take
                # it over ("control_fully") instead of making their own SAVEPOINT.
                connection.begin()
            return
        if not connection.in_transaction():
            # The test committed or rolled back the shared connection itself, through SQLAlchemy.
            self._recover(
                "the test ended the outer transaction with commit() or rollback() on the shared connection, which "
                f"the {connection.dialect.driver} driver does not let dbtestcase prevent (psycopg2, psycopg 3, "
                "asyncpg, pysqlite, PyMySQL and mysqlclient do)",
                session,
            )
        checked = check_constraints and session is not None and session.in_transaction()
        try:
            if checked:
                self.check_constraints()
        finally:
            try:
                if session is not None:
                    session.close()
                while connection.in_nested_transaction():  # left open by the test
                    nested = connection.get_nested_transaction()
                    if nested is None:
                        break
                    nested.rollback()
            finally:  # a violated constraint fails the test; its rows go all the same
                self.rollback(name, check_constraints=check_constraints and not checked)

    def check_constraints(self) -> None:
        """Check deferred constraints now (``SET CONSTRAINTS ALL IMMEDIATE``) if the schema has any.

        On failure the transaction is left aborted: roll back to a savepoint next.

        Raises:
            DeferredConstraintError: a deferred constraint is violated.
        """
        if not self.checks_constraints:
            return
        if self.connection.dialect.name == "sqlite":
            # SQLite checks deferred foreign keys only at COMMIT; the pragma lists the violations.
            broken = self._sql("PRAGMA foreign_key_check").all()
            if broken:
                keys = ", ".join(sorted({f"{row[0]} -> {row[2]}" for row in broken}))
                raise DeferredConstraintError(
                    "the test left a deferred constraint violated, which COMMIT would reject in production: "
                    f"foreign key {keys} ({len(broken)} rows). Fix the rows the test writes."
                )
            return
        try:
            self._sql("SET CONSTRAINTS ALL IMMEDIATE")
        except DBAPIError as exc:
            _raise_if_constraint(exc)

    def end(self, name: str) -> None:
        """Undo everything since SAVEPOINT ``name`` and remove it with every level above it."""
        if name not in self._levels:
            return
        self._sql(f"ROLLBACK TO SAVEPOINT {name}")
        self._sql(f"RELEASE SAVEPOINT {name}")
        del self._levels[self._levels.index(name):]


def _raise_if_constraint(exc: DBAPIError) -> None:
    """Re-raise an integrity error from SET CONSTRAINTS as DeferredConstraintError.

    Anything else (the test had left the transaction aborted) is cured by the rollback that
    follows, so it is not an error of the test's data.
    """
    if sqlstate(exc).startswith(_INTEGRITY_CLASS):
        raise DeferredConstraintError(
            "the test left a deferred constraint violated, which COMMIT would reject in "
            f"production: {str(exc.orig).strip().splitlines()[0]}. Fix the rows the test writes."
        ) from exc


