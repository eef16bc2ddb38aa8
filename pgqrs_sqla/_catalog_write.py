"""The one module that writes ``pgqrs_queues`` and ``pgqrs_workflows``.

Queues and workflow definitions are created, updated and deleted by the statements built
here. Builders are pure; callers execute them (``define_workflow`` runs its two inserts on a
sync connection, inside the caller's transaction).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Delete,
    Insert,
    Integer,
    Select,
    Update,
    bindparam,
    delete,
    select,
    update,
)
from sqlalchemy.engine import Connection

from ._message import NOTIFY_CHANNEL
from .dialects import Dialect, dialect_for, insert_for, utcnow
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


def queue_limits_stmt(t: Tables, name: str, columns: dict[str, Any]) -> Update:
    """Set (or clear) queue ``name``'s limits: ``columns`` from ``_limits.limit_columns``."""
    qt = t.queues
    return update(qt).where(qt.c.queue_name == name).values(**columns)


def set_limits(conn: Connection, t: Tables, name: str, columns: dict[str, Any]) -> None:
    """Write queue ``name``'s limits; its workers in other processes hear of it at commit.

    (A NOTIFY on PostgreSQL: a worker blocked by the old limit claims again at once.)
    """
    if not columns:
        return
    conn.execute(queue_limits_stmt(t, name, columns))
    notify = dialect_for(conn).notify(NOTIFY_CHANNEL, name)
    if notify is not None:
        conn.execute(select(notify))


@functools.cache
def lock_limits_stmt(t: Tables, dialect: Dialect) -> Select[Any]:
    """Lock queue ``p_queue_id``'s row and read its limits, its rate window and the clock.

    ``FOR NO KEY UPDATE``: the limited claims of the queue queue up behind it, while an
    enqueue's foreign key check (a key-share lock) goes through.
    """
    qt = t.queues
    stmt = select(
        qt.c.concurrency,
        qt.c.key_concurrency,
        qt.c.rate_limit,
        qt.c.rate_period,
        qt.c.rate_window_start,
        qt.c.rate_window_count,
        utcnow().label("db_now"),
    ).where(qt.c.id == bindparam("p_queue_id", type_=BigInteger))
    return dialect.lock_for_update(stmt, no_key=True)


@functools.cache
def rate_window_stmt(t: Tables) -> Update:
    """Queue ``p_queue_id``'s rate window: opened at ``p_start``, ``p_count`` claims so far."""
    qt = t.queues
    return (
        update(qt)
        .where(qt.c.id == bindparam("p_queue_id", type_=BigInteger))
        .values(
            rate_window_start=bindparam("p_start", type_=DateTime(timezone=True)),
            rate_window_count=bindparam("p_count", type_=Integer),
        )
    )


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
