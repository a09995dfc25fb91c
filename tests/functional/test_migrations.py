"""alembic_config: the schema from Alembic's upgrade head on the shared connection, checked against the models."""

from __future__ import annotations

import sys
import unittest

import sqlalchemy as sa

import dbtestcase
from dbtestcase import ConfigurationError, SchemaMismatchError, TestDatabase
from tests.functional.support import ROOT, backend, rows_seen_by_another_connection, run_tests, server_url, skip_unless

EXAMPLES = ROOT / "examples"
ALEMBIC_INI = str(EXAMPLES / "alembic.ini")
sys.path.insert(0, str(EXAMPLES))  # the example's env.py imports bookshop.models

from bookshop.models import Author, Base  # noqa: E402


class Migrations(unittest.TestCase):
    def test_upgrade_inside_the_transaction(self) -> None:
        """The migrations build the schema on the kit's connection; tests run on it; nothing is left."""
        with TestDatabase(Base.metadata, alembic_config=ALEMBIC_INI) as database:
            version = database.connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
            self.assertEqual(version, "0001")
            if backend() in ("postgresql", "sqlite"):
                inspector_names = sa.inspect(sa.create_engine(server_url())).get_table_names()
                self.assertNotIn("alembic_version", inspector_names, "migrated inside the outer transaction")

            class Case(dbtestcase.DatabaseTestCase):
                def test_a(self) -> None:
                    self.session.add(Author(name="ann"))
                    self.session.commit()
                    self.assertRowCount(Author, 1)

                test_b = test_a

            Case.database = database
            result = run_tests(Case)
            self.assertTrue(result.wasSuccessful(), result.errors + result.failures)
        self.assertEqual(rows_seen_by_another_connection(server_url(), "authors"), 0)

    @skip_unless("postgresql", "sqlite", why="a failed reset on MySQL leaves committed tables for the next reset")
    def test_mismatch_is_reported(self) -> None:
        """Models with a column no migration creates: each difference is named."""
        metadata = sa.MetaData()
        for table in Base.metadata.sorted_tables:
            table.to_metadata(metadata)
        metadata.tables["authors"].append_column(sa.Column("email", sa.String(200)))
        database = TestDatabase(metadata, alembic_config=ALEMBIC_INI)
        with self.assertRaises(SchemaMismatchError) as caught:
            database.setup()
        message = str(caught.exception)
        self.assertIn("the migrated schema differs from the models (1 differences): add_column", message)
        self.assertIn("email", message)
        self.assertIn("alembic revision --autogenerate", message)
        self.assertFalse(database.is_set_up)

    @skip_unless("postgresql", "sqlite", why="the savepoint strategy")
    def test_drop_tables_refused(self) -> None:
        """drop_tables=True with migrations is refused before anything is created or committed."""
        database = TestDatabase(Base.metadata, alembic_config=ALEMBIC_INI, drop_tables=True)
        with self.assertRaisesRegex(ConfigurationError, "drop_tables=True with alembic_config is not supported"):
            database.setup()
        self.assertFalse(sa.inspect(sa.create_engine(server_url())).has_table("alembic_version"))

    def test_missing_file(self) -> None:
        """A path that is not a file is refused at construction."""
        with self.assertRaisesRegex(ConfigurationError, r"alembic_config='nowhere.ini' is not a file"):
            TestDatabase(Base.metadata, alembic_config="nowhere.ini")
