"""Where the test database comes from, and URLs that are safe to show."""

from __future__ import annotations

import importlib.util
import os
from typing import Union

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from .exceptions import ConfigurationError

#: The environment variable read when no URL is passed.
URL_ENV = "DBTESTCASE_URL"

UrlLike = Union[str, URL]

# Bare dialect names mapped to the driver dbtestcase depends on. SQLAlchemy 2.1 maps a
# plain ``postgresql://`` to psycopg 3, which is not a dependency; ``postgres://`` is the
# Heroku spelling that SQLAlchemy rejects outright.
_DEFAULT_DRIVERS = {
    "postgresql": "postgresql+psycopg2",
    "postgres": "postgresql+psycopg2",
}


def parse_url(url: UrlLike) -> URL:
    """Parse ``url`` and give bare ``postgresql://`` URLs the psycopg2 driver.

    Raises:
        ConfigurationError: the string is not a database URL.
    """
    if isinstance(url, URL):
        parsed = url
    elif isinstance(url, str):
        try:
            parsed = make_url(url.strip())
        except (ArgumentError, ValueError):
            raise ConfigurationError(
                f"cannot parse the database URL {mask(url)!r}: expected the form "
                "'postgresql://user:password@host:port/dbname' (port a number)."
            ) from None
    else:
        raise ConfigurationError(
            f"url must be a string or sqlalchemy.engine.URL (got {url!r} that is a {type(url)})."
        )
    if parsed.host and "@" in parsed.host:
        # SQLAlchemy splits at the first '@': the rest of the password would be taken for the host.
        raise ConfigurationError(
            f"the database URL {mask(parsed)!r} has an '@' in its host, which means an '@' in the password that is "
            "not percent-encoded: write it as %40 (urllib.parse.quote_plus(password)), or build the URL with "
            "sqlalchemy.engine.URL.create()."
        )
    driver = _DEFAULT_DRIVERS.get(parsed.drivername)
    if parsed.drivername in ("mysql", "mariadb") and importlib.util.find_spec("MySQLdb") is None:
        driver = f"{parsed.drivername}+pymysql"  # mysqlclient where installed, else the [mysql] extra's PyMySQL
    return parsed.set(drivername=driver) if driver else parsed


def configured_url(url: UrlLike | None = None) -> URL | None:
    """The URL given, else ``$DBTESTCASE_URL``, else ``None`` (meaning: a throwaway server)."""
    if url is None:
        url = os.environ.get(URL_ENV, "").strip() or None
    return None if url is None else parse_url(url)


# Query options that carry a secret (libpq's password and sslpassword, MySQL drivers' passwd).
_SECRET_OPTIONS = ("password", "passwd", "pwd", "sslpassword")
_MASKED = "dbtestcaseMASKED"


def mask(url: UrlLike) -> str:
    """``url`` as text with its password, and query options that hold one, replaced by ``***``; never fails."""
    try:
        parsed = url if isinstance(url, URL) else make_url(url)
        if parsed.host and "@" in parsed.host:  # an unencoded '@' in the password: its rest is in the host
            parsed = parsed.set(host=parsed.host.rpartition("@")[2], password=parsed.password or "***")
        secret = {key: _MASKED for key in parsed.query if key.lower() in _SECRET_OPTIONS}
        text = (parsed.update_query_dict(secret) if secret else parsed).render_as_string(hide_password=True)
        return text.replace(_MASKED, "***")  # set after rendering, which would percent-encode the stars
    except Exception:  # noqa: BLE001 - masking must never fail; hide anything between ':' and '@'
        head, sep, tail = str(url).rpartition("@")
        if not sep:
            return str(url)
        scheme, colon, rest = head.partition("://")
        user = rest.split(":", 1)[0]
        return f"{scheme}{colon}{user}:***@{tail}" if ":" in rest else str(url)


_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306}
_LOOPBACK = {"localhost": "127.0.0.1", "::1": "127.0.0.1", "": "127.0.0.1"}


def same_database(first: URL, second: URL) -> bool:
    """Tell whether two URLs name the same database on the same server (drivers and passwords aside)."""

    def where(url: URL) -> tuple[object, ...]:
        backend = url.get_backend_name()
        if backend == "sqlite":
            name = url.database or ""
            return backend, os.path.realpath(name) if name and name != ":memory:" else name
        host = url.host or ""
        port = url.port or _DEFAULT_PORTS.get(backend)
        family = "mysql" if backend == "mariadb" else backend
        return family, _LOOPBACK.get(host, host), port, url.database

    return where(first) == where(second)
