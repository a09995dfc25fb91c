"""pytest-xdist's identity of a worker, in the kit's own terms (stdlib only, no pytest import)."""

from __future__ import annotations

import os
from collections.abc import MutableMapping

from ..workers import ENV_RUN_ID, ENV_WORKER

#: pytest-xdist's variables, and the kit's variable each one maps to.
XDIST_IDENTITY = {"PYTEST_XDIST_TESTRUNUID": ENV_RUN_ID, "PYTEST_XDIST_WORKER": ENV_WORKER}


def adopt_xdist_identity(environ: MutableMapping[str, str] = os.environ) -> None:
    """Copy pytest-xdist's run id and worker name into ``DBTESTCASE_RUN_ID`` and ``DBTESTCASE_WORKER``,
    where those are not set: the workers of one run then share one throwaway server, each in a schema
    (or a MySQL database) of its own.

    .. versionadded:: 0.3
    """
    for theirs, ours in XDIST_IDENTITY.items():
        value = environ.get(theirs, "").strip()
        if value and not environ.get(ours, "").strip():
            environ[ours] = value
