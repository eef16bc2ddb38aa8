"""The one module that writes ``pgqrs_workflow_steps``: checkpoints, outside records, resets.

A delivery's fenced checkpoint upsert, an outside ``update_step``, and the reset of failed
steps on a retry — each status write checked against the state machine
(:mod:`pgqrs_sqla.states`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    Float,
    Integer,
    Select,
    String,
    Update,
    bindparam,
    exists,
    false,
    func,
    literal,
    select,
    update,
)
from sqlalchemy.sql.dml import ReturningInsert

from .dialects import JSONType, dialect_for, insert_for, utcnow, utcnow_plus
from .models import StepStatus, Tables
from .queue import lease_fence, lease_vt
from .states import status_in, step_may_become

_STEP_COLS = [
    "run_id",
    "step_name",
    "status",
    "output",
    "error",
    "attempts",
    "started_at",
    "finished_at",
    "next_delivery",
]


@functools.cache
def step_upsert_stmt(
    t: Tables, dialect: str, status: StepStatus, kind: str | None = None
) -> ReturningInsert[Any]:
    """One INSERT ... ON CONFLICT DO UPDATE, fenced by the lease (and, for a success, by the run).

    A success also needs the run not to be cancelled. Returns the row id with the lease's ``vt``
    and the database clock (see :meth:`Execution.note_lease`), or nothing if the fence failed.
    ``kind`` marks the record as a durable wait's (see :func:`wait_upsert_stmt`).
    """
    s, r = t.steps, t.runs
    where = lease_fence(t, dialect_for(dialect))
    if status is StepStatus.SUCCESS:
        where = where & exists(
            select(literal(1))
            .select_from(r)
            .where(
                r.c.id == bindparam("p_run_id", type_=BigInteger), r.c.cancel_requested == false()
            )
        )
    source = select(
        bindparam("p_run_id", type_=BigInteger),
        bindparam("p_step_name", type_=String),
        literal(status.value),
        bindparam("p_output", type_=JSONType),
        bindparam("p_error", type_=JSONType),
        bindparam("p_attempts", type_=Integer),
        utcnow_plus(-bindparam("p_duration", type_=Float)),
        utcnow(),
        # After a success this delivery goes on to the next step; after a pause or an error
        # it ends, and the next one is the first that may (see Execution.attempts_of).
        bindparam("p_token", type_=Integer) + (0 if status is StepStatus.SUCCESS else 1),
        *([] if kind is None else [literal(kind)]),
    ).where(where)
    columns = _STEP_COLS if kind is None else [*_STEP_COLS, "kind"]
    stmt = insert_for(dialect, s).from_select(columns, source)
    excluded = stmt.excluded
    return stmt.on_conflict_do_update(
        index_elements=[s.c.run_id, s.c.step_name],
        set_={name: excluded[name] for name in columns[2:]},
        where=status_in(s.c.status, step_may_become(status)),
    ).returning(s.c.id, lease_vt(t), utcnow().label("db_now"))


@functools.cache
def wait_upsert_stmt(t: Tables, dialect: str, deadline: bool) -> ReturningInsert[Any]:
    """Record a durable wait as a PAUSED step of its ``kind``, fenced by the lease.

    Its ``wake_at`` is ``p_deadline`` seconds from now (with ``deadline``; else none), unless
    the record has one already: a wait re-parked after an early wake-up keeps its deadline.
    ``wait_for`` is what it waits for (an event's name). Returns the row id, or nothing.
    """
    s = t.steps
    wake = utcnow_plus(bindparam("p_deadline", type_=Float)) if deadline else None
    source = select(
        bindparam("p_run_id", type_=BigInteger),
        bindparam("p_step_name", type_=String),
        literal(StepStatus.PAUSED.value),
        bindparam("p_attempts", type_=Integer),
        utcnow(),
        bindparam("p_token", type_=Integer) + 1,
        bindparam("p_kind", type_=String),
        wake if wake is not None else literal(None, s.c.wake_at.type),
        bindparam("p_wait_for", type_=String),
    ).where(lease_fence(t, dialect_for(dialect)))
    columns = [
        "run_id",
        "step_name",
        "status",
        "attempts",
        "started_at",
        "next_delivery",
        "kind",
        "wake_at",
        "wait_for",
    ]
    stmt = insert_for(dialect, s).from_select(columns, source)
    excluded = stmt.excluded
    return stmt.on_conflict_do_update(
        index_elements=[s.c.run_id, s.c.step_name],
        set_={
            "status": excluded.status,
            "attempts": excluded.attempts,
            "next_delivery": excluded.next_delivery,
            "kind": excluded.kind,
            "wait_for": excluded.wait_for,
            "wake_at": func.coalesce(s.c.wake_at, excluded.wake_at),
        },
        where=status_in(s.c.status, step_may_become(StepStatus.PAUSED)),
    ).returning(s.c.id)


def external_step_upsert(
    t: Tables, dialect: str, run_id: int, step_name: str, status: StepStatus, value: Any
) -> ReturningInsert[tuple[int]]:
    """Record a step's outcome from outside the worker (``update_step``) if the states allow it.

    Returns the row id, or nothing if it refused.
    """
    s = t.steps
    output, error = (value, None) if status is StepStatus.SUCCESS else (None, value)
    stmt = insert_for(dialect, s).values(
        run_id=run_id,
        step_name=step_name,
        status=status.value,
        output=output,
        error=error,
        attempts=0,
        started_at=utcnow(),
        finished_at=utcnow(),
    )
    return stmt.on_conflict_do_update(
        index_elements=[s.c.run_id, s.c.step_name],
        set_={"status": status.value, "output": output, "error": error, "finished_at": utcnow()},
        where=status_in(s.c.status, step_may_become(status)),
    ).returning(s.c.id)


def reset_failed_steps_stmt(t: Tables, run_id: int) -> Update:
    """A retried run's failed steps get their attempts back (recorded successes stay)."""
    s = t.steps
    return (
        update(s)
        .where(s.c.run_id == run_id, s.c.status == StepStatus.ERROR.value)
        .values(attempts=0)
    )


def recorded_steps_stmt(t: Tables, run_ids: Sequence[int]) -> Select[Any]:
    """What earlier deliveries recorded of the runs ``run_ids``, to replay."""
    s = t.steps
    return select(
        s.c.run_id,
        s.c.step_name,
        s.c.status,
        s.c.output,
        s.c.attempts,
        s.c.next_delivery,
        s.c.kind,
        s.c.wake_at,
    ).where(s.c.run_id.in_(run_ids))
