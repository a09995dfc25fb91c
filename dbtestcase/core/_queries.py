"""Capturing the SQL a test runs, for assertNumQueries and captureQueries."""

from __future__ import annotations

import re
from types import TracebackType
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection

# Transaction control the kit and the Session send on their own: not the test's queries.
_TRANSACTION_CONTROL = re.compile(r"^\s*(SAVEPOINT|RELEASE\s+SAVEPOINT|ROLLBACK\s+TO\s+SAVEPOINT)\b", re.IGNORECASE)


class CapturedQueries(list):  # type: ignore[type-arg]
    """The SQL statements run on a connection while the ``with`` block runs, in order.

    A list of strings; transaction control (SAVEPOINT, RELEASE, ROLLBACK TO) is left out. Statements
    run through ``executemany`` count once.

    .. versionadded:: 0.2
    """

    def __init__(self, connection: Connection) -> None:
        super().__init__()
        self._connection = connection

    def _record(self, conn: Connection, cursor: Any, statement: str, *args: Any) -> None:
        if not _TRANSACTION_CONTROL.match(statement):
            self.append(statement)

    def __enter__(self) -> CapturedQueries:
        event.listen(self._connection, "before_cursor_execute", self._record)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        event.remove(self._connection, "before_cursor_execute", self._record)

    def describe(self) -> str:
        """The statements numbered one a line, for failure messages."""
        return "\n".join(f"{number}. {' '.join(sql.split())}" for number, sql in enumerate(self, 1))
