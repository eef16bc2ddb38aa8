"""The one module that writes ``pgqrs_queues`` and ``pgqrs_workflows``.

Queues and workflow definitions are created, updated and deleted by the statements built
here. Builders are pure; callers execute them (``define_workflow`` runs its two inserts on a
sync connection, inside the caller's transaction).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Delete, Insert, Update, delete, select, update
from sqlalchemy.engine import Connection

from .dialects import insert_for, utcnow
from .models import Tables
from .retry import RetryPolicy


def policy_columns(policy: RetryPolicy) -> dict[str, Any]:
    """The workflow row's columns for ``policy`` (read back by ``runs._policy``)."""
    return {
        "max_attempts": policy.max_attempts,
        "backoff_base": policy.base,
        "backoff_cap": policy.cap,
        "backoff_jitter": policy.jitter,
    }


def queue_insert_stmt(t: Tables, name: str, max_deliveries: int) -> Insert:
    """A new queue (a unique violation if it exists)."""
    return t.queues.insert().values(
        queue_name=name, max_deliveries=max_deliveries, created_at=utcnow()
    )


def queue_delete_stmt(t: Tables, queue_id: int) -> Delete:
    qt = t.queues
    return delete(qt).where(qt.c.id == queue_id)


def queue_max_deliveries_stmt(t: Tables, name: str, max_deliveries: int) -> Update:
    qt = t.queues
    return update(qt).where(qt.c.queue_name == name).values(max_deliveries=max_deliveries)


def queue_retention_stmt(t: Tables, name: str, retention: float) -> Update:
    """Set queue ``name``'s retention of archived messages (seconds)."""
    qt = t.queues
    return update(qt).where(qt.c.queue_name == name).values(retention=retention)


def workflow_retention_stmt(t: Tables, name: str, **retentions: float) -> Update:
    """Set workflow ``name``'s ``retention`` and/or ``error_retention`` (seconds)."""
    w = t.workflows
    return update(w).where(w.c.workflow_name == name).values(**retentions)


def workflow_policy_stmt(t: Tables, name: str, policy: RetryPolicy) -> Update:
    w = t.workflows
    return update(w).where(w.c.workflow_name == name).values(**policy_columns(policy))


def workflow_timeout_stmt(t: Tables, name: str, timeout: float | None) -> Update:
    """Set workflow ``name``'s default run time limit (seconds; None: none)."""
    w = t.workflows
    return update(w).where(w.c.workflow_name == name).values(timeout=timeout)


def mark_served_stmt(t: Tables, names: Sequence[str]) -> Update:
    """The workflows ``names`` are served by a worker now (the first time only)."""
    w = t.workflows
    return (
        update(w)
        .where(w.c.workflow_name.in_(names), w.c.served_at.is_(None))
        .values(served_at=utcnow())
    )


def define_workflow(
    conn: Connection, t: Tables, name: str, max_deliveries: int, policy: RetryPolicy
) -> None:
    """Insert the workflow's queue and definition rows unless they exist (ON CONFLICT DO NOTHING).

    A concurrent definer's rows stand, and no unique violation aborts the transaction.
    """
    w, qt = t.workflows, t.queues
    dialect = conn.dialect.name
    conn.execute(
        insert_for(dialect, qt)
        .values(queue_name=name, max_deliveries=max_deliveries, created_at=utcnow())
        .on_conflict_do_nothing(index_elements=[qt.c.queue_name])
    )
    conn.execute(
        insert_for(dialect, w)
        .values(
            workflow_name=name,
            queue_id=select(qt.c.id).where(qt.c.queue_name == name).scalar_subquery(),
            **policy_columns(policy),
            created_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=[w.c.workflow_name])
    )
