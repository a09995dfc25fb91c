"""Alembic's env.py for the bookshop, with the documented recipe for sharing a connection."""

from alembic import context
from bookshop.models import Base
from sqlalchemy import engine_from_config, pool

config = context.config
target_metadata = Base.metadata


def run_migrations(connection):
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():  # inside dbtestcase's outer transaction: commits nothing
        context.run_migrations()


connection = config.attributes.get("connection")  # given by dbtestcase (or any caller)
if connection is not None:
    run_migrations(connection)
else:
    engine = engine_from_config(config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.", poolclass=pool.NullPool)
    with engine.connect() as connection:
        run_migrations(connection)
