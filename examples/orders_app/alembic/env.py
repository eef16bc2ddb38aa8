"""The orders app's Alembic environment: its models (which include the pgqrs tables)."""

import os
from logging.config import fileConfig

from alembic import context
from orders_app.models import Base
from sqlalchemy import create_engine, pool
from sqlalchemy.engine import make_url

from pgqrs_sqla.alembic_support import render_item

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name)


def sync_url() -> str:
    url = make_url(os.environ.get("ORDERS_DATABASE_URL", "sqlite:///orders.db"))
    driver = "postgresql+psycopg" if url.get_backend_name() == "postgresql" else "sqlite"
    return url.set(drivername=driver).render_as_string(hide_password=False)


engine = create_engine(sync_url(), poolclass=pool.NullPool)
with engine.connect() as connection:
    # render_as_batch: SQLite cannot ALTER a table to add a foreign key; batch mode copies it.
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_item=render_item,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()
