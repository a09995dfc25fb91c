"""The nose2 plugin: ``--db-url`` and the ``url`` key of a ``[dbtestcase]`` config section.

Enable it in ``unittest.cfg`` / ``nose2.cfg``::

    [unittest]
    plugins = dbtestcase.nose2plugin

    [dbtestcase]
    url = postgresql://postgres@localhost/test

or on the command line: ``nose2 --plugin dbtestcase.nose2plugin --db-url postgresql://...``.
The URL is handed to the tests as ``$DBTESTCASE_URL``.
Precedence: ``--db-url``, then ``$DBTESTCASE_URL``, then the config file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Union

from nose2 import events

from .exceptions import ConfigurationError
from .urls import URL_ENV, parse_url

__unittest = True


class DbTestCasePlugin(events.Plugin):
    """Choose the database of ``DatabaseTestCase`` tests from nose2's command line or config."""

    configSection = "dbtestcase"
    alwaysOn = True

    def __init__(self) -> None:
        configured = self.config.as_str("url", "").strip()
        if configured and not os.environ.get(URL_ENV, "").strip():
            self._use(configured, source=f"the [{self.configSection}] url setting")
        self.addArgument(
            self._from_command_line,
            None,
            "db-url",
            "Database URL for dbtestcase tests (default: $DBTESTCASE_URL, then the "
            "[dbtestcase] url setting, else a throwaway PostgreSQL)",
        )

    def _from_command_line(self, value: Union[str, Sequence[str]]) -> None:
        url = value if isinstance(value, str) else value[0]
        self._use(url, source="--db-url")

    @staticmethod
    def _use(url: str, *, source: str) -> None:
        try:
            parse_url(url)  # a bad URL fails here, once, before any test runs
        except ConfigurationError as exc:
            # A one-line usage error, as argparse gives, rather than a traceback.
            raise SystemExit(f"nose2: error: {source}: {exc}") from None
        os.environ[URL_ENV] = url.strip()
