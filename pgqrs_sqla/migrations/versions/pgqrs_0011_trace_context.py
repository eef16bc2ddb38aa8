"""pgqrs 0011: a run's trace context, for OpenTelemetry traces across processes.

Revision ID: pgqrs_0011_trace_context
Revises: pgqrs_0010_worker_unkeyed
Create Date: 2026-12-07

``pgqrs_workflow_runs.trace_context``: the trigger's W3C trace context (``traceparent``, and
``tracestate`` if any), written only while ``pgqrs_sqla.contrib.otel`` is instrumenting, so
the worker's spans join the trace of the request that triggered the run. Nullable, no
backfill: runs from before (and every run while nothing instruments) have none.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "pgqrs_0011_trace_context"
down_revision: str | None = "pgqrs_0010_worker_unkeyed"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("pgqrs_workflow_runs", sa.Column("trace_context", sa.String(512), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("pgqrs_workflow_runs") as batch_op:
        batch_op.drop_column("trace_context")
