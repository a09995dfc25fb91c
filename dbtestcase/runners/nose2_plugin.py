"""The nose2 plugin: ``--db-url`` and the ``url`` key of a ``[dbtestcase]`` config section.

Enable it in ``unittest.cfg`` / ``nose2.cfg``::

    [unittest]
    plugins = dbtestcase.nose2plugin

    [dbtestcase]
    url = postgresql://postgres@localhost/test

or on the command line: ``nose2 --plugin dbtestcase.nose2plugin --db-url postgresql://...``.
The URL is handed to the tests as ``$DBTESTCASE_URL``.
Precedence: ``--db-url``, then ``$DBTESTCASE_URL``, then the config file.

With nose2's mp plugin (``nose2 -N 4``) the plugin runs in every worker too; it gives the workers one
``$DBTESTCASE_RUN_ID``, so that they share one throwaway server, and each its own ``$DBTESTCASE_WORKER``
(``nose2_0``, ``nose2_1``...: the lowest number no live worker on this machine holds).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence
from typing import Union

from nose2 import events

from .._urls import URL_ENV, parse_url
from ..core import teardown_live
from ..exceptions import ConfigurationError
from ..servers import Shared, claim_slot
from ..workers import ENV_RUN_ID, ENV_WORKER

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

    def registerInSubprocess(self, event: events.Event) -> None:
        """Before the mp plugin starts its workers: have them load this plugin, and give them one run id.

        .. versionadded:: 0.2
        """
        event.pluginClasses.append(type(self))
        if not os.environ.get(ENV_RUN_ID, "").strip():  # the user's own id wins
            os.environ[ENV_RUN_ID] = f"nose2-{os.getpid()}-{secrets.token_hex(4)}"

    def startSubprocess(self, event: events.Event) -> None:
        """In an mp worker, before it runs tests: name the worker.

        .. versionadded:: 0.2
        """
        # A stable name (nose2_0, nose2_1...): a killed worker's MySQL database is reused by a later one.
        os.environ[ENV_WORKER] = f"nose2_{claim_slot('nose2-worker')}"

    def stopSubprocess(self, event: events.Event) -> None:
        """In an mp worker, after its last test: tear down the databases still set up (a process-wide one, say)
        and leave the shared server now, as the worker ends with os._exit(), which skips atexit.

        .. versionadded:: 0.2
        """
        try:
            teardown_live()
        finally:
            Shared.stop_all()
