"""Alembic environment (sync engines) with the pgqrs tables wired in.

pgqrs settings live in alembic.ini: ``pgqrs_target_metadata`` names your models and
``pgqrs_tables`` says whether autogenerate manages the pgqrs tables (``include``) or leaves
them to the shipped ``pgqrs`` branch listed in ``version_locations`` (``exclude``).
``sqlalchemy.url`` takes the URLs ``pgqrs_sqla.connect`` takes (``postgresql://`` runs on
psycopg here).
"""

from logging.config import fileConfig

from alembic import context
from sqlalchemy import engine_from_config, pool

from pgqrs_sqla.alembic_support import context_options, migration_url

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name)

options = context_options(config)  # target_metadata, render_item (+ include_object)
url = migration_url(config.get_main_option("sqlalchemy.url") or "", asynchronous=False)


def run_migrations_offline() -> None:
    context.configure(
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **options,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = engine_from_config(
        config.get_section(config.config_ini_section, {}),
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
        url=url,
    )
    with connectable.connect() as connection:
        context.configure(
            connection=connection,
            # SQLite cannot ALTER most things: autogenerate writes batch operations there.
            render_as_batch=connection.dialect.name == "sqlite",
            **options,
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
