"""Events sent to runs: ``store.send_event(run_id, name, payload)``, in the caller's transaction.

The event is kept in ``pgqrs_workflow_events`` until a ``ctx.wait_for_event(name)`` of the
run consumes it (see :mod:`pgqrs_sqla._waits`); if the run is parked waiting for it, its
message is made visible at once, and on PostgreSQL a NOTIFY wakes the workers serving it
when the transaction commits. With ``target=`` the event exists if and only if the caller's
transaction commits.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from ._core import StoreCore
from ._db import AsyncTarget, SyncTarget, run_sync
from ._events_write import insert_event_stmt, waits_for_event
from ._message import NOTIFY_CHANNEL, validate_name
from .codec import JsonDefault, check_json
from .dialects import Dialect
from .errors import IllegalTransition, RunNotFound
from .models import RunStatus, Tables
from .queue import lock_message_stmt, wake_unleased_stmt
from .runs import check_run_id
from .states import UNFINISHED_RUN


def _check_event(
    run_id: Any, name: Any, payload: Any, limit: int, default: JsonDefault | None
) -> Any:
    """The payload as stored; bad arguments refused before any statement is sent."""
    check_run_id(run_id)
    validate_name(name, "event")
    return check_json(payload, what=f"payload of event {name!r}", max_bytes=limit, default=default)


def _run_status(conn: Connection, t: Tables, run_id: int) -> Any:
    r, w = t.runs, t.workflows
    row = conn.execute(
        select(r.c.status, r.c.message_id, w.c.workflow_name)
        .join(w, w.c.id == r.c.workflow_id)
        .where(r.c.id == run_id)
    ).first()
    if row is None:
        raise RunNotFound(
            f"no workflow run with id {run_id} to send an event to: check the id "
            "(store.list_runs() lists runs)",
            run_id=run_id,
        )
    status = RunStatus(row.status)
    if status.terminal:
        raise IllegalTransition(
            f"run {run_id} is {status.value}: a finished run takes no events (nothing was written)",
            run_id=run_id,
            expected=UNFINISHED_RUN,
            actual=status.value,
        )
    return row


def send_event_logic(
    conn: Connection, t: Tables, dialect: Dialect, run_id: int, name: str, payload: Any
) -> str:
    """Write event ``name`` for run ``run_id`` and wake the run if it waits for it.

    Returns the run's queue (for the wake-up). The run's message row is locked first (lock
    order: message, then run): a worker parking the run in a wait for this event either
    finished before (and this wakes it) or waits for this transaction (and then finds the
    event).
    """
    head = _run_status(conn, t, run_id)
    if head.message_id is not None:
        conn.execute(lock_message_stmt(t, dialect, head.message_id))
        head = _run_status(conn, t, run_id)  # it may have finished meanwhile
    conn.execute(insert_event_stmt(t), {"p_run_id": run_id, "p_name": name, "p_payload": payload})
    if head.message_id is not None:
        waiting = waits_for_event(t, run_id, name)
        conn.execute(wake_unleased_stmt(t, head.message_id, waiting))
    notify = dialect.notify(NOTIFY_CHANNEL, head.workflow_name)
    if notify is not None:  # sent when the transaction commits
        conn.execute(select(notify))
    queue: str = head.workflow_name
    return queue


class Events(StoreCore):
    """Sending events to runs, mixed into :class:`~pgqrs_sqla.Store`."""

    async def send_event(
        self,
        run_id: int,
        name: str,
        payload: Any = None,
        *,
        target: AsyncTarget | None = None,
    ) -> None:
        """Send event ``name`` (with a JSON ``payload``) to run ``run_id``.

        A ``ctx.wait_for_event(name)`` of the run returns the payload: one waiting now is
        woken; one that comes later finds the event kept for it. Each event is consumed by
        one wait, in the order sent. With ``target`` (an ``AsyncSession`` or
        ``AsyncConnection``) the event is written in the caller's transaction: it exists if
        and only if that transaction commits.

        Raises :class:`~pgqrs_sqla.RunNotFound` for an unknown run and
        :class:`~pgqrs_sqla.IllegalTransition` for a finished one; a bad name or payload is
        a :class:`~pgqrs_sqla.ValidationError`. Nothing is written then.
        """
        payload = _check_event(run_id, name, payload, self.max_payload_bytes, self.json_default)
        queue = await self._in_transaction(
            lambda c: send_event_logic(c, self.tables, self.dialect, run_id, name, payload), target
        )
        self._wake(queue, target)

    def send_event_sync(
        self, run_id: int, name: str, payload: Any = None, *, target: SyncTarget
    ) -> None:
        """:meth:`send_event` in a sync ``Session``/``Connection``'s transaction."""
        payload = _check_event(run_id, name, payload, self.max_payload_bytes, self.json_default)
        queue = run_sync(
            target, lambda c: send_event_logic(c, self.tables, self.dialect, run_id, name, payload)
        )
        self._wake(queue, target)
