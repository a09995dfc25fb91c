"""The server of a TestDatabase whose URL names none, and closing databases before such a server stops."""

from __future__ import annotations

import atexit
import logging
import weakref
from typing import Any

from sqlalchemy.engine import URL

from .. import backends
from .._urls import configured_url, mask, parse_url
from ..exceptions import ConfigurationError
from . import _asynclink as asyncdb

log = logging.getLogger(__name__)

#: Every TestDatabase set up and not yet torn down (``_database`` adds and discards them).
live: weakref.WeakSet[Any] = weakref.WeakSet()


def resolve_url(url: URL | None) -> URL:
    """``url``, or a throwaway server's: PostgreSQL for no URL, MariaDB for ``mysql://`` alone.

    An async PostgreSQL URL alone (``postgresql+asyncpg://``) means the configured server
    (``$DBTESTCASE_URL``), else a throwaway one, with that driver.
    """
    bare = url is not None and not url.host and not url.database and not url.query
    if bare and url is not None and url.get_backend_name() == "postgresql" and asyncdb.is_async(url):
        configured = configured_url()
        if configured is None or configured.get_backend_name() != "postgresql":
            configured = resolve_url(None)
        return _with_driver(configured, url.drivername)
    if url is not None and not (bare and backends.is_mysql(url.get_backend_name())):
        return url
    if url is None:
        from ..servers.postgresql import shared_server  # imported late: most runs give a URL

        url = parse_url(shared_server().url)
    else:
        from ..servers.mariadb import shared_mariadb_server

        url = parse_url(shared_mariadb_server().url)
    # atexit runs handlers last-in first-out: ours must close before the server stops.
    atexit.unregister(teardown_live)
    atexit.register(teardown_live)
    return url


def _with_driver(url: URL, drivername: str) -> URL:
    """``url`` with another PostgreSQL driver; asyncpg takes none of libpq's query options but ``sslmode``
    (as ``ssl``).

    Raises:
        ConfigurationError: the URL has options asyncpg would not understand.
    """
    query = dict(url.query)
    if drivername.endswith("+asyncpg") and query:
        if "sslmode" in query:
            query["ssl"] = query.pop("sslmode")
        unknown = sorted(set(query) - {"ssl"})
        if unknown:
            raise ConfigurationError(
                f"{drivername}:// alone takes the server of $DBTESTCASE_URL ({mask(url)}), whose options "
                f"{', '.join(unknown)} asyncpg does not take: give the async URL in full "
                f"(url='{drivername}://user@host/dbname'), or use postgresql+psycopg_async://, which takes them."
            )
    return url.set(drivername=drivername, query=query)


def teardown_live() -> None:
    """Tear down every TestDatabase still set up: at exit (atexit), or where a process ends without atexit."""
    for database in list(live):
        try:
            database.teardown()
        except Exception:  # the process is exiting: log, do not mask the real outcome
            log.warning("could not tear down %r at exit", database, exc_info=True)


atexit.register(teardown_live)
