"""MySQL and MariaDB: statements that commit on their own, and tables without transactions."""

from __future__ import annotations

import re

from sqlalchemy import MetaData, bindparam, text
from sqlalchemy.engine import Connection

from ..exceptions import ImplicitCommitError, NonTransactionalTableError
from ._status import statement_head

_MYSQL = ("mysql", "mariadb")

# Statements that make MySQL/MariaDB commit the open transaction at once (temporary tables aside).
_IMPLICIT_COMMIT = re.compile(
    r"^\s*(?:(?:CREATE|ALTER|DROP)\s+(?!TEMPORARY\b)|TRUNCATE\b|RENAME\s+(?:TABLE|USER)\b|LOCK\s+TABLES?\b|"
    r"UNLOCK\s+TABLES?\b|GRANT\b|REVOKE\b|BEGIN\b|START\s+TRANSACTION\b|SET\s+(?:SESSION\s+|@@)?autocommit\b|"
    r"SET\s+PASSWORD\b|ANALYZE\b|OPTIMIZE\b|REPAIR\b|CHECK\s+TABLE\b|FLUSH\b|CACHE\s+INDEX\b|"
    r"LOAD\s+INDEX\b|RESET\b|INSTALL\b|UNINSTALL\b|XA\b)",
    re.IGNORECASE,
)


def is_mysql(name: str) -> bool:
    """Whether a dialect name is MySQL or MariaDB."""
    return name in _MYSQL


def refuse_implicit_commit(dialect_name: str, statement: str) -> None:
    """Refuse a statement that MySQL/MariaDB would follow with an implicit commit of the outer transaction.

    Called by the shared connection's statement guard (``core._connstate``), on MySQL/MariaDB only.

    Raises:
        ImplicitCommitError: naming the statement and the fix.
    """
    if _IMPLICIT_COMMIT.match(statement):
        raise ImplicitCommitError(
            f"the statement {statement_head(statement)!r} would make {dialect_name} commit the test's transaction at "
            "once (DDL and transaction control commit implicitly there), so its rows would leak into every "
            "later test: create the schema through the metadata before the tests, use a TEMPORARY "
            "table, or use self.session (its commit() stays inside the test's savepoint)."
        )


def check_transactional(connection: Connection, metadata: MetaData) -> None:
    """On MySQL/MariaDB, refuse tables whose engine has no transactions (MyISAM, MEMORY...).

    Raises:
        NonTransactionalTableError: names each such table and its engine.
    """
    if not is_mysql(connection.dialect.name):
        return
    names = [table.name for table in metadata.sorted_tables]
    if not names:
        return
    rows = connection.execute(
        text(
            "SELECT TABLE_NAME, ENGINE FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() "
            "AND TABLE_NAME IN :names AND ENGINE <> 'InnoDB'"
        ).bindparams(bindparam("names", expanding=True)),
        {"names": names},
    ).all()
    if rows:
        found = ", ".join(f"{name} ({engine})" for name, engine in rows)
        raise NonTransactionalTableError(
            f"these tables use an engine without transactions, so rollback cannot undo what a test "
            f"writes and rows would leak between tests: {found}. Declare them InnoDB "
            "(__table_args__ = {'mysql_engine': 'InnoDB'}) or set default_storage_engine=InnoDB on the server."
        )
