"""pgqrs 0006: retention — how long finished runs and archived messages are kept.

Revision ID: pgqrs_0006_retention
Revises: pgqrs_0005_children_deadlines
Create Date: 2026-12-07

``pgqrs_workflows.retention`` and ``pgqrs_workflows.error_retention``: how long a finished
run of the workflow is kept (seconds) after it ended SUCCESS or CANCELLED, and after it
ended ERROR. ``pgqrs_queues.retention``: how long an archived message of a plain queue is
kept. All nullable, no backfill: NULL means the store's default (``connect(retention=...)``).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "pgqrs_0006_retention"
down_revision: str | None = "pgqrs_0005_children_deadlines"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("pgqrs_workflows", sa.Column("retention", sa.Float(), nullable=True))
    op.add_column("pgqrs_workflows", sa.Column("error_retention", sa.Float(), nullable=True))
    op.add_column("pgqrs_queues", sa.Column("retention", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("pgqrs_queues") as batch_op:
        batch_op.drop_column("retention")
    with op.batch_alter_table("pgqrs_workflows") as batch_op:
        batch_op.drop_column("error_retention")
        batch_op.drop_column("retention")
