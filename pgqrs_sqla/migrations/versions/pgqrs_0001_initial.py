"""pgqrs 0001: queues, messages, workers, workflows, workflow runs and steps.

Revision ID: pgqrs_0001_initial
Revises:
Create Date: 2026-11-25

Primary, foreign and unique keys are left unnamed, so the host's naming convention (from
``target_metadata``) names them exactly as it names them in the models; CHECK constraints
and indexes carry explicit names.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "pgqrs_0001_initial"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = ("pgqrs",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "pgqrs_queues",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("queue_name", sa.String(length=128), nullable=False),
        sa.Column("max_deliveries", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("max_deliveries > 0", name=op.f("pgqrs_queues_maxdel_ck")),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("queue_name"),
    )
    op.create_table(
        "pgqrs_workers",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("worker_name", sa.String(length=128), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("port", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("queue_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.CheckConstraint(
            "status IN ('ready', 'polling', 'suspended', 'stopped')",
            name=op.f("pgqrs_workers_status_ck"),
        ),
        sa.ForeignKeyConstraint(["queue_id"], ["pgqrs_queues.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("worker_name"),
    )
    op.create_table(
        "pgqrs_workflows",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("workflow_name", sa.String(length=128), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("backoff_base", sa.Float(), nullable=False),
        sa.Column("backoff_cap", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("queue_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.ForeignKeyConstraint(["queue_id"], ["pgqrs_queues.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("workflow_name"),
    )
    op.create_table(
        "pgqrs_messages",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "payload",
            sa.JSON(none_as_null=True).with_variant(
                postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
            ),
            nullable=True,
        ),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("vt", sa.DateTime(timezone=True), nullable=False),
        sa.Column("read_ct", sa.Integer(), nullable=False),
        sa.Column("failed_ct", sa.Integer(), nullable=False),
        sa.Column("dequeued_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("archive_reason", sa.String(length=16), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("queue_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "consumer_worker_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=True,
        ),
        sa.CheckConstraint(
            "archive_reason IS NULL OR archive_reason IN ('done', 'dead')",
            name=op.f("pgqrs_messages_reason_ck"),
        ),
        sa.ForeignKeyConstraint(["consumer_worker_id"], ["pgqrs_workers.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["queue_id"], ["pgqrs_queues.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("pgqrs_messages_archived_ix"),
        "pgqrs_messages",
        ["queue_id", "archived_at"],
        unique=False,
    )
    op.create_index(
        op.f("pgqrs_messages_ready_ix"),
        "pgqrs_messages",
        ["queue_id", "priority", "id"],
        unique=False,
        postgresql_where=sa.text("archived_at IS NULL"),
        sqlite_where=sa.text("archived_at IS NULL"),
    )
    op.create_table(
        "pgqrs_workflow_runs",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column(
            "input",
            sa.JSON(none_as_null=True).with_variant(
                postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
            ),
            nullable=True,
        ),
        sa.Column(
            "output",
            sa.JSON(none_as_null=True).with_variant(
                postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
            ),
            nullable=True,
        ),
        sa.Column(
            "error",
            sa.JSON(none_as_null=True).with_variant(
                postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
            ),
            nullable=True,
        ),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "workflow_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "message_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.CheckConstraint(
            "status IN ('QUEUED', 'RUNNING', 'PAUSED', 'SUCCESS', 'ERROR', 'CANCELLED')",
            name=op.f("pgqrs_runs_status_ck"),
        ),
        sa.ForeignKeyConstraint(["message_id"], ["pgqrs_messages.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["workflow_id"], ["pgqrs_workflows.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("message_id"),
        sa.UniqueConstraint("workflow_id", "idempotency_key"),
    )
    op.create_index(
        op.f("pgqrs_runs_wf_status_ix"),
        "pgqrs_workflow_runs",
        ["workflow_id", "status"],
        unique=False,
    )
    op.create_table(
        "pgqrs_workflow_steps",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("step_name", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column(
            "output",
            sa.JSON(none_as_null=True).with_variant(
                postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
            ),
            nullable=True,
        ),
        sa.Column(
            "error",
            sa.JSON(none_as_null=True).with_variant(
                postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
            ),
            nullable=True,
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("run_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.CheckConstraint(
            "status IN ('RUNNING', 'SUCCESS', 'ERROR', 'PAUSED')",
            name=op.f("pgqrs_steps_status_ck"),
        ),
        sa.ForeignKeyConstraint(["run_id"], ["pgqrs_workflow_runs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("run_id", "step_name"),
    )


def downgrade() -> None:
    op.drop_table("pgqrs_workflow_steps")
    op.drop_index(op.f("pgqrs_runs_wf_status_ix"), table_name="pgqrs_workflow_runs")
    op.drop_table("pgqrs_workflow_runs")
    op.drop_index(
        op.f("pgqrs_messages_ready_ix"),
        table_name="pgqrs_messages",
        postgresql_where=sa.text("archived_at IS NULL"),
        sqlite_where=sa.text("archived_at IS NULL"),
    )
    op.drop_index(op.f("pgqrs_messages_archived_ix"), table_name="pgqrs_messages")
    op.drop_table("pgqrs_messages")
    op.drop_table("pgqrs_workflows")
    op.drop_table("pgqrs_workers")
    op.drop_table("pgqrs_queues")
