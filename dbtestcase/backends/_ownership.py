"""Driver ownership: connections whose commit() and rollback() cannot end the outer transaction.

psycopg2, psycopg 3, pysqlite, PyMySQL and mysqlclient get a subclass of their connection class, made
through SQLAlchemy's documented ``do_connect`` event, whose ``commit()`` and ``rollback()`` do nothing
while the kit owns the transaction: the driver then stays in a real transaction (server-side cursors
work, the isolation level is the server's) that only the kit ends. asyncpg ignores both in DBAPI
autocommit mode. SQLite also gets SQLAlchemy's documented pysqlite workaround (transaction control
handed back to SQLAlchemy).
"""

from __future__ import annotations

import importlib
import sqlite3
from typing import Any, cast

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine


class _Owned:
    """Mixed into a DBAPI connection class: ``commit()`` and ``rollback()`` do nothing once ``owned``.

    dbtestcase then begins and ends the outer transaction itself, with SQL, as it does on psycopg2
    in autocommit mode, so no test can end it through ``TestDatabase.connection``.
    """

    owned = False

    def commit(self) -> None:
        if not self.owned:
            super().commit()  # type: ignore[misc]

    def rollback(self) -> None:
        if not self.owned:
            super().rollback()  # type: ignore[misc]


# Drivers whose connection class can be subclassed: (module, class name).
_OWNABLE = {"pysqlite": ("sqlite3", "Connection"), "pymysql": ("pymysql.connections", "Connection"),
            "mysqldb": ("MySQLdb.connections", "Connection"), "psycopg2": ("psycopg2.extensions", "connection"),
            "psycopg": ("psycopg", "Connection")}
# The connect() keyword through which a driver takes a connection class of the user's: leave that one alone.
_FACTORY_KEYWORD = {"pysqlite": "factory", "psycopg2": "connection_factory"}
_owned_classes: dict[str, type] = {}


def _owned_class(driver: str) -> type | None:
    if driver not in _OWNABLE:
        return None
    if driver not in _owned_classes:
        module_name, class_name = _OWNABLE[driver]
        base = getattr(importlib.import_module(module_name), class_name)
        _owned_classes[driver] = type(f"Owned{base.__name__}", (_Owned, base), {"__module__": __name__})
    return _owned_classes[driver]


def prepare_engine(engine: Engine) -> None:
    """Make the engine fit for tests in savepoints.

    The connections are made from a subclass of the driver's connection class whose commit()
    and rollback() can be switched off (psycopg2, psycopg 3, pysqlite, PyMySQL, mysqlclient),
    through SQLAlchemy's documented ``do_connect`` event.
    SQLite: pysqlite begins and commits on its own and mishandles SAVEPOINT; SQLAlchemy's
    documented workaround hands transaction control back (``isolation_level = None`` and an
    explicit ``BEGIN``). Foreign keys are switched on, as a production database enforces them.
    """
    driver = engine.dialect.driver
    owned = _owned_class(driver)
    if owned is not None:

        @event.listens_for(engine, "do_connect")
        def _connect_owned(dialect: Any, record: Any, cargs: tuple[Any, ...], cparams: dict[str, Any]) -> Any:
            keyword = _FACTORY_KEYWORD.get(driver)
            if keyword in cparams:
                return None  # the user's own connection class: leave it alone
            if driver == "pysqlite":
                return sqlite3.connect(*cargs, factory=owned, **cparams)
            if driver == "psycopg2":
                return dialect.loaded_dbapi.connect(*cargs, connection_factory=owned, **cparams)
            if driver == "psycopg":
                return cast(Any, owned).connect(*cargs, **cparams)  # psycopg 3's classmethod returns the subclass
            return owned(*cargs, **cparams)

    if engine.dialect.name != "sqlite" or driver != "pysqlite":
        return

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        if not getattr(connection.connection.dbapi_connection, "owned", False):
            connection.exec_driver_sql("BEGIN")


# Drivers whose commit() and rollback() send nothing in DBAPI autocommit mode, whatever the server holds.
_AUTOCOMMIT_IGNORES_COMMIT = ("asyncpg",)
# Drivers that begin a transaction themselves before the next statement (not in autocommit mode): an
# explicit BEGIN would be a second one, which the server warns about.
_IMPLICIT_BEGIN = ("psycopg2", "psycopg")


def own_transaction(connection: Connection) -> bool:
    """Take the outer transaction out of SQLAlchemy's and the driver's hands, where that is possible.

    The owned connection classes of :func:`prepare_engine`, and SQLAlchemy's asyncpg adapter in
    autocommit mode, ignore ``commit()`` and ``rollback()``; dbtestcase then begins (where the driver
    does not) and ends the transaction itself. Returns False for other drivers (pg8000, psycopg's async
    driver, a connection class of the user's), whose outer transaction stays SQLAlchemy's.
    """
    dbapi_connection = connection.connection.dbapi_connection
    driver = connection.dialect.driver
    if driver in _AUTOCOMMIT_IGNORES_COMMIT:
        connection.execution_options(isolation_level="AUTOCOMMIT")
    elif isinstance(dbapi_connection, _Owned):
        dbapi_connection.owned = True
    else:
        return False
    if not (isinstance(dbapi_connection, _Owned) and driver in _IMPLICIT_BEGIN):
        connection.exec_driver_sql("BEGIN")
    return True


def release_transaction(connection: Connection) -> None:
    """Undo :func:`own_transaction` before the connection goes back to the pool."""
    dbapi_connection = connection.connection.dbapi_connection
    if isinstance(dbapi_connection, _Owned):
        dbapi_connection.owned = False
