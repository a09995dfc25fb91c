"""The pytest plugin, registered through the ``pytest11`` entry point as ``dbtestcase``.

Inert for suites that do not use the kit: it imports no driver and starts no server. Under pytest-xdist
it tells the core who this worker is, in the core's own terms: ``PYTEST_XDIST_TESTRUNUID`` becomes
``DBTESTCASE_RUN_ID`` (the workers of one run share one throwaway server) and ``PYTEST_XDIST_WORKER``
becomes ``DBTESTCASE_WORKER`` (a schema or database per worker), unless the user set them. Switch it off
with ``-p no:dbtestcase``.

.. versionadded:: 0.3
"""

from __future__ import annotations

import os
from typing import Any

from ..workers import ENV_RUN_ID, ENV_WORKER

#: pytest-xdist's variables, and the kit's variable each one maps to.
XDIST_IDENTITY = {"PYTEST_XDIST_TESTRUNUID": ENV_RUN_ID, "PYTEST_XDIST_WORKER": ENV_WORKER}


def adopt_xdist_identity(environ: Any = os.environ) -> None:
    """Copy pytest-xdist's run id and worker name into the kit's variables, where those are not set."""
    for theirs, ours in XDIST_IDENTITY.items():
        value = environ.get(theirs, "").strip()
        if value and not environ.get(ours, "").strip():
            environ[ours] = value


def pytest_load_initial_conftests(early_config: Any, parser: Any, args: Any) -> None:
    """Before the first conftest is imported (it may set a database up at import): map xdist's identity."""
    adopt_xdist_identity()
