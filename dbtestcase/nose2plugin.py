"""The nose2 plugin, at the path that ``unittest.cfg`` names (``plugins = dbtestcase.nose2plugin``).

It lives in :mod:`dbtestcase.runners`; see there, and :doc:`runners`.
"""

from .runners.nose2_plugin import DbTestCasePlugin

__all__ = ["DbTestCasePlugin"]
