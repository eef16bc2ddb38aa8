"""The claim of a queue (or workflow) with a concurrency or rate limit.

One short transaction: lock the queue row (``FOR NO KEY UPDATE``), read its limits as they
are now, count what is leased, choose what may start, claim it (and, for a workflow, start
its runs), and count the claims against the rate window. Limited claims of one queue run one
after another behind that lock, each in a new snapshot (READ COMMITTED) that sees the claims
before it, so no two can both take the last slot. On SQLite the transaction is ``BEGIN
IMMEDIATE``: the database's single writer serialises it, across processes too.

A queue without limits never comes here: its claim is the one-statement claim of
:mod:`pgqrs_sqla.queue`, unchanged. :class:`StartedRun` is how the delivery reads the runs a
claim started, limited or not.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, or_, select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from . import queue as q
from ._catalog_write import lock_limits_stmt, rate_window_stmt
from ._limits import Limits
from ._message import PRIORITY_MAX
from ._runs_write import claimed_and_started, start_stmt
from .dialects import aware
from .models import Tables
from .queue._limited import candidates_stmt, claim_ids_stmt, leased_stmt
from .store import Store

if TYPE_CHECKING:
    from ._worker_state import _Binding


@dataclass(frozen=True)
class StartedRun:
    """A run a claim started, as its delivery needs it."""

    id: int
    message_id: int
    input: Any
    cancel_requested: bool
    has_steps: bool = True
    #: the database clock when the claim ran, and the local monotonic time it was sent:
    #: with the message's vt, the lease's deadline (``Execution.note_lease``)
    db_now: Any = None
    sent: float | None = None
    parent_run_id: int | None = None
    deadline_at: Any = None
    #: the run's idempotency key (a schedule's tick is read from it: ``ctx.scheduled_at``)
    idempotency_key: str | None = None
    #: what an observer stored with the run at its trigger (``_observe``)
    trace_context: str | None = None


def started_runs(rows: Sequence[Any], sent: float) -> list[StartedRun]:
    """The runs a claim-and-start statement started (PostgreSQL), from its rows."""
    return [
        StartedRun(
            row.run_id,
            row.id,
            row.input,
            row.cancel_requested,
            row.has_steps,
            row.db_now,
            sent,
            row.parent_run_id,
            row.deadline_at,
            row.idempotency_key,
            row.trace_context,
        )
        for row in rows
        if row.run_id is not None
    ]


@dataclass(frozen=True)
class LimitedClaim:
    """What a limited claim got."""

    #: the claimed messages' rows (on PostgreSQL with their runs' start, for a workflow)
    rows: list[Row[Any]]
    #: SQLite, a workflow: the runs started in the claim's transaction (``start_stmt`` rows)
    started: list[Row[Any]] | None = None
    #: the rate limit allowed nothing: seconds until its window ends (None: not that)
    reopens_in: float | None = None


@functools.cache
def _claim_and_start(t: Tables) -> Select[Any]:
    return claimed_and_started(t, claim_ids_stmt(t))


def limited_queues_stmt(t: Tables, queue_ids: Sequence[int]) -> Select[Any]:
    """Which of ``queue_ids`` have a limit now (a worker claims those through this module)."""
    qt = t.queues
    limited = or_(
        qt.c.concurrency.is_not(None),
        qt.c.key_concurrency.is_not(None),
        qt.c.rate_limit.is_not(None),
    )
    return select(qt.c.id).where(qt.c.id.in_(list(queue_ids)), limited)


async def limited_queues(store: Store, queue_ids: Sequence[int]) -> set[int]:
    """:func:`limited_queues_stmt`, read."""
    async with store._read() as conn:
        return set((await conn.execute(limited_queues_stmt(store.tables, queue_ids))).scalars())


def _rate_room(limits: Limits, row: Any, now: datetime) -> tuple[int, datetime, int] | float:
    """The rate window: ``(claims it allows now, its start, claims so far)``.

    Or, when it allows none, the seconds until it ends. The window is fixed: it opens at the
    first claim after the previous one ended and lasts ``rate_period``.
    """
    assert limits.rate_limit is not None and limits.rate_period is not None
    start = aware(row.rate_window_start)
    period = timedelta(seconds=limits.rate_period)
    if start is None or now >= start + period:
        return limits.rate_limit, now, 0
    used = row.rate_window_count or 0
    if used >= limits.rate_limit:
        return max((start + period - now).total_seconds(), 0.001)
    return limits.rate_limit - used, start, used


async def _choose(
    conn: AsyncConnection,
    t: Tables,
    queue_id: int,
    allowed: int,
    key_limit: int | None,
    held: dict[Any, int],
) -> list[int]:
    """Up to ``allowed`` ready messages, in claim order, none past its key's limit."""
    per_key = {key: n for key, n in held.items() if key is not None}
    blocked = [key for key, n in per_key.items() if key_limit is not None and n >= key_limit]
    chosen: list[int] = []
    below, after = PRIORITY_MAX + 1, 0
    page = max(64, 4 * allowed)
    while len(chosen) < allowed:
        params = {
            "p_queue_id": queue_id,
            "p_blocked": blocked,
            "p_below": below,
            "p_after": after,
            "p_page": page,
        }
        rows = (await conn.execute(candidates_stmt(t), params)).all()
        for row in rows:
            key = row.concurrency_key
            if key_limit is not None and key is not None:
                if per_key.get(key, 0) >= key_limit:
                    continue  # (its key filled up on this page)
                per_key[key] = per_key.get(key, 0) + 1
                if per_key[key] >= key_limit:
                    blocked.append(key)  # later pages leave it out in the database
            chosen.append(row.id)
            if len(chosen) == allowed:
                break
        if not rows:
            break
        below, after = rows[-1].priority, rows[-1].id
    return chosen


async def claim_limited(
    store: Store,
    queue_id: int,
    workflow_id: int | None,
    worker_id: int,
    *,
    batch: int,
    vt_seconds: float,
    start: bool,
    may_claim: Callable[[], bool] = lambda: True,
) -> LimitedClaim:
    """Claim up to ``batch`` messages of a limited queue, within its limits (see the module).

    ``workflow_id``: the queue is that workflow's (its leases are counted through its runs);
    ``start``: start the claimed runs in the same transaction. ``may_claim()`` is asked once
    the queue's lock is held: a worker that began stopping meanwhile claims nothing.
    """
    t = store.tables
    async with store._begin() as conn:
        row = (
            await conn.execute(lock_limits_stmt(t, store.dialect), {"p_queue_id": queue_id})
        ).first()
        if row is None or not may_claim():
            return LimitedClaim([])
        limits = Limits.of(row)
        allowed, window = batch, None
        if limits.rate_limit is not None:
            room = _rate_room(limits, row, aware(row.db_now))  # type: ignore[arg-type]
            if isinstance(room, float):
                return LimitedClaim([], reopens_in=room)
            window = room
            allowed = min(allowed, room[0])
        held: dict[Any, int] = {}
        if limits.concurrency is not None or limits.key_concurrency is not None:
            params = {"p_queue_id": queue_id, "p_workflow_id": workflow_id}
            leased = await conn.execute(leased_stmt(t, workflow_id is not None), params)
            held = {key: int(n) for key, n in leased.all()}
            if limits.concurrency is not None:
                allowed = min(allowed, limits.concurrency - sum(held.values()))
        if allowed <= 0:
            return LimitedClaim([])
        ids = await _choose(conn, t, queue_id, allowed, limits.key_concurrency, held)
        if not ids:
            return LimitedClaim([])
        claim = {"p_ids": ids, "p_worker_id": worker_id, "p_vt": vt_seconds}
        together = start and store.dialect.writable_ctes
        stmt = _claim_and_start(t) if together else claim_ids_stmt(t)
        rows = list((await conn.execute(stmt, claim)).all())
        started = None
        if start and not together and rows:
            claimed = [r.id for r in rows]
            started = list((await conn.execute(start_stmt(t), {"p_ids": claimed})).all())
        if window is not None and rows:
            _room, opened, used = window
            counted = {"p_queue_id": queue_id, "p_start": opened, "p_count": used + len(rows)}
            await conn.execute(rate_window_stmt(t), counted)
    return LimitedClaim(rows, started)


async def claim_for(
    store: Store,
    binding: _Binding,
    worker_id: int,
    batch: int,
    vt: float,
    may_claim: Callable[[], bool],
) -> tuple[list[q.Message], list[StartedRun] | None]:
    """A worker's :func:`claim_limited` on ``binding``'s queue: the messages, the runs started.

    A workflow's runs are started in the same transaction. When the rate limit allowed
    nothing, the binding is closed until its window ends.
    """
    workflow = binding.workflow
    sent = time.monotonic()
    got = await claim_limited(
        store,
        binding.queue_id,
        None if workflow is None else workflow.id,
        worker_id,
        batch=batch,
        vt_seconds=vt,
        start=workflow is not None,
        may_claim=may_claim,
    )
    if got.reopens_in is not None:
        binding.closed_until = time.monotonic() + got.reopens_in
    messages = sorted((q.Message.from_row(r) for r in got.rows), key=lambda m: (-m.priority, m.id))
    if workflow is None:
        return messages, None
    if got.started is None:
        return messages, started_runs(got.rows, sent)
    return messages, [  # (SQLite's start rows do not say whether steps are recorded: load them)
        StartedRun(
            r.id,
            r.message_id,
            r.input,
            r.cancel_requested,
            True,
            r.db_now,
            sent,
            r.parent_run_id,
            r.deadline_at,
            r.idempotency_key,
            r.trace_context,
        )
        for r in got.started
    ]
