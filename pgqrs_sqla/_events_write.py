"""The one module that writes ``pgqrs_workflow_events``: an event sent, an event consumed.

An event is sent to a run (``Store.send_event``) and kept until a ``wait_for_event`` of that
run consumes it: the oldest unconsumed event of that name first, each by one wait, once.
"""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import BigInteger, Insert, String, bindparam, exists, insert, select, update
from sqlalchemy.sql.dml import ReturningUpdate

from .dialects import Dialect, JSONType, utcnow
from .models import StepStatus, Tables


@functools.cache
def insert_event_stmt(t: Tables) -> Insert:
    """Insert one event (``p_run_id``, ``p_name``, ``p_payload``)."""
    e = t.events
    return insert(e).values(
        run_id=bindparam("p_run_id", type_=BigInteger),
        event_name=bindparam("p_name", type_=String),
        payload=bindparam("p_payload", type_=JSONType),
        created_at=utcnow(),
    )


@functools.cache
def consume_event_stmt(t: Tables, dialect: Dialect) -> ReturningUpdate[Any]:
    """Mark the oldest unconsumed event ``p_name`` of run ``p_run_id`` consumed by ``p_step``.

    Returns its payload, or nothing if there is none.
    """
    e = t.events
    oldest = (
        select(e.c.id)
        .where(
            e.c.run_id == bindparam("p_run_id", type_=BigInteger),
            e.c.event_name == bindparam("p_name", type_=String),
            e.c.consumed_at.is_(None),
        )
        .order_by(e.c.id)
        .limit(1)
    )
    oldest = dialect.lock_for_update(oldest)
    return (
        update(e)
        .where(e.c.id == oldest.scalar_subquery())
        .values(consumed_at=utcnow(), consumed_by=bindparam("p_step", type_=String))
        .returning(e.c.id, e.c.payload)
    )


def pending_event(t: Tables) -> Any:
    """Whether run ``p_run_id`` has an unconsumed event ``p_name`` (a boolean expression)."""
    e = t.events
    return exists(
        select(e.c.id).where(
            e.c.run_id == bindparam("p_run_id", type_=BigInteger),
            e.c.event_name == bindparam("p_name", type_=String),
            e.c.consumed_at.is_(None),
        )
    )


def waits_for_event(t: Tables, run_id: Any, name: Any) -> Any:
    """Whether run ``run_id`` is parked in a wait for event ``name`` (a boolean expression)."""
    s = t.steps
    return exists(
        select(s.c.id).where(
            s.c.run_id == run_id,
            s.c.status == StepStatus.PAUSED.value,
            s.c.kind == "event",
            s.c.wait_for == name,
        )
    )
