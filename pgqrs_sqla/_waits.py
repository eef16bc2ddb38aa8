"""Durable waits: a timer (``ctx.sleep``) and a wait for an event (``ctx.wait_for_event``).

A wait is recorded like a step, in ``pgqrs_workflow_steps``, under its name, with ``kind``
saying which primitive wrote it. While it waits the record is PAUSED (with its deadline in
``wake_at``), the run is PAUSED, and the run's message is released until the deadline: no
task, no connection and no lease is held. The database wakes the run: the message's ``vt``
at the deadline, and ``send_event`` making it visible at once. Once the wait is over, the
record is SUCCESS with what the wait returned, and a replay returns that without waiting.

Waking the right run without losing a wake-up: ``send_event`` locks the run's message row
before it writes; a parking wait locks it too, before it looks for the event once more. One
of the two goes first: either the park sees the event (and releases the message for no
time), or the sender sees the parked wait (and makes the message visible).
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from ._events_write import consume_event_stmt, pending_event
from ._message import validate_name
from ._signals import _LeaseLostSignal, _Refused, _RunCancelledSignal, _Waiting
from ._steps_write import step_upsert_stmt, wait_upsert_stmt
from .codec import check_text
from .dialects import aware
from .errors import EventTimeout, ReplayMismatch, StepNameReused, duration_seconds
from .models import RunStatus, StepStatus
from .queue import lock_message_stmt

if TYPE_CHECKING:
    from ._execution import Execution, StepRecord

#: A wait with no deadline releases its run's message for this long, then looks again (a
#: send_event wakes it at once). A safety net, not a poll: an hour costs nothing.
WAIT_HORIZON = 3600.0

SLEEP, EVENT, PATCH = "sleep", "event", "patch"


def claim_name(x: Execution, name: str, kind: str | None) -> StepRecord | None:
    """Take ``name`` for one record of this delivery; the record earlier deliveries wrote.

    ``kind`` is the primitive calling (None: a step). A name called twice in one delivery is
    :class:`StepNameReused`; a record another primitive wrote is :class:`ReplayMismatch`.
    """
    check_text(name, what="step name", option="name")  # str, 1-255, storable
    if name in x.used:
        raise StepNameReused(
            f"step {name!r} was already called in run {x.run_id}; give each step a unique name",
            run_id=x.run_id,
            step_name=name,
        )
    x.used.add(name)
    recorded = x.steps.get(name)
    if recorded is not None and recorded.kind != kind:
        was, now = recorded.kind or "step", kind or "step"
        raise ReplayMismatch(
            f"run {x.run_id}: {name!r} is recorded as {_a(was)}, but the code now calls "
            f"{_a(now)} there; give each step and wait its own name (a deploy that changes what a run "
            "does at a name must use a new name, or ctx.patched)",
            run_id=x.run_id,
            step_name=name,
            recorded=was,
            called=now,
        )
    return recorded


def _a(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def check_live(x: Execution) -> None:
    """Before a step body or a wait: the delivery still holds its run, and the run goes on.

    A lost lease unwinds the handler; a cancellation, or the run's deadline passed, ends the
    run ``CANCELLED`` (the deadline with its reason recorded as the run's error).
    """
    if x.lease_lost:
        raise _LeaseLostSignal(f"lease on run {x.run_id} lost")
    if x.cancel_requested:
        raise _RunCancelledSignal(f"run {x.run_id} cancelled")
    if x.deadline_at is not None and x.until_deadline() <= 0:
        x.deadline_error = {
            "type": "pgqrs_sqla.DeadlineExceeded",
            "message": f"run {x.run_id} passed its deadline ({x.deadline_at.isoformat()}) "
            "unfinished: cancelled",
            "deadline": x.deadline_at.isoformat(),
        }
        raise _RunCancelledSignal(f"run {x.run_id} passed its deadline")


def remaining_of(x: Execution, recorded: StepRecord | None, first: float) -> float:
    """Seconds to the wait's deadline: the recorded one, else ``first`` from now."""
    if recorded is not None and recorded.wake_at is not None:
        wake_at = aware(recorded.wake_at)
        assert wake_at is not None
        return (wake_at - x.db_now()).total_seconds()
    return first


async def sleep(x: Execution, name: str, seconds: float) -> None:
    """``ctx.sleep``: wait ``seconds`` from the first call, durably, holding nothing."""
    recorded = claim_name(x, name, SLEEP)
    if recorded is not None and recorded.status is StepStatus.SUCCESS:
        return
    check_live(x)
    remaining = remaining_of(x, recorded, seconds)
    if remaining <= 0:
        await complete(x, name, SLEEP, None)
        return
    raise _Waiting(name, SLEEP, remaining, deadline=remaining)


def until_seconds(x: Execution, when: datetime) -> float:
    """Seconds from the database's now to the aware datetime ``when`` (0 if it has passed)."""
    if not isinstance(when, datetime) or when.tzinfo is None or when.utcoffset() is None:
        from .errors import ValidationError

        raise ValidationError(
            f"sleep_until needs an aware datetime (with a tzinfo, e.g. datetime.now(UTC) + "
            f"timedelta(hours=1)), got {when!r}",
            option="when",
            value=when,
        )
    seconds = max(0.0, (when - x.db_now()).total_seconds())
    return duration_seconds(seconds, "sleep_until's time from now")


async def wait_for_event(x: Execution, name: str, timeout: float | None) -> Any:
    """``ctx.wait_for_event``: the payload of the next event ``name`` sent to this run.

    The n-th wait for one event name in a run is recorded as ``name`` (n = 1), then
    ``name#n``; each consumes one event, the oldest first.
    """
    validate_name(name, "event")
    n = x.event_waits.get(name, 0) + 1
    x.event_waits[name] = n
    step = name if n == 1 else f"{name}#{n}"
    recorded = claim_name(x, step, EVENT)
    if recorded is not None and recorded.status is StepStatus.SUCCESS:
        return _replayed_event(x, step, name, recorded.output)
    check_live(x)
    got, payload = await _consume(x, step, name)
    if got:
        return payload
    if timeout is None:
        raise _Waiting(step, EVENT, WAIT_HORIZON, deadline=None, wait_for=name)
    remaining = remaining_of(x, recorded, timeout)
    if remaining <= 0:
        await complete(x, step, EVENT, {"timeout": timeout})
        raise _timeout(x, name, timeout)
    raise _Waiting(step, EVENT, remaining, deadline=remaining, wait_for=name)


def _replayed_event(x: Execution, step: str, name: str, output: Any) -> Any:
    if isinstance(output, dict) and "timeout" in output:
        raise _timeout(x, name, output["timeout"])
    if isinstance(output, dict) and "payload" in output:
        return output["payload"]
    return output  # recorded from outside (update_step): its value as given


def _timeout(x: Execution, name: str, timeout: float | None) -> EventTimeout:
    return EventTimeout(
        f"run {x.run_id}: no event {name!r} came within {timeout:g}s",
        run_id=x.run_id,
        event_name=name,
        timeout=timeout,
    )


async def _consume(x: Execution, step: str, name: str) -> tuple[bool, Any]:
    """Consume the oldest unconsumed event ``name`` and record the wait's success with it.

    One transaction, fenced by the lease: (False, None) if there is none.
    """
    t, dialect = x.tables, x.store.dialect
    try:
        async with x.store._begin() as conn:
            row = (
                await conn.execute(
                    consume_event_stmt(t, dialect),
                    {"p_run_id": x.run_id, "p_name": name, "p_step": step},
                )
            ).first()
            if row is None:
                return False, None
            output = {"payload": row.payload}
            stmt = step_upsert_stmt(t, conn.dialect.name, StepStatus.SUCCESS, EVENT)
            params = success_params(x, step, output)
            if (await conn.execute(stmt, params)).first() is None:
                raise _Refused
    except _Refused:
        raise await x.refusal() from None
    x.remember(step, StepStatus.SUCCESS, output, EVENT)
    return True, row.payload


def success_params(x: Execution, name: str, output: Any) -> dict[str, Any]:
    return x.bind(p_step_name=name, p_output=output, p_error=None, p_attempts=1, p_duration=0.0)


async def complete(x: Execution, name: str, kind: str, output: Any) -> None:
    """Record wait ``name`` done with ``output`` (fenced); the run goes on past it."""
    async with x.connection() as conn:
        stmt = step_upsert_stmt(x.tables, conn.dialect.name, StepStatus.SUCCESS, kind)
        sent = time.monotonic()
        row = (await conn.execute(stmt, success_params(x, name, output))).first()
        if row is None:
            raise await x.refusal(conn)
    x.note_lease(sent, row.lease_vt, row.db_now)  # the write moved the lease deadline on
    x.remember(name, StepStatus.SUCCESS, output, kind)


async def park(x: Execution, wait: _Waiting) -> bool:
    """Record the wait and release the run's message until its deadline; all or nothing.

    False if a fenced write was refused (the lease is gone, or the run was cancelled). A wait
    for an event looks for it once more under the message's lock: found, the message is
    released for no time, and the next delivery consumes it.
    """
    t = x.tables

    async def delay(conn: AsyncConnection) -> float:
        if wait.wait_for is None:
            return wait.seconds
        await conn.execute(lock_message_stmt(t, x.store.dialect, x.message.id))
        pending = await conn.execute(
            select(pending_event(t)), {"p_run_id": x.run_id, "p_name": wait.wait_for}
        )
        return 0.0 if pending.scalar() else wait.seconds

    return await x.park(RunStatus.PAUSED, delay, wait_write(x, wait))


def wait_write(x: Execution, wait: _Waiting) -> tuple[Any, dict[str, Any]]:
    """The fenced write recording ``wait`` (PAUSED, its kind and deadline): ``execute(*write)``."""
    return (
        wait_upsert_stmt(x.tables, x.store.engine.dialect.name, wait.deadline is not None),
        x.bind(
            p_step_name=wait.step,
            p_attempts=1,
            p_kind=wait.kind,
            p_deadline=wait.deadline,
            p_wait_for=wait.wait_for,
        ),
    )


async def patched(x: Execution, patch_id: str) -> bool:
    """``ctx.patched``: whether this run takes the code path of patch ``patch_id``; recorded.

    True for a run that reaches this point under the code that has the patch; False for
    one that had already passed it before: its earlier deliveries recorded steps this
    delivery has not replayed yet, so the old code went on beyond this point without it.
    (Records written from outside by ``update_step`` do not count: the run may not have
    reached them.) The answer is recorded under ``patch_id``, so every later replay of the
    run takes the same path.
    """
    validate_name(patch_id, "patch")
    recorded = claim_name(x, patch_id, PATCH)
    if recorded is not None and recorded.status is StepStatus.SUCCESS:
        return bool(recorded.output)
    check_live(x)
    ahead = [
        name
        for name, record in x.steps.items()
        if name not in x.used and record.next_delivery is not None
    ]
    taken = not ahead
    await complete(x, patch_id, PATCH, taken)
    return taken
