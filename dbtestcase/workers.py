"""Who we are in a parallel run: the run's id (shared by its workers) and this worker's id (stdlib only).

The core and the servers read only the kit's own variables; the runner adapters (the nose2 and pytest
plugins) map their runner's identities onto them.
"""

from __future__ import annotations

import os
import re

__all__ = ["ENV_RUN_ID", "ENV_WORKER", "run_id", "worker_id"]

#: Shared by every worker process of one run: they attach to one throwaway server. Set by the nose2
#: plugin when its mp plugin starts workers, and by the pytest plugin from pytest-xdist's
#: ``PYTEST_XDIST_TESTRUNUID``. Set it yourself to share a throwaway server between processes you start.
ENV_RUN_ID = "DBTESTCASE_RUN_ID"
#: This worker's name (``gw0``): set by the nose2 plugin in mp workers, and by the pytest plugin from
#: pytest-xdist's ``PYTEST_XDIST_WORKER``.
ENV_WORKER = "DBTESTCASE_WORKER"


def run_id() -> str | None:
    """The id of the parallel run this process belongs to, or None when it runs on its own."""
    return _env(ENV_RUN_ID)


def worker_id() -> str | None:
    """This process's worker name in a parallel run (lowercase letters, digits and ``_`` only), or None.

    Lowercase, as PostgreSQL folds unquoted names: it goes into schema and database names.
    """
    name = _env(ENV_WORKER)
    return re.sub(r"[^a-z0-9_]", "_", name.lower())[:24] if name else None


def _env(name: str) -> str | None:
    return os.environ.get(name, "").strip() or None
