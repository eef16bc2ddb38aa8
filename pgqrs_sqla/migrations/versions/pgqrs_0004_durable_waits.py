"""pgqrs 0004: durable waits — a step's kind, wake_at and wait_for, and pgqrs_workflow_events.

Revision ID: pgqrs_0004_durable_waits
Revises: pgqrs_0003_workflow_served
Create Date: 2026-12-07

A durable wait (``ctx.sleep``, ``ctx.wait_for_event``) is recorded like a step, in
``pgqrs_workflow_steps``: ``kind`` says which primitive wrote the row (NULL for a step),
``wake_at`` is its deadline and ``wait_for`` the event it waits for. All three are nullable,
with no backfill: rows written before are steps.

``pgqrs_workflow_events`` holds the events sent to runs (``Store.send_event``) until a wait
consumes them: a mailbox per run and event name, in order.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "pgqrs_0004_durable_waits"
down_revision: str | None = "pgqrs_0003_workflow_served"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column("pgqrs_workflow_steps", sa.Column("kind", sa.String(16), nullable=True))
    op.add_column(
        "pgqrs_workflow_steps", sa.Column("wake_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column("pgqrs_workflow_steps", sa.Column("wait_for", sa.String(255), nullable=True))
    op.create_table(
        "pgqrs_workflow_events",
        sa.Column("id", _BIGINT, nullable=False),
        sa.Column("run_id", _BIGINT, nullable=False),
        sa.Column("event_name", sa.String(128), nullable=False),
        sa.Column(
            "payload",
            sa.JSON(none_as_null=True).with_variant(
                postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
            ),
            nullable=True,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("consumed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("consumed_by", sa.String(255), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["pgqrs_workflow_runs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "pgqrs_events_run_name_ix",
        "pgqrs_workflow_events",
        ["run_id", "event_name", "id"],
    )


def downgrade() -> None:
    op.drop_index("pgqrs_events_run_name_ix", table_name="pgqrs_workflow_events")
    op.drop_table("pgqrs_workflow_events")
    with op.batch_alter_table("pgqrs_workflow_steps") as batch_op:
        batch_op.drop_column("wait_for")
        batch_op.drop_column("wake_at")
        batch_op.drop_column("kind")
