"""pgqrs 0003: pgqrs_workflows.served_at.

Revision ID: pgqrs_0003_workflow_served
Revises: pgqrs_0002_worker_pid_interval
Create Date: 2026-12-07

A trigger for a workflow that has no definition row yet creates the row (and its queue)
with default options, so a freshly migrated database accepts triggers before any worker
has started. ``served_at`` records when a worker first registered for the workflow; NULL
means none has yet, which is how a misspelt workflow name stays visible
(``Store.unserved_workflows()``, ``pgqrs-sqla queues``). Nullable, no backfill: a worker
sets it when it next starts.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "pgqrs_0003_workflow_served"
down_revision: str | None = "pgqrs_0002_worker_pid_interval"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # ADD COLUMN of a nullable column is plain DDL on both backends (offline --sql too).
    op.add_column(
        "pgqrs_workflows", sa.Column("served_at", sa.DateTime(timezone=True), nullable=True)
    )


def downgrade() -> None:
    # Batch mode: SQLite before 3.35 has no DROP COLUMN (Alembic copies the table there).
    with op.batch_alter_table("pgqrs_workflows") as batch_op:
        batch_op.drop_column("served_at")
