"""What a test may do to the shared connection, watched: statements that would end the outer transaction
(MySQL/MariaDB's implicitly committing ones included) are refused, a transaction ended behind the kit's
back is noticed, execution options are undone."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection

from .. import backends
from ..exceptions import DbTestCaseError, TransactionEndedError

__unittest = True  # the refusal's traceback starts in the test

#: The execution option that marks the kit's own statements (they may end what they began).
OWN = "dbtestcase_own"
#: Execution options of the kit's own statements: never a server-side cursor (``stream_results``).
PLAIN = {"stream_results": False, OWN: True}
# Execution options a test may set on the shared connection, and the value that undoes each one.
_NEUTRAL: dict[str, Any] = {"stream_results": False, "schema_translate_map": None, "logging_token": None,
                            "max_row_buffer": 1000, "preserve_rowcount": False, "no_parameters": False}
_MISSING = object()


class ConnectionGuard:
    """Watches the shared connection on behalf of a SavepointStack."""

    def __init__(self, connection: Connection, *, owned: bool) -> None:
        self.connection = connection
        # An owned connection is in the outer transaction from the start: a statement outside it means that
        # a test ended it (a driver that begins on its own would begin anew, silently, at that statement).
        self._dbapi = connection.connection.dbapi_connection if owned else None
        self._mysql = backends.is_mysql(connection.dialect.name)  # whose DDL commits the transaction at once
        #: Whether a statement ran since the last test ended (what runs between two tests must not stay).
        self.touched = False
        self._options = dict(connection.get_execution_options())  # the kit's: what every test starts with
        event.listen(connection, "before_cursor_execute", self._before)

    def _before(self, conn: Connection, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        self.touched = True
        if context is not None and context.execution_options.get(OWN):
            return
        if self._mysql:
            backends.refuse_implicit_commit(conn.dialect.name, statement)
        if self._dbapi is not None and backends.server_in_transaction(self._dbapi) is False:
            raise TransactionEndedError(
                "the outer transaction was ended earlier in this test (a COMMIT or ROLLBACK through the DBAPI "
                "connection), so this statement would run outside it, and commit at once; nothing was sent. "
                "dbtestcase sets up a new outer transaction after the test. Use self.session.commit() or "
                "connection.begin_nested() instead."
            )
        if backends.ends_outer_transaction(statement):
            raise TransactionEndedError(
                f"the test ran {backends.statement_head(statement)!r} on the shared connection, which would end the "
                "outer transaction (and commit or lose the tables and rows of every later test); nothing was sent. "
                "Use self.session.commit() or connection.begin_nested(), whose commit() and rollback() stay inside "
                "the test's savepoint."
            )

    def outer_ended(self) -> str | None:
        """What ended the outer transaction behind the kit's back (a closed connection, a COMMIT or ROLLBACK sent
        through the DBAPI connection itself), or None where it still holds, or the driver cannot tell."""
        if self.connection.closed or self.connection.invalidated:
            return "closed the shared connection"
        in_transaction = backends.server_in_transaction(self.connection.connection.dbapi_connection)
        if in_transaction is False:
            return ("ended the transaction on the server (a COMMIT or ROLLBACK through the DBAPI connection, or "
                    "commit() on a driver the kit cannot guard)")
        return None

    def restore_options(self) -> None:
        """Undo the execution options a test set on the shared connection, which would reach every later test.

        Raises:
            DbTestCaseError: an option that cannot be unset, naming it and the fix.
        """
        if self.connection.closed:
            return
        current = self.connection.get_execution_options()
        # isolation_level is refused on a connection in a transaction, as the shared one always is: nothing to undo.
        changed = {key: value for key, value in current.items()
                   if key != "isolation_level" and self._options.get(key, _MISSING) != value}
        if not changed:
            return
        stuck = sorted(key for key in changed if key not in self._options and key not in _NEUTRAL)
        self.connection.execution_options(
            **{key: self._options.get(key, _NEUTRAL.get(key)) for key in changed if key not in stuck}
        )
        if stuck:
            raise DbTestCaseError(
                f"the test set the execution options {', '.join(stuck)} on the shared connection "
                "(self.connection.execution_options(...) changes it in place), and they cannot be unset, so they "
                "reach every later test: pass them per statement, connection.execute(statement, "
                "execution_options={...}), or on a Session's execute()."
            )
