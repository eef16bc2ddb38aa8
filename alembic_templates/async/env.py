"""Alembic environment (async engines) with the pgqrs tables wired in.

pgqrs settings live in alembic.ini: ``pgqrs_target_metadata`` names your models and
``pgqrs_tables`` says whether autogenerate manages the pgqrs tables (``include``) or leaves
them to the shipped ``pgqrs`` branch listed in ``version_locations`` (``exclude``).
``sqlalchemy.url`` takes the URLs ``pgqrs_sqla.connect`` takes (asyncpg / aiosqlite).
"""

import asyncio
from logging.config import fileConfig

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import async_engine_from_config

from pgqrs_sqla.alembic_support import context_options, migration_url

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name)

options = context_options(config)  # target_metadata, render_item (+ include_object)
url = migration_url(config.get_main_option("sqlalchemy.url") or "", asynchronous=True)


def run_migrations_offline() -> None:
    context.configure(
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **options,
    )
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        # SQLite cannot ALTER most things: autogenerate writes batch operations there.
        render_as_batch=connection.dialect.name == "sqlite",
        **options,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    connectable = async_engine_from_config(
        config.get_section(config.config_ini_section, {}),
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
        url=url,
    )
    async with connectable.connect() as connection:
        await connection.run_sync(do_run_migrations)
    await connectable.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_async_migrations())
