"""The pytest plugin, registered through the ``pytest11`` entry point as ``dbtestcase``.

Inert for suites that do not use the kit: importing it imports no SQLAlchemy and no driver, and starts no
server. Under pytest-xdist it makes sure, before the first ``conftest.py`` is imported, that the core
knows who this worker is (:func:`adopt_xdist_identity`; importing dbtestcase in a worker does the same,
so that this holds with ``PYTEST_DISABLE_PLUGIN_AUTOLOAD=1`` too).

.. versionadded:: 0.3
"""

from __future__ import annotations

from typing import Any

from ._identity import XDIST_IDENTITY, adopt_xdist_identity

__all__ = ["XDIST_IDENTITY", "adopt_xdist_identity", "pytest_load_initial_conftests"]


def pytest_load_initial_conftests(early_config: Any, parser: Any, args: Any) -> None:
    """Before the first conftest is imported (it may set a database up at import): map xdist's identity."""
    adopt_xdist_identity()
