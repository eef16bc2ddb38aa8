"""pgqrs 0007: schedules — ``pgqrs_schedules``, a workflow triggered on a cron or an interval.

Revision ID: pgqrs_0007_schedules
Revises: pgqrs_0006_retention
Create Date: 2026-12-08

One row per named schedule: its workflow, its cadence (``cron`` in ``timezone``, or
``every`` seconds: exactly one), ``catch_up``, the runs' ``params``, whether it is
``paused``, who defined it (``origin``: ``api`` or ``code``), and its ticks
(``next_tick_at``, ``last_tick_at``, ``last_run_id``). A new table: nothing to backfill.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "pgqrs_0007_schedules"
down_revision: str | None = "pgqrs_0006_retention"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "pgqrs_schedules",
        sa.Column("id", _BIGINT, nullable=False),
        sa.Column("schedule_name", sa.String(128), nullable=False),
        sa.Column("workflow_id", _BIGINT, nullable=False),
        sa.Column("cron", sa.String(255), nullable=True),
        sa.Column("every", sa.Float(), nullable=True),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("catch_up", sa.String(8), nullable=False),
        sa.Column(
            "params",
            sa.JSON(none_as_null=True).with_variant(
                postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
            ),
            nullable=True,
        ),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("origin", sa.String(8), nullable=False),
        sa.Column("next_tick_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_tick_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_run_id", _BIGINT, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "(cron IS NULL) <> (every IS NULL)", name=op.f("pgqrs_schedules_cadence_ck")
        ),
        sa.CheckConstraint(
            "catch_up IN ('latest', 'all', 'none')", name=op.f("pgqrs_schedules_catch_up_ck")
        ),
        sa.CheckConstraint("origin IN ('api', 'code')", name=op.f("pgqrs_schedules_origin_ck")),
        sa.ForeignKeyConstraint(["workflow_id"], ["pgqrs_workflows.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("schedule_name"),
    )
    op.create_index(
        op.f("pgqrs_schedules_due_ix"), "pgqrs_schedules", ["workflow_id", "next_tick_at"]
    )


def downgrade() -> None:
    op.drop_index(op.f("pgqrs_schedules_due_ix"), table_name="pgqrs_schedules")
    op.drop_table("pgqrs_schedules")
