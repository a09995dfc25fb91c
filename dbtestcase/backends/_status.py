"""Whether the server still holds the outer transaction, and the statements that would end it."""

from __future__ import annotations

import re
import sqlite3
from typing import Any

# Transaction control that ends the outer transaction, or a level the kit holds: COMMIT, END, ABORT,
# ROLLBACK (not ROLLBACK TO), PREPARE TRANSACTION, and RELEASE / ROLLBACK TO of a dbtestcase_ savepoint.
_ENDS_OUTER = re.compile(
    r"^\s*(?:(?:COMMIT|END|ABORT|PREPARE\s+TRANSACTION|ROLLBACK(?!\s+TO\b))\b|"
    r"(?:RELEASE|ROLLBACK\s+TO)\s+(?:SAVEPOINT\s+)?[`\"]?dbtestcase_)",
    re.IGNORECASE,
)
_IDLE, _UNKNOWN = 0, 4  # libpq's PQTRANS_IDLE and PQTRANS_UNKNOWN (psycopg2 and psycopg 3 alike)
_MYSQL_IN_TRANS = 1  # SERVER_STATUS_IN_TRANS, in the server status of MySQL's protocol


def statement_head(statement: str) -> str:
    """The start of ``statement`` on one line, for error messages."""
    return " ".join(statement.split())[:60]


def ends_outer_transaction(statement: str) -> bool:
    """Whether ``statement`` would end the outer transaction, or one of the kit's savepoints."""
    return bool(_ENDS_OUTER.match(statement))


def server_in_transaction(dbapi_connection: Any) -> bool | None:
    """What the driver knows of the server's transaction, without a round trip: True, False, or None where the
    driver does not tell (mysqlclient, asyncpg's adapter, others).

    psycopg2 and psycopg 3: libpq's transaction status; pysqlite: ``in_transaction``; PyMySQL: the server
    status of the last reply.
    """
    status = getattr(getattr(dbapi_connection, "info", None), "transaction_status", None)
    if status is not None:
        return int(status) not in (_IDLE, _UNKNOWN)
    if isinstance(dbapi_connection, sqlite3.Connection):
        return dbapi_connection.in_transaction
    server_status = getattr(dbapi_connection, "server_status", None)  # PyMySQL's
    return bool(server_status & _MYSQL_IN_TRANS) if isinstance(server_status, int) else None
