"""pgqrs 0010: ``pgqrs_messages.consumer_worker_id`` is no longer a foreign key.

Revision ID: pgqrs_0010_worker_unkeyed
Revises: pgqrs_0009_scale_indexes
Create Date: 2026-12-07

With the key (``ON DELETE SET NULL``), deleting one stopped worker's row made the database
look for the messages that name it, and no index serves ``consumer_worker_id`` (one would
cost every claim PostgreSQL's HOT update): a scan of the whole messages table per worker row,
23 s at 5 M messages, at every worker's start (which prunes long-stopped worker rows). The
column stays; archived messages keep the id of the worker that handled them, whose row may
since be pruned. Live messages are unaffected: a worker row is pruned only when no live
message names it.

On PostgreSQL the key is dropped by the name the server knows it by (the host's naming
convention's, or the server's default), found in its catalog.
The downgrade clears the ids of pruned workers, then puts the key back as ``pgqrs_0001``
made it (named by the host's naming convention, if any). On SQLite both ways copy the table
(batch mode), from the table as reflected with the key taken off or put on, so every other
key keeps its name, or its lack of one.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "pgqrs_0010_worker_unkeyed"
down_revision: str | None = "pgqrs_0009_scale_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: PostgreSQL: drop the key by the name the server gave it, found in its catalog (so the same
#: statement serves ``--sql`` output, where nothing can be inspected)
_DROP_PG = """
DO $$
DECLARE key_name text;
BEGIN
  SELECT c.conname INTO key_name FROM pg_constraint c
  JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)
  WHERE c.conrelid = 'pgqrs_messages'::regclass AND c.contype = 'f'
    AND a.attname = 'consumer_worker_id';
  IF key_name IS NOT NULL THEN
    EXECUTE format('ALTER TABLE pgqrs_messages DROP CONSTRAINT %I', key_name);
  END IF;
END $$
"""


def _host_name() -> str | None:
    """The key's name by the host's naming convention, as it named 0001's (None: unnamed)."""
    metadata = op.get_context().opts.get("target_metadata")
    template = (getattr(metadata, "naming_convention", None) or {}).get("fk")
    if not isinstance(template, str):
        return None
    return template % {
        "table_name": "pgqrs_messages",
        "column_0_name": "consumer_worker_id",
        "referred_table_name": "pgqrs_workers",
    }


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.execute(_DROP_PG)
        return
    if context.is_offline_mode():
        # Batch mode must read the table to copy it: not possible in --sql output.
        op.execute(
            "-- pgqrs_0010: SQLite keeps this foreign key in offline SQL; upgrade online to "
            "drop it (a table copy)"
        )
        return
    # Batch mode copies the table; it is given the table as it is, less this key, so every
    # other key keeps its name (or its lack of one): naming unnamed keys to drop one would
    # name them all.
    bind = op.get_bind()
    reflected = sa.MetaData()
    table = sa.Table("pgqrs_messages", reflected, autoload_with=bind)
    keys = [fk for fk in table.foreign_key_constraints if fk.column_keys == ["consumer_worker_id"]]
    if not keys:
        return
    for key in keys:
        table.constraints.discard(key)
        table.foreign_keys.difference_update(key.elements)
        table.c.consumer_worker_id.foreign_keys.difference_update(key.elements)
    with op.batch_alter_table("pgqrs_messages", copy_from=table, recreate="always"):
        pass


def downgrade() -> None:
    op.execute(
        "UPDATE pgqrs_messages SET consumer_worker_id = NULL WHERE consumer_worker_id IS NOT "
        "NULL AND consumer_worker_id NOT IN (SELECT id FROM pgqrs_workers)"
    )
    if op.get_bind().dialect.name != "sqlite":
        op.create_foreign_key(
            None,
            "pgqrs_messages",
            "pgqrs_workers",
            ["consumer_worker_id"],
            ["id"],
            ondelete="SET NULL",
        )
        return
    # Batch mode adds no unnamed constraint: the copy is given the table with the key on it.
    bind = op.get_bind()
    reflected = sa.MetaData()
    sa.Table("pgqrs_workers", reflected, autoload_with=bind)
    table = sa.Table("pgqrs_messages", reflected, autoload_with=bind)
    table.append_constraint(
        sa.ForeignKeyConstraint(
            ["consumer_worker_id"], ["pgqrs_workers.id"], ondelete="SET NULL", name=_host_name()
        )
    )
    with op.batch_alter_table("pgqrs_messages", copy_from=table, recreate="always"):
        pass
