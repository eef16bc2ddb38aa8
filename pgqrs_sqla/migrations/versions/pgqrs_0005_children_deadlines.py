"""pgqrs 0005: child workflows and deadlines — a run's parent, waiter and deadline.

Revision ID: pgqrs_0005_children_deadlines
Revises: pgqrs_0004_durable_waits
Create Date: 2026-12-07

``pgqrs_workflow_runs.parent_run_id``: the run that started this one with
``ctx.start_child`` (cancelling a parent cancels its unfinished children).
``pgqrs_workflow_runs.awaited_by``: the run parked in ``ctx.wait_for_run(s)`` on this one,
woken when it ends. ``pgqrs_workflow_runs.deadline_at``: when an unfinished run is cancelled
(``trigger(timeout=)``). ``pgqrs_workflows.timeout``: a workflow's default time limit. All
nullable, no backfill: rows written before have no parent, waiter or deadline.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "pgqrs_0005_children_deadlines"
down_revision: str | None = "pgqrs_0004_durable_waits"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column("pgqrs_workflow_runs", sa.Column("parent_run_id", _BIGINT, nullable=True))
    op.add_column("pgqrs_workflow_runs", sa.Column("awaited_by", _BIGINT, nullable=True))
    op.add_column(
        "pgqrs_workflow_runs",
        sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.add_column("pgqrs_workflows", sa.Column("timeout", sa.Float(), nullable=True))
    op.create_index("pgqrs_runs_parent_ix", "pgqrs_workflow_runs", ["parent_run_id"])
    op.create_index("pgqrs_runs_awaited_by_ix", "pgqrs_workflow_runs", ["awaited_by"])


def downgrade() -> None:
    op.drop_index("pgqrs_runs_awaited_by_ix", table_name="pgqrs_workflow_runs")
    op.drop_index("pgqrs_runs_parent_ix", table_name="pgqrs_workflow_runs")
    with op.batch_alter_table("pgqrs_workflows") as batch_op:
        batch_op.drop_column("timeout")
    with op.batch_alter_table("pgqrs_workflow_runs") as batch_op:
        batch_op.drop_column("deadline_at")
        batch_op.drop_column("awaited_by")
        batch_op.drop_column("parent_run_id")
