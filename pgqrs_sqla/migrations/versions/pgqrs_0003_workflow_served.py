"""pgqrs 0003: pgqrs_workflows.served_at, pgqrs_workers.queues, pgqrs_workflow_steps.next_delivery.

Revision ID: pgqrs_0003_workflow_served
Revises: pgqrs_0002_worker_pid_interval
Create Date: 2026-12-07

A trigger for a workflow that has no definition row yet creates the row (and its queue)
with default options, so a freshly migrated database accepts triggers before any worker
has started. ``served_at`` records when a worker first registered for the workflow; NULL
means none has yet, which is how a misspelt workflow name stays visible
(``Store.unserved_workflows()``, ``pgqrs-sqla queues``). Nullable, no backfill: a worker
sets it when it next starts.

``pgqrs_workers.queues`` (JSON) lists every queue a worker serves; ``queue_id`` still names
the first. NULL for rows written before: ``list_workers`` then shows ``queue_id``'s queue and
the queues of the messages the worker holds, as before, until the worker registers again.

``pgqrs_workflow_steps.next_delivery`` (integer): the first delivery of the run's message
that may run the steps after this record, so a step's ``attempts`` counts the deliveries
that died in its body too. NULL for rows written before (and by ``update_step``): a step
after such a row counts from the delivery that records it, as before.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "pgqrs_0003_workflow_served"
down_revision: str | None = "pgqrs_0002_worker_pid_interval"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # ADD COLUMN of a nullable column is plain DDL on both backends (offline --sql too).
    op.add_column(
        "pgqrs_workflows", sa.Column("served_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column(
        "pgqrs_workers",
        sa.Column(
            "queues",
            sa.JSON(none_as_null=True).with_variant(
                postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
            ),
            nullable=True,
        ),
    )
    op.add_column(
        "pgqrs_workflow_steps", sa.Column("next_delivery", sa.Integer(), nullable=True)
    )


def downgrade() -> None:
    # Batch mode: SQLite before 3.35 has no DROP COLUMN (Alembic copies the table there).
    with op.batch_alter_table("pgqrs_workflow_steps") as batch_op:
        batch_op.drop_column("next_delivery")
    with op.batch_alter_table("pgqrs_workers") as batch_op:
        batch_op.drop_column("queues")
    with op.batch_alter_table("pgqrs_workflows") as batch_op:
        batch_op.drop_column("served_at")
