"""Create the engine and open connections, turning driver failures into one-line errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import DBAPIError, NoSuchModuleError

from .._urls import mask
from ..exceptions import ConnectionFailedError, DriverMissingError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

# pip packages that provide the DBAPI modules users most often name in URLs.
_DRIVER_PACKAGES = {
    "psycopg2": "psycopg2-binary",
    "psycopg": "'psycopg[binary]'",
    "asyncpg": "asyncpg",
    "pg8000": "pg8000",
    "pymysql": "PyMySQL",
    "MySQLdb": "mysqlclient",
    "mysql": "mysql-connector-python",
    "mariadb": "mariadb",
}


def create_engine(url: URL, *, echo: bool = False, **engine_options: Any) -> Engine:
    """``sqlalchemy.create_engine`` with a connect timeout and a clear error for missing drivers.

    Raises:
        DriverMissingError: the dialect or its DBAPI module is not installed.
    """
    engine: Engine = _create(sa.create_engine, url, echo, engine_options)
    return engine


def create_async_engine(url: URL, *, echo: bool = False, **engine_options: Any) -> AsyncEngine:
    """``sqlalchemy.ext.asyncio.create_async_engine``, as :func:`create_engine` (needs greenlet)."""
    from sqlalchemy.ext.asyncio import create_async_engine as factory

    engine: AsyncEngine = _create(factory, url, echo, engine_options)
    return engine


# The driver's connect timeout parameter: a host that drops packets would otherwise hang the first test.
_CONNECT_TIMEOUT = {"psycopg2": "connect_timeout", "psycopg": "connect_timeout", "psycopg_async": "connect_timeout",
                    "asyncpg": "timeout"}


def _create(factory: Callable[..., Any], url: URL, echo: bool, engine_options: dict[str, Any]) -> Any:
    options: dict[str, Any] = {"echo": echo, **engine_options}
    timeout = _CONNECT_TIMEOUT.get(url.get_driver_name()) if url.get_backend_name() == "postgresql" else None
    if timeout and timeout not in url.query:
        options.setdefault("connect_args", {}).setdefault(timeout, 10)
    try:
        return factory(url, **options)
    except NoSuchModuleError:
        raise DriverMissingError(
            f"SQLAlchemy has no dialect {url.drivername!r} (from {mask(url)}): use a URL such as "
            "'postgresql://user@host/dbname', or install the package that provides that dialect."
        ) from None
    except ImportError as exc:
        module = (exc.name or "").split(".")[0] or url.get_driver_name()
        package = _DRIVER_PACKAGES.get(module, module)
        instead = (
            "pip install 'dbtestcase[mysql]' and use 'mysql+pymysql://'"
            if url.get_backend_name() in ("mysql", "mariadb")
            else "use 'postgresql+psycopg2://', which dbtestcase installs"
        )
        raise DriverMissingError(
            f"the URL {mask(url)} needs the DBAPI driver {module!r}, which is not installed: "
            f"pip install {package}, or {instead}."
        ) from exc


def connect(engine: Engine) -> Connection:
    """Open a connection, explaining refused logins, missing databases and dead servers.

    Raises:
        ConnectionFailedError: the server did not answer or refused the login.
    """
    try:
        return engine.connect()
    except DBAPIError as exc:
        # The message carries the driver's own first line: the chain of DBAPI tracebacks would bury it.
        raise ConnectionFailedError(explain(engine.url, exc), exc) from None


def explain(url: URL, exc: BaseException) -> str:
    """A one-line reason for a failed connection (a DBAPIError, or an OSError from an async driver); the
    password never appears in it."""
    orig = getattr(exc, "orig", None)
    detail = (str(orig if orig is not None else exc).strip().splitlines() or [type(exc).__name__])[0]
    if url.password:
        detail = detail.replace(str(url.password), "***")
    where = f"{url.host or 'localhost'}:{url.port or 'default port'}"
    lowered = detail.lower()
    refused = ("authentication failed", "password", "access denied", "role ")
    if any(word in lowered for word in refused) and "database" not in lowered.split("failed:")[-1]:
        fix = f"check the user name and password in the URL ({mask(url)})"
        what = f"the server at {where} refused the login of user {url.username!r}"
    elif ("does not exist" in lowered and "database" in lowered) or "unknown database" in lowered:
        what = f"the database {url.database!r} does not exist on {where}"
        mysql = url.get_backend_name() in ("mysql", "mariadb")
        create = f"CREATE DATABASE {url.database}" if mysql else f"createdb {url.database}"
        fix = f"create it ({create}) or name an existing database in the URL"
    else:
        what = f"could not connect to {mask(url)}"
        throwaway = "mysql://" if url.get_backend_name() in ("mysql", "mariadb") else "no url"
        fix = (
            "is the server running and listening there? Or unset DBTESTCASE_URL and pass "
            f"{throwaway}, and dbtestcase starts a throwaway "
            f"{'MariaDB' if throwaway == 'mysql://' else 'PostgreSQL'}"
        )
    return f"{what} ({detail}): {fix}."
