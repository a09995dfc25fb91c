"""The schema built by the Alembic migrations in migrations/, not by create_all.

setup_module(..., alembic_config="alembic.ini") runs `upgrade head` on dbtestcase's connection, inside
the outer transaction, and checks that the migrated schema matches the models.
"""

from __future__ import annotations

from pathlib import Path

from bookshop.models import Author, Base
from sqlalchemy import text

import dbtestcase


def setUpModule():
    dbtestcase.setup_module(Base.metadata, alembic_config=str(Path(__file__).parent / "alembic.ini"))


def tearDownModule():
    dbtestcase.teardown_module()


class MigratedSchemaTests(dbtestcase.DatabaseTestCase):
    def test_at_head(self):
        """The migrations ran: Alembic's version table says 0001."""
        self.assertEqual(self.connection.execute(text("SELECT version_num FROM alembic_version")).scalar(), "0001")

    def test_models_work(self):
        """The models run on the migrated tables as usual."""
        self.session.add(Author(name="Ursula K. Le Guin"))
        self.session.commit()
        self.assertRowCount(Author, 1)
