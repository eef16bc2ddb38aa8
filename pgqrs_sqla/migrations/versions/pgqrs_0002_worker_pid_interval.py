"""pgqrs 0002: pgqrs_workers.pid and .heartbeat_interval; pgqrs_workflows.backoff_jitter.

Revision ID: pgqrs_0002_worker_pid_interval
Revises: pgqrs_0001_initial
Create Date: 2026-12-02

A worker row records the registering process's id and the worker's own heartbeat interval,
so a name is judged in use by its holder's interval (not the newcomer's), and a worker that
restarts on the same host takes its name back at once when the old process is gone. Both
columns are nullable: rows written before this revision are judged as before.

A workflow's retry policy keeps its ``jitter`` setting (it was dropped on the way to the
database, so ``RetryPolicy(jitter=False)`` on a workflow jittered anyway); NULL means on.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "pgqrs_0002_worker_pid_interval"
down_revision: str | None = "pgqrs_0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # ADD COLUMN of a nullable column is plain DDL on both backends (offline --sql too).
    op.add_column("pgqrs_workers", sa.Column("pid", sa.Integer(), nullable=True))
    op.add_column("pgqrs_workers", sa.Column("heartbeat_interval", sa.Float(), nullable=True))
    op.add_column("pgqrs_workflows", sa.Column("backoff_jitter", sa.Boolean(), nullable=True))


def downgrade() -> None:
    # Batch mode: SQLite before 3.35 has no DROP COLUMN, so Alembic copies the table there
    # (keeping its keys, foreign keys and CHECK); elsewhere these are plain ALTER TABLEs.
    with op.batch_alter_table("pgqrs_workflows") as batch_op:
        batch_op.drop_column("backoff_jitter")
    with op.batch_alter_table("pgqrs_workers") as batch_op:
        batch_op.drop_column("heartbeat_interval")
        batch_op.drop_column("pid")
