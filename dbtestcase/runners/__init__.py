"""The runner adapters: what unittest, nose2 and pytest see. Only these modules import a test framework.

``_case``          DatabaseTestCase (unittest), and current_session()
``_asynccase``     AsyncDatabaseTestCase (IsolatedAsyncioTestCase on the database's event loop)
``_classes``       what both cases do per class: check the attributes, find the database
``_testdata``      setUpTestData: class data, its ORM objects reloaded in each test
``nose2_plugin``   the nose2 plugin (old path, which unittest.cfg names: ``dbtestcase.nose2plugin``)
``pytest_plugin``  the pytest plugin, registered through the ``pytest11`` entry point
``_identity``      pytest-xdist's worker identity mapped onto DBTESTCASE_WORKER and DBTESTCASE_RUN_ID

nose2 and pytest are imported by their plugins only, never here. The test cases are imported on first
use, so that the pytest plugin, which pytest imports in every run, imports no SQLAlchemy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import exports
from ._identity import adopt_xdist_identity

if TYPE_CHECKING:
    from ._asynccase import AsyncDatabaseTestCase
    from ._case import DatabaseTestCase, current_session

__all__ = ["AsyncDatabaseTestCase", "DatabaseTestCase", "current_session"]

_HOMES = {"AsyncDatabaseTestCase": "._asynccase", "DatabaseTestCase": "._case", "current_session": "._case"}
__getattr__, __dir__ = exports(__name__, _HOMES, globals())

# In a pytest-xdist worker, whether or not pytest loaded the plugin (PYTEST_DISABLE_PLUGIN_AUTOLOAD=1): the
# core reads only the kit's own variables.
adopt_xdist_identity()
