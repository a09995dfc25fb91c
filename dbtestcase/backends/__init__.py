"""What differs per dialect (PostgreSQL, MySQL/MariaDB, SQLite, others), behind one interface for the core.

``_common``     the strategy of each dialect, the destructive guard, SQLSTATEs and lock waits
``_ownership``  connections whose commit() and rollback() cannot end the outer transaction
``_mysql``      MySQL/MariaDB: the implicit-commit guard and the InnoDB check
``_status``     whether the server still holds the outer transaction; statements that would end it
"""

from ._common import (
    ALLOW_DESTRUCTIVE_ENV,
    LOCK_NOT_AVAILABLE,
    STRATEGIES,
    Strategy,
    check_destructive,
    check_strategy,
    is_test_database,
    limit_lock_wait,
    resolve_strategy,
    sqlstate,
)
from ._mysql import check_transactional, is_mysql, refuse_implicit_commit
from ._ownership import own_transaction, prepare_engine, release_transaction
from ._status import ends_outer_transaction, server_in_transaction, statement_head

__all__ = [
    "ALLOW_DESTRUCTIVE_ENV",
    "LOCK_NOT_AVAILABLE",
    "STRATEGIES",
    "Strategy",
    "check_destructive",
    "check_strategy",
    "check_transactional",
    "ends_outer_transaction",
    "is_mysql",
    "is_test_database",
    "limit_lock_wait",
    "own_transaction",
    "refuse_implicit_commit",
    "prepare_engine",
    "release_transaction",
    "resolve_strategy",
    "server_in_transaction",
    "sqlstate",
    "statement_head",
]
