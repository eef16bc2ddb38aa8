"""The one module that writes ``pgqrs_workflow_runs``: every status change of a run.

They are built beside the state machine (:mod:`pgqrs_sqla.states`). Each status write puts
``status IN (allowed predecessors)`` in its WHERE clause, so an illegal transition changes no
row; writes a delivery makes are fenced by its lease as well
(:func:`pgqrs_sqla.queue.lease_fence`). Builders are pure; callers execute them.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Delete,
    Select,
    Update,
    and_,
    bindparam,
    case,
    delete,
    exists,
    false,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.sql.dml import ReturningUpdate

from .dialects import Dialect, JSONType, utcnow, utcnow_plus
from .models import RunStatus, Tables
from .queue import archive_delivery_stmt, claim_stmt, lease_fence
from .states import UNFINISHED_RUN, run_may_become, status_in


def start_update(t: Tables, which: ColumnElement[bool]) -> ReturningUpdate[Any]:
    """Mark the runs ``which`` selects RUNNING; a redelivered run keeps its first started_at."""
    r = t.runs
    return (
        update(r)
        .where(which, status_in(r.c.status, run_may_become(RunStatus.RUNNING)))
        .values(
            status=RunStatus.RUNNING.value,
            started_at=func.coalesce(r.c.started_at, utcnow()),
            updated_at=utcnow(),
        )
        .returning(
            r.c.id,
            r.c.message_id,
            r.c.input,
            r.c.cancel_requested,
            r.c.parent_run_id,
            r.c.deadline_at,
            r.c.idempotency_key,
            r.c.trace_context,
            utcnow().label("db_now"),
        )
    )


@functools.cache
def start_stmt(t: Tables) -> ReturningUpdate[Any]:
    """Start the runs of the messages in ``p_ids``."""
    return start_update(t, t.runs.c.message_id.in_(bindparam("p_ids", expanding=True)))


def dead_run_stmt(
    t: Tables, message_id: int, reason: str, last_error: dict[str, Any] | None = None
) -> ReturningUpdate[Any]:
    """End the run of a dead-lettered message ``ERROR`` (unless it already ended).

    The error names the dead letter, with ``last_error``, what the last failed delivery said.
    """
    error: dict[str, Any] = {"type": "pgqrs_sqla.DeadLetter", "message": reason}
    if last_error is not None:
        error["last_error"] = last_error
    return _end_now(t, t.runs.c.message_id == message_id, RunStatus.ERROR, error)


def _end_now(
    t: Tables, which: ColumnElement[bool], new: RunStatus, error: Any
) -> ReturningUpdate[Any]:
    """End the run ``which`` selects ``new`` now, with ``error``, if the state machine allows it.

    Unfenced (the dead-letter and cancel writes); returns the run's waiter (``awaited_by``).
    """
    r = t.runs
    return (
        update(r)
        .where(which, status_in(r.c.status, run_may_become(new)))
        .values(status=new.value, error=error, finished_at=utcnow(), updated_at=utcnow())
        .returning(r.c.id, r.c.awaited_by)
    )


@functools.cache
def run_update_stmt(
    t: Tables, new: RunStatus, with_result: bool, dialect: Dialect | None = None
) -> ReturningUpdate[Any]:
    """Move the run to ``new`` if the state machine allows it and the lease is held.

    The fence is locked as ``dialect`` locks it; unlocked without one. A run is not parked
    (PAUSED) once its cancellation was asked: the park is refused, and the worker ends the
    run instead — else a ``cancel_run`` committed while the run was parking would leave it
    asleep for the whole wait.
    """
    r = t.runs
    values: dict[str, Any] = {"status": new.value, "updated_at": utcnow()}
    if new.terminal:
        values["finished_at"] = utcnow()
    if with_result:
        values["output"] = bindparam("p_output", type_=JSONType)
        values["error"] = bindparam("p_error", type_=JSONType)
    stmt = update(r).where(
        r.c.id == bindparam("p_run_id", type_=BigInteger),
        status_in(r.c.status, run_may_become(new)),
        lease_fence(t, dialect),
    )
    if new is RunStatus.PAUSED:
        stmt = stmt.where(r.c.cancel_requested == false())
    return stmt.values(**values).returning(r.c.id, r.c.awaited_by)


@functools.cache
def finish_stmt(t: Tables, new: RunStatus) -> ReturningUpdate[Any]:
    """PostgreSQL: archive the message and end the run in one statement.

    The archive is the fence that counts: it updates (so locks) the message row and re-checks the
    token after any concurrent claim. The run update's own fence reads the pre-statement
    snapshot, where the message is still live; it must not lock a row this very statement
    changes.
    """
    archived = archive_delivery_stmt(t).cte("archived")
    return run_update_stmt(t, new, True).where(exists(select(archived.c.id)))


def hand_back_runs_stmt(t: Tables, run_ids: Sequence[int]) -> Update:
    """Runs a claim started on their first delivery, QUEUED again (a claim undone at stop).

    A redelivered run stays RUNNING, as after a shutdown's release.
    """
    r = t.runs
    return (
        update(r)
        .where(r.c.id.in_(list(run_ids)), r.c.status == RunStatus.RUNNING.value)
        .values(status=RunStatus.QUEUED.value, started_at=None)
    )


def requeue_dead_runs_stmt(t: Tables, message_ids: Sequence[int]) -> Update:
    """The ``ERROR`` runs of replayed dead letters, ``QUEUED`` again with their messages."""
    r = t.runs
    return (
        update(r)
        .where(r.c.message_id.in_(list(message_ids)), r.c.status == RunStatus.ERROR.value)
        .values(status=RunStatus.QUEUED.value, error=None, finished_at=None, updated_at=utcnow())
    )


def retry_run_stmt(t: Tables, run_id: int) -> ReturningUpdate[tuple[int]]:
    """An ``ERROR`` or ``CANCELLED`` run back to ``QUEUED`` (``retry_run``)."""
    r = t.runs
    return (
        update(r)
        .where(r.c.id == run_id, status_in(r.c.status, run_may_become(RunStatus.QUEUED)))
        .values(
            status=RunStatus.QUEUED.value,
            error=None,
            finished_at=None,
            cancel_requested=False,
            deadline_at=None,  # a deadline it passed would cancel it again at once
            awaited_by=None,  # whoever waited on its end has had it
            updated_at=utcnow(),
        )
        .returning(r.c.id)
    )


def request_cancel_stmt(t: Tables, run_id: int) -> Update:
    """Mark the run's cancellation requested (a worker stops it at its next step)."""
    r = t.runs
    return update(r).where(r.c.id == run_id).values(cancel_requested=True, updated_at=utcnow())


def cancel_now_stmt(t: Tables, run_id: int, error: Any = None) -> ReturningUpdate[Any]:
    """End the run ``CANCELLED`` now (with ``error``, the reason), if the state machine allows it.

    Returns the run's waiter (``awaited_by``) to wake.
    """
    return _end_now(t, t.runs.c.id == run_id, RunStatus.CANCELLED, error)


def adopt_child_stmt(t: Tables, child_id: int, parent_id: int) -> Update:
    """Make ``parent_id`` the parent of run ``child_id`` (``ctx.start_child``), unless it has one."""
    r = t.runs
    return (
        update(r)
        .where(r.c.id == child_id, r.c.parent_run_id.is_(None))
        .values(parent_run_id=parent_id)
    )


def await_runs_stmt(t: Tables) -> ReturningUpdate[Any]:
    """Mark the unfinished runs of ``p_ids`` awaited by run ``p_waiter``; returns those marked.

    A run another waiter already awaits is left to it (that waiter is woken when it ends).
    """
    r = t.runs
    waiter = bindparam("p_waiter", type_=BigInteger)
    return (
        update(r)
        .where(
            r.c.id.in_(bindparam("p_ids", expanding=True)),
            status_in(r.c.status, UNFINISHED_RUN),
            r.c.awaited_by.is_(None) | (r.c.awaited_by == waiter),
        )
        .values(awaited_by=waiter)
        .returning(r.c.id)
    )


def release_awaited_stmt(t: Tables) -> Update:
    """Run ``p_waiter`` waits for no run any more: clear its ``awaited_by`` marks.

    After its wait for runs returned (or timed out), so a run it no longer waits for
    neither wakes it nor keeps a later wait of it asleep.
    """
    r = t.runs
    waiter = bindparam("p_waiter", type_=BigInteger)
    return update(r).where(r.c.awaited_by == waiter).values(awaited_by=None)


def unfinished_children(t: Tables, parent_id: int) -> Select[Any]:
    """The unfinished children of run ``parent_id`` (to cancel with it)."""
    r = t.runs
    return select(r.c.id).where(
        r.c.parent_run_id == parent_id,
        status_in(r.c.status, UNFINISHED_RUN),
    )


@functools.cache
def claim_and_start_stmt(
    t: Tables, dialect: Dialect, across_priorities: bool = False
) -> Select[Any]:
    """PostgreSQL: claim a batch and start its runs in one statement (data-modifying CTEs)."""
    return claimed_and_started(t, claim_stmt(t, dialect, across_priorities))


def claimed_and_started(t: Tables, claim: Update) -> Select[Any]:
    """PostgreSQL: ``claim`` (a claim's UPDATE) and the start of its runs, in one statement."""
    claimed = claim.cte("claimed")
    started = start_update(t, t.runs.c.message_id.in_(select(claimed.c.id))).cte("started")
    s = t.steps
    # Whether anything is recorded for the run yet — by an earlier delivery, or by
    # update_step before the first one — so only such runs pay for loading their steps.
    has_steps = exists(select(literal(1)).select_from(s).where(s.c.run_id == started.c.id))
    return select(
        claimed,
        started.c.id.label("run_id"),
        started.c.input,
        started.c.cancel_requested,
        started.c.parent_run_id,
        started.c.deadline_at,
        started.c.idempotency_key,
        started.c.trace_context,
        has_steps.label("has_steps"),
        started.c.db_now,
    ).select_from(claimed.outerjoin(started, started.c.message_id == claimed.c.id))


# ------------------------------------------------------------ retention


def expired_runs_select(
    t: Tables,
    retention: float,
    error_retention: float,
    *,
    keep_newest: bool = False,
    referenced_by: Sequence[ColumnElement[Any]] = (),
) -> Select[Any]:
    """Finished runs past their retention whose message is archived (or gone): ids, message ids.

    A run ended SUCCESS or CANCELLED is kept its workflow's ``retention`` (NULL: ``retention``
    seconds), one ended ERROR its ``error_retention`` (NULL: ``error_retention``), counted from
    ``finished_at``. A run whose message is still live (a retry under way) is never chosen.
    ``keep_newest``: never the table's newest run, nor one carried by the newest message, so
    a backend that hands out the largest deleted id again (SQLite) never reuses one.
    ``referenced_by``: columns of the app's tables whose foreign key to runs would refuse the
    delete (no ``ON DELETE`` action): a run a row of theirs points at is kept.
    """
    r, w = t.runs, t.workflows
    m = t.messages.alias("live_message")
    kept = func.coalesce(w.c.retention, literal(retention))
    kept_error = func.coalesce(w.c.error_retention, literal(error_retention))
    expired = or_(
        and_(
            r.c.status.in_([RunStatus.SUCCESS.value, RunStatus.CANCELLED.value]),
            r.c.finished_at < utcnow_plus(-kept),
        ),
        and_(r.c.status == RunStatus.ERROR.value, r.c.finished_at < utcnow_plus(-kept_error)),
    )
    live = exists().where(m.c.id == r.c.message_id, m.c.archived_at.is_(None))
    # The shortest retention of any workflow bounds ``finished_at`` from above: a range of
    # the finished-runs index, so the runs kept are never read (order by ``finished_at``).
    every = t.workflows.alias("any_workflow")
    shortest = func.min(
        _least(
            func.coalesce(every.c.retention, literal(retention)),
            func.coalesce(every.c.error_retention, literal(error_retention)),
        )
    )
    horizon = select(shortest).scalar_subquery()
    stmt = (
        select(r.c.id, r.c.message_id)
        .select_from(r.join(w, w.c.id == r.c.workflow_id))
        .where(
            r.c.finished_at.is_not(None), r.c.finished_at < utcnow_plus(-horizon), expired, ~live
        )
    )
    for column in referenced_by:
        stmt = stmt.where(~exists().where(column == r.c.id))
    if keep_newest:
        newest_run = select(func.max(t.runs.alias("newest_run").c.id)).scalar_subquery()
        newest_message = select(func.max(m.c.id)).scalar_subquery()
        stmt = stmt.where(
            r.c.id < newest_run,
            or_(r.c.message_id.is_(None), r.c.message_id < newest_message),
        )
    return stmt


def _least(a: ColumnElement[float], b: ColumnElement[float]) -> ColumnElement[float]:
    return case((a < b, a), else_=b)


def delete_runs_stmt(t: Tables, run_ids: Sequence[int]) -> Delete:
    """Delete the runs ``run_ids`` (their steps and events go with them, by foreign key).

    Only runs still finished: a run a ``retry_run`` took back since it was chosen stays.
    """
    r = t.runs
    return delete(r).where(
        r.c.id.in_(run_ids),
        r.c.status.in_([RunStatus.SUCCESS.value, RunStatus.CANCELLED.value, RunStatus.ERROR.value]),
    )
