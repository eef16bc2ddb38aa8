"""Message operations as SQLAlchemy Core statements: enqueue, claim, and lease operations.

Builders are pure functions returning statements; the executors are a few lines each.
Every lease operation is one statement fenced by ``(consumer_worker_id, read_ct)`` — the
owner and its lease token — so a former owner whose lease was taken over changes nothing
and gets :class:`~pgqrs_sqla.errors.LeaseLost`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Delete,
    Float,
    Integer,
    Update,
    bindparam,
    case,
    delete,
    func,
    literal,
    select,
    update,
)
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import ReturningDelete, ReturningUpdate

from .._fence import (
    _fence as _fence,
    _held_many as _held_many,
    held as held,
    held_bound as held_bound,
    lease_fence as lease_fence,
    lease_vt as lease_vt,
    leased_now as leased_now,
)
from .._message import (
    NOTIFY_CHANNEL as NOTIFY_CHANNEL,
    PRIORITY_MAX as PRIORITY_MAX,
    PRIORITY_MIN as PRIORITY_MIN,
    Message as Message,
    check_priority as check_priority,
    lease_seconds as lease_seconds,
    seconds as seconds,
    validate_name as validate_name,
)
from ..dialects import Dialect, dialect_for, utcnow, utcnow_plus
from ..errors import LeaseLost
from ..models import ArchiveReason, Tables

# ---------------------------------------------------------------- claim


@functools.cache
def claim_stmt(t: Tables, dialect: Dialect, across_priorities: bool = False) -> Update:
    """Claim up to ``p_batch`` ready messages of ``p_queue_id`` for ``p_worker_id`` at once.

    The lease lasts ``p_vt`` seconds; bind the parameters with :func:`claim_params`.

    A message is ready when it is not archived and ``vt <= now`` — which includes messages
    whose lease expired: no reaper needed. A claimed message that still had an owner had an
    expired lease, which counts as a failed delivery. Built once per set of tables.
    """
    m = t.messages
    ready = (
        m.c.queue_id == bindparam("p_queue_id", type_=BigInteger),
        m.c.archived_at.is_(None),
        m.c.vt <= utcnow(),
    )
    # Highest priority first, FIFO within it: take the top ready priority, then its oldest
    # messages, both along the ready index (a batch never spans two priorities).
    top = select(func.max(m.c.priority)).where(*ready).scalar_subquery()
    candidates = (
        select(m.c.id)
        .where(*ready, m.c.priority == top)
        .order_by(m.c.id)
        .limit(bindparam("p_batch", type_=Integer))
    )
    if across_priorities:
        # The fallback when that finds nothing on PostgreSQL: every ready message of the top
        # priority is locked by other claims in flight (SKIP LOCKED skips them), while lower
        # priorities wait. Sorting the backlog costs more, so it is only the second try.
        candidates = (
            select(m.c.id)
            .where(*ready)
            .order_by(m.c.priority.desc(), m.c.id)
            .limit(bindparam("p_batch", type_=Integer))
        )
    candidates = dialect.lock_claim(candidates)
    return claim_update(t, m.c.id.in_(candidates.scalar_subquery()))


def claim_update(t: Tables, which: ColumnElement[bool]) -> Update:
    """Lease the messages ``which`` selects to ``p_worker_id`` for ``p_vt`` seconds: a claim."""
    m = t.messages
    return (
        update(m)
        .where(which)
        .values(
            vt=utcnow_plus(bindparam("p_vt", type_=Float)),
            read_ct=m.c.read_ct + 1,
            failed_ct=m.c.failed_ct + case((m.c.consumer_worker_id.is_not(None), 1), else_=0),
            consumer_worker_id=bindparam("p_worker_id", type_=BigInteger),
            dequeued_at=utcnow(),
        )
        .returning(*m.c)
    )


def claim_params(queue_id: int, worker_id: int, *, batch: int, vt_seconds: float) -> dict[str, Any]:
    """The bind parameters of :func:`claim_stmt`: claim ``batch`` messages for ``vt_seconds``."""
    return {"p_queue_id": queue_id, "p_worker_id": worker_id, "p_batch": batch, "p_vt": vt_seconds}


async def claim_rows(
    conn: AsyncConnection,
    build: Callable[[bool], Any],
    params: dict[str, Any],
    second_try: Callable[[], bool],
) -> list[Row[Any]]:
    """Run a claim statement, ``build(False)``; returns the rows claimed.

    On PostgreSQL, when it finds nothing, once more across priorities, ``build(True)`` (the top
    priority's ready messages may all be locked by other claims in flight) — unless
    ``second_try()`` says no (a worker that began stopping claims nothing new). SQLite's single
    writer never skips a locked row.
    """
    rows = list((await conn.execute(build(False), params)).all())
    if not rows and dialect_for(conn).skip_locked and second_try():
        rows = list((await conn.execute(build(True), params)).all())
    return rows


async def claim(
    conn: AsyncConnection,
    t: Tables,
    queue_id: int,
    worker_id: int,
    *,
    batch: int,
    vt_seconds: float,
    second_try: Callable[[], bool] = lambda: True,
) -> list[Message]:
    """Claim (see :func:`claim_stmt` and :func:`claim_rows`)."""
    dialect = dialect_for(conn)
    params = claim_params(queue_id, worker_id, batch=batch, vt_seconds=vt_seconds)
    rows = await claim_rows(conn, lambda across: claim_stmt(t, dialect, across), params, second_try)
    messages = [Message.from_row(r) for r in rows]
    messages.sort(key=lambda msg: (-msg.priority, msg.id))
    return messages


# ---------------------------------------------------------------- lease operations


@functools.cache
def refresh_lease_stmt(t: Tables) -> ReturningUpdate[Any]:
    """Extend the bound delivery's lease to at least ``now + p_vt``, fenced by owner and token.

    Returns the new ``vt`` and the database clock, or nothing if the lease is gone.
    """
    m = t.messages
    extended = utcnow_plus(bindparam("p_vt", type_=Float))
    return (
        update(m)
        .where(held_bound(t))
        .values(vt=case((m.c.vt > extended, m.c.vt), else_=extended))
        .returning(m.c.vt.label("lease_vt"), utcnow().label("db_now"))
    )


@functools.cache
def archive_delivery_stmt(t: Tables) -> ReturningUpdate[Any]:
    """Archive (done) the bound delivery's message, fenced by owner and token."""
    return _archive_done(t, held_bound(t))


def _archive_done(t: Tables, held: ColumnElement[bool]) -> ReturningUpdate[Any]:
    """Archive as done the messages ``held`` selects; returns their ids."""
    m = t.messages
    return (
        update(m)
        .where(held)
        .values(archived_at=utcnow(), archive_reason=ArchiveReason.DONE.value)
        .returning(m.c.id)
    )


def extend_stmt(t: Tables, msg: Message, worker_id: int, vt_seconds: float) -> Update:
    """Extend ``msg``'s lease to ``now + vt_seconds``, fenced; returns the new ``vt``."""
    m = t.messages
    return (
        update(m)
        .where(held(t, msg.id, worker_id, msg.read_ct))
        .values(vt=utcnow_plus(vt_seconds))
        .returning(m.c.vt)
    )


@functools.cache
def extend_many_stmt(t: Tables) -> Update:
    """Extend many leases to ``now + p_vt`` in one statement (the heartbeat's).

    Each is fenced by its owner *and* token (``p_leases``: ``(id, read_ct)`` pairs): a delivery
    this worker no longer holds is left alone, even one a worker sharing its id holds now. Returns
    the ``(id, read_ct)`` of the leases extended.
    """
    m = t.messages
    return (
        update(m)
        .where(_held_many(t))
        .values(vt=utcnow_plus(bindparam("p_vt", type_=Float)))
        .returning(m.c.id, m.c.read_ct)
    )


@functools.cache
def release_many_stmt(t: Tables) -> Update:
    """Give back many leases, visible now and not counted as failures (a worker shutting down).

    Each is fenced by owner and token like :func:`extend_many_stmt`.
    """
    m = t.messages
    return (
        update(m)
        .where(_held_many(t))
        .values(consumer_worker_id=None, vt=utcnow())
        .returning(m.c.id)
    )


def unclaim_many_stmt(t: Tables) -> Update:
    """Undo claims (``p_leases``): visible now, owner cleared and the delivery count taken back.

    As if the claim had never run: a worker that began stopping while its claim was in flight
    hands back what it got.
    """
    m = t.messages
    return (
        update(m)
        .where(_held_many(t))
        .values(consumer_worker_id=None, vt=utcnow(), read_ct=m.c.read_ct - 1)
        .returning(m.c.id)
    )


def dead_reason(failed_ct: int, max_deliveries: int) -> str:
    """The ``last_error`` of a message dead-lettered for running out of deliveries."""
    return f"dead: {failed_ct} failed deliveries (max_deliveries={max_deliveries})"


def archive_stmt(
    t: Tables,
    msg: Message,
    worker_id: int,
    reason: ArchiveReason = ArchiveReason.DONE,
    error: str | None = None,
) -> Update:
    """Archive ``msg`` (``reason``, ``error`` kept as its last error), fenced by owner and token.

    Returns the message id, or nothing if the lease is gone.
    """
    m = t.messages
    values_: dict[str, Any] = {"archived_at": utcnow(), "archive_reason": reason.value}
    if error is not None:
        values_["last_error"] = error
    return (
        update(m).where(held(t, msg.id, worker_id, msg.read_ct)).values(**values_).returning(m.c.id)
    )


async def archive_many(
    conn: AsyncConnection, t: Tables, messages: Sequence[Message], worker_id: int
) -> list[int]:
    """Acknowledge many messages in one statement; returns the ids this worker still held.

    The others' leases were lost, and they are left alone.
    """
    params = {"p_leases": [(msg.id, msg.read_ct) for msg in messages], "p_worker_id": worker_id}
    return list((await conn.execute(archive_many_stmt(t), params)).scalars())


@functools.cache
def archive_many_stmt(t: Tables) -> Update:
    """Archive the bound leases (``p_leases``, ``p_worker_id``) as done; returns their ids."""
    return _archive_done(t, _held_many(t))


def release_stmt(
    t: Tables,
    msg: Message,
    worker_id: int,
    delay: float = 0.0,
    *,
    failed: bool = False,
    error: str | None = None,
) -> Update:
    """Give the message back, visible after ``delay``.

    ``failed`` counts a failed delivery; a deliberate delayed release (backoff, pause) does not.
    The owner is cleared so the next claim does not mistake it for an expired lease.
    """
    m = t.messages
    values_: dict[str, Any] = {
        "vt": utcnow_plus(delay) if delay else utcnow(),
        "consumer_worker_id": None,
    }
    if failed:
        values_["failed_ct"] = m.c.failed_ct + 1
    if error is not None:
        values_["last_error"] = error
    return (
        update(m)
        .where(held(t, msg.id, worker_id, msg.read_ct))
        .values(**values_)
        .returning(m.c.id, m.c.failed_ct)
    )


def fail_stmt(t: Tables, msg: Message, worker_id: int, delay: float, error: str | None) -> Update:
    """An explicit failure: count it, then dead-letter the message or release it after ``delay``.

    It is dead-lettered when the queue's max_deliveries is reached.
    """
    m, q = t.messages, t.queues
    max_deliveries = select(q.c.max_deliveries).where(q.c.id == m.c.queue_id).scalar_subquery()
    exhausted = m.c.failed_ct + 1 >= max_deliveries
    return (
        update(m)
        .where(held(t, msg.id, worker_id, msg.read_ct))
        .values(
            failed_ct=m.c.failed_ct + 1,
            consumer_worker_id=None,
            last_error=error,
            vt=case((exhausted, m.c.vt), else_=utcnow_plus(delay) if delay else utcnow()),
            archived_at=case((exhausted, utcnow()), else_=None),
            archive_reason=case((exhausted, literal(ArchiveReason.DEAD.value)), else_=None),
        )
        .returning(m.c.id, m.c.archive_reason)
    )


async def fenced(conn: AsyncConnection, stmt: Any, msg: Message, action: str) -> Row[Any]:
    """Execute a lease-fenced statement; no row means the lease is gone."""
    row = (await conn.execute(stmt)).first()
    if row is None:
        raise LeaseLost(
            f"cannot {action} message {msg.id}: {LeaseLost.__doc__}",
            message_id=msg.id,
            token=msg.read_ct,
        )
    return row


def requeued() -> dict[str, Any]:
    """Column values that put an archived message back on its queue, ready now."""
    return {
        "archived_at": None,
        "archive_reason": None,
        "failed_ct": 0,
        "consumer_worker_id": None,
        "vt": utcnow(),
    }


def replay_dead_stmt(t: Tables, queue_id: int, message_ids: Sequence[int] | None) -> Update:
    """Put queue ``queue_id``'s dead letters (all, or ``message_ids``) back; returns their ids."""
    m = t.messages
    cond = [m.c.queue_id == queue_id, m.c.archive_reason == ArchiveReason.DEAD.value]
    if message_ids is not None:
        cond.append(m.c.id.in_(list(message_ids)))
    return update(m).where(*cond).values(**requeued()).returning(m.c.id)


def delete_messages_stmt(t: Tables, queue_id: int, *, leased: bool | None = None) -> Delete:
    """Delete queue ``queue_id``'s messages: all, or (``leased=False``) those not leased now."""
    m = t.messages
    stmt = delete(m).where(m.c.queue_id == queue_id)
    if leased is False:
        stmt = stmt.where(~leased_now(t))
    return stmt


def delete_held_stmt(t: Tables, msg: Message, worker_id: int) -> ReturningDelete[tuple[int]]:
    """Delete a message this worker holds (fenced by owner and token)."""
    m = t.messages
    return delete(m).where(held(t, msg.id, worker_id, msg.read_ct)).returning(m.c.id)


def delete_message_stmt(t: Tables, message_id: int) -> Delete:
    """Delete one message (a trigger that lost its idempotency race drops its own)."""
    m = t.messages
    return delete(m).where(m.c.id == message_id)


def release_dead_worker_stmt(t: Tables, worker_id: int) -> Update:
    """Give back every live lease of a worker row judged dead (its name registered anew).

    Each message is visible now, and its delivery counted as a failed one.
    """
    m = t.messages
    return (
        update(m)
        .where(m.c.consumer_worker_id == worker_id, m.c.archived_at.is_(None))
        .values(consumer_worker_id=None, vt=utcnow(), failed_ct=m.c.failed_ct + 1)
    )


def requeue_stmt(t: Tables, message_id: int) -> Update:
    """Put an archived message back on its queue, ready now (``retry_run``)."""
    m = t.messages
    return update(m).where(m.c.id == message_id).values(**requeued())


from ._enqueue import (  # noqa: E402
    enqueue_many_pg_stmt as enqueue_many_pg_stmt,
    enqueue_many_sqlite_stmt as enqueue_many_sqlite_stmt,
    enqueue_one_stmt as enqueue_one_stmt,
    enqueue_rows as enqueue_rows,
    enqueue_stmt as enqueue_stmt,
)
from ._prune import (  # noqa: E402
    delete_archived_stmt as delete_archived_stmt,
    expired_messages_select as expired_messages_select,
    plain_queues_select as plain_queues_select,
)
from ._runs import (  # noqa: E402 (they build on the statements above)
    archive_idle_stmt as archive_idle_stmt,
    lock_message_stmt as lock_message_stmt,
    wake_unleased_stmt as wake_unleased_stmt,
    wake_waiter_stmt as wake_waiter_stmt,
    workflow_message_insert_stmt as workflow_message_insert_stmt,
    workflow_message_source as workflow_message_source,
    workflow_messages_insert_stmt as workflow_messages_insert_stmt,
)
