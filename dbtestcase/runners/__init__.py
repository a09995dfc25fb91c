"""The runner adapters: what unittest, nose2 and pytest see. Only these modules import a test framework.

``_case``          DatabaseTestCase (unittest), and current_session()
``_asynccase``     AsyncDatabaseTestCase (IsolatedAsyncioTestCase on the database's event loop)
``_classes``       what both cases do per class: check the attributes, find the database
``_testdata``      setUpTestData: class data, its ORM objects reloaded in each test
``nose2_plugin``   the nose2 plugin (old path, which unittest.cfg names: ``dbtestcase.nose2plugin``)
``pytest_plugin``  the pytest plugin, registered through the ``pytest11`` entry point

nose2 and pytest are imported by their plugins only, never here.
"""

from ._asynccase import AsyncDatabaseTestCase
from ._case import DatabaseTestCase, current_session

__all__ = ["AsyncDatabaseTestCase", "DatabaseTestCase", "current_session"]
