"""pgqrs 0008: concurrency and rate limits, enforced in the claim.

Revision ID: pgqrs_0008_limits
Revises: pgqrs_0007_schedules
Create Date: 2026-12-08

``pgqrs_queues``: ``concurrency``, ``key_concurrency``, ``rate_limit`` and ``rate_period``
(a workflow's limits live on its queue; NULL: no limit), and the rate limit's current window
(``rate_window_start``, ``rate_window_count``). ``pgqrs_messages.concurrency_key`` and
``pgqrs_workflow_runs.concurrency_key``: the key a ``key_concurrency`` limit counts by. All
nullable, no backfill: rows from before have no limit and no key.

No index is added: the limited claim counts the leases of a workflow through its RUNNING runs
(``pgqrs_runs_wf_status_ix``) and reads candidates along the ready index. An index over
``consumer_worker_id`` or ``dequeued_at`` would cost every claim of every queue PostgreSQL's
HOT update.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "pgqrs_0008_limits"
down_revision: str | None = "pgqrs_0007_schedules"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_QUEUE_COLUMNS = (
    ("concurrency", sa.Integer()),
    ("key_concurrency", sa.Integer()),
    ("rate_limit", sa.Integer()),
    ("rate_period", sa.Float()),
    ("rate_window_start", sa.DateTime(timezone=True)),
    ("rate_window_count", sa.Integer()),
)


def upgrade() -> None:
    for name, type_ in _QUEUE_COLUMNS:
        op.add_column("pgqrs_queues", sa.Column(name, type_, nullable=True))
    for table in ("pgqrs_messages", "pgqrs_workflow_runs"):
        op.add_column(table, sa.Column("concurrency_key", sa.String(255), nullable=True))


def downgrade() -> None:
    for table in ("pgqrs_workflow_runs", "pgqrs_messages"):
        with op.batch_alter_table(table) as batch_op:
            batch_op.drop_column("concurrency_key")
    with op.batch_alter_table("pgqrs_queues") as batch_op:
        for name, _type in reversed(_QUEUE_COLUMNS):
            batch_op.drop_column(name)
