"""URL parsing, the default driver, and passwords that never show."""

from __future__ import annotations

import os
import unittest
from unittest import mock

from sqlalchemy.engine import make_url

from dbtestcase import ConfigurationError
from dbtestcase._urls import URL_ENV, configured_url, mask, parse_url


class ParseUrl(unittest.TestCase):
    def test_plain_postgresql_gets_psycopg2(self) -> None:
        """postgresql:// means psycopg2, the driver dbtestcase installs (SQLAlchemy 2.1 would pick psycopg 3)."""
        self.assertEqual(parse_url("postgresql://u@h/db").drivername, "postgresql+psycopg2")

    def test_heroku_spelling(self) -> None:
        """postgres:// (rejected by SQLAlchemy) is accepted as PostgreSQL with psycopg2."""
        self.assertEqual(parse_url("postgres://u@h/db").drivername, "postgresql+psycopg2")

    def test_explicit_driver_kept(self) -> None:
        """An explicit driver is left alone."""
        self.assertEqual(parse_url("postgresql+pg8000://u@h/db").drivername, "postgresql+pg8000")

    def test_url_object(self) -> None:
        """A sqlalchemy URL object is accepted and normalised too."""
        self.assertEqual(parse_url(make_url("postgresql://u@h/db")).drivername, "postgresql+psycopg2")

    def test_unparseable(self) -> None:
        """Garbage gives one sentence with the expected form, and no SQLAlchemy traceback chain."""
        with self.assertRaises(ConfigurationError) as caught:
            parse_url("not a url")
        self.assertEqual(
            str(caught.exception),
            "cannot parse the database URL 'not a url': expected the form "
            "'postgresql://user:password@host:port/dbname' (port a number).",
        )
        self.assertIsNone(caught.exception.__cause__)

    def test_bad_port_hides_password(self) -> None:
        """A URL that fails on its port is reported without its password."""
        with self.assertRaises(ConfigurationError) as caught:
            parse_url("postgresql://ann:s3cret@host:port/db")
        self.assertNotIn("s3cret", str(caught.exception))
        self.assertIn("ann:***@host:port/db", str(caught.exception))

    def test_wrong_type(self) -> None:
        """A non-string names what it got."""
        with self.assertRaisesRegex(ConfigurationError, r"url must be a string .* \(got 42 that is a <class 'int'>\)"):
            parse_url(42)  # type: ignore[arg-type]


class ConfiguredUrl(unittest.TestCase):
    def test_argument_wins(self) -> None:
        """The url argument wins over $DBTESTCASE_URL."""
        with mock.patch.dict(os.environ, {URL_ENV: "postgresql://env@h/db"}):
            self.assertEqual(configured_url("postgresql://arg@h/db").username, "arg")

    def test_environment(self) -> None:
        """Without an argument, $DBTESTCASE_URL is used."""
        with mock.patch.dict(os.environ, {URL_ENV: " postgresql://env@h/db "}):
            self.assertEqual(configured_url().username, "env")

    def test_nothing_means_throwaway(self) -> None:
        """Neither (or an empty variable) means: start a throwaway server."""
        with mock.patch.dict(os.environ, {URL_ENV: ""}):
            self.assertIsNone(configured_url())


class Mask(unittest.TestCase):
    def test_url(self) -> None:
        """The password is replaced by ***."""
        self.assertEqual(mask("postgresql://ann:s3cret@h:5/db"), "postgresql://ann:***@h:5/db")

    def test_unparseable_with_password(self) -> None:
        """Even text SQLAlchemy cannot parse loses its password."""
        masked = mask("postgresql://ann:s3cret@h:port/db")
        self.assertNotIn("s3cret", masked)

    def test_no_password(self) -> None:
        """Text without a password is shown as it is."""
        self.assertEqual(mask("nonsense"), "nonsense")


class ThrowawayChoice(unittest.TestCase):
    def test_only_a_bare_mysql_url_means_a_throwaway_mariadb(self) -> None:
        """A MySQL URL with a database or a host is used as it is (mysqlclient: the local socket)."""
        from dbtestcase.core import resolve_url

        for text in ("mysql+pymysql:///app", "mysql+pymysql://root@db/test", "postgresql+psycopg2://u@h/test"):
            url = parse_url(text)
            self.assertIs(resolve_url(url), url, text)

    def test_a_bare_async_url_takes_the_configured_server(self) -> None:
        """``postgresql+asyncpg://`` alone: $DBTESTCASE_URL's server with asyncpg; libpq's sslmode becomes ssl."""
        from dbtestcase.core import resolve_url

        configured = "postgresql://ann:s3cret@db.example:6543/test_app?sslmode=require"
        with mock.patch.dict(os.environ, {"DBTESTCASE_URL": configured}):
            url = resolve_url(parse_url("postgresql+asyncpg://"))
            psycopg = resolve_url(parse_url("postgresql+psycopg_async://"))
        self.assertEqual(url.render_as_string(hide_password=False),
                         "postgresql+asyncpg://ann:s3cret@db.example:6543/test_app?ssl=require")
        self.assertEqual(dict(psycopg.query), {"sslmode": "require"}, "psycopg takes libpq's options as they are")

    def test_options_asyncpg_does_not_take_are_refused(self) -> None:
        """Options asyncpg would reject are named in one line, with the password masked."""
        from dbtestcase.core import resolve_url

        configured = "postgresql://ann:s3cret@db.example/test_app?connect_timeout=5&application_name=ci"
        with mock.patch.dict(os.environ, {"DBTESTCASE_URL": configured}), self.assertRaises(ConfigurationError) as caught:
            resolve_url(parse_url("postgresql+asyncpg://"))
        message = str(caught.exception)
        self.assertIn("whose options application_name, connect_timeout asyncpg does not take", message)
        self.assertIn("ann:***@db.example", message)
        self.assertNotIn("s3cret", message)


class Secrets(unittest.TestCase):
    def test_password_options_in_the_query_are_masked(self) -> None:
        """libpq's ?password= and sslpassword=, and MySQL drivers' passwd=, never show."""
        shown = mask("postgresql://ann@h/db?password=s3cret&sslpassword=k3y&sslmode=require")
        self.assertEqual(shown, "postgresql://ann@h/db?password=***&sslmode=require&sslpassword=***")
        self.assertEqual(mask(parse_url("mysql+pymysql://ann@h/db?passwd=s3cret")), "mysql+pymysql://ann@h/db?passwd=***")

    def test_an_unencoded_at_sign_in_the_password_is_refused_without_showing_it(self) -> None:
        """'p@ss' unencoded: SQLAlchemy would take 'ss@host' for the host; the error shows no part of it."""
        with self.assertRaises(ConfigurationError) as caught:
            parse_url("postgresql://ann:p@ss@db.example:5432/shop")
        message = str(caught.exception)
        self.assertIn("write it as %40", message)
        self.assertNotIn("ss@", message)
        self.assertIn("postgresql://ann:***@db.example:5432/shop", message)
        self.assertNotIn("p@ss", mask("postgresql://ann:p@ss@db.example/shop"))
        self.assertNotIn("ss@", mask("postgresql://ann:p@ss@db.example/shop"))


class Workers(unittest.TestCase):
    def test_worker_names_fit_in_identifiers(self) -> None:
        """Worker names are lowercased and reduced to letters, digits and _, as schema and database names need."""
        from dbtestcase.workers import worker_id

        for given, expected in (("gw0", "gw0"), ("Alpha-1", "alpha_1"), ("a b;c", "a_b_c"), ("", None)):
            with mock.patch.dict(os.environ, {"DBTESTCASE_WORKER": given, "PYTEST_XDIST_WORKER": ""}):
                self.assertEqual(worker_id(), expected, given)

    def test_the_core_reads_only_the_kits_own_variables(self) -> None:
        """pytest-xdist's names reach the core only through the pytest plugin, which maps them unless set."""
        from dbtestcase.runners.pytest_plugin import adopt_xdist_identity
        from dbtestcase.workers import run_id, worker_id

        xdist = {"DBTESTCASE_WORKER": "", "DBTESTCASE_RUN_ID": "", "PYTEST_XDIST_WORKER": "gw3",
                 "PYTEST_XDIST_TESTRUNUID": "abc"}
        with mock.patch.dict(os.environ, xdist):
            self.assertEqual((worker_id(), run_id()), (None, None))
            adopt_xdist_identity()
            self.assertEqual((worker_id(), run_id()), ("gw3", "abc"))
        environ = {**xdist, "DBTESTCASE_WORKER": "mine", "DBTESTCASE_RUN_ID": "my-run"}
        adopt_xdist_identity(environ)
        self.assertEqual((environ["DBTESTCASE_WORKER"], environ["DBTESTCASE_RUN_ID"]), ("mine", "my-run"))
