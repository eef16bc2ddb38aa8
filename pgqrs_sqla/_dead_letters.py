"""Dead letters: claimed messages past ``max_deliveries`` buried, and failed deliveries counted.

A workflow run ends ``ERROR`` with its dead-lettered message, and a run waiting on it
(``ctx.wait_for_run``) is woken.
"""

from __future__ import annotations

from sqlalchemy import select

from . import queue as q
from ._error_record import error_record, storable_text
from ._execution import Execution
from ._leases import Leases
from ._logging import get_logger
from ._registration import Registration
from ._runs_write import dead_run_stmt
from ._worker_state import _Binding
from .models import ArchiveReason
from .runs import RUN_DONE_CHANNEL, wake_waiters
from .store import Store

log = get_logger("pgqrs_sqla.worker")


class DeadLetters:
    """Buries what a worker claimed past its queue's ``max_deliveries``; counts failed deliveries."""

    def __init__(self, store: Store, registration: Registration, leases: Leases) -> None:
        self.store = store
        self.registration = registration  # its id is known once the worker registered
        self.leases = leases

    async def bury_exhausted(self, binding: _Binding, messages: list[q.Message]) -> list[q.Message]:
        """Dead-letter the claimed ``messages`` whose failed deliveries reached ``max_deliveries``.

        A workflow run ends ``ERROR`` with its message. Returns the others, still leased to this
        worker.

        An expired lease is counted as a failed delivery by the claim that follows it, so
        exhaustion shows at a claim, and every way of claiming must look. It costs nothing
        for first deliveries and one read of ``max_deliveries`` for redeliveries.
        """
        suspects = [msg for msg in messages if msg.failed_ct > 0]
        if not suspects:
            return messages
        t = self.store.tables
        async with self.store._read() as conn:
            max_deliveries = (
                await conn.execute(
                    select(t.queues.c.max_deliveries).where(t.queues.c.id == binding.queue_id)
                )
            ).scalar()
        if max_deliveries is None:  # the queue was deleted, and its messages with it
            return messages
        dead = [msg for msg in suspects if msg.failed_ct >= max_deliveries]
        if not dead:
            return messages
        buried: list[tuple[q.Message, str]] = []
        waiters: list[int | None] = []
        async with self.store._begin() as conn:
            for msg in dead:
                reason = q.dead_reason(msg.failed_ct, max_deliveries)
                archive = q.archive_stmt(t, msg, self.registration.id, ArchiveReason.DEAD, reason)
                if (await conn.execute(archive)).first() is None:
                    continue  # the lease is already gone: neither ours to bury nor to return
                buried.append((msg, reason))
                if binding.workflow is not None:
                    last = None if msg.last_error is None else {"message": msg.last_error}
                    ended = (await conn.execute(dead_run_stmt(t, msg.id, reason, last))).first()
                    waiters.append(None if ended is None else ended.awaited_by)
        for msg in dead:
            self.leases.forget(msg)
        for msg, reason in buried:
            log.error(
                "message %s dead-lettered: %s", msg.id, reason, extra={"queue": binding.queue}
            )
        if buried and binding.workflow is not None:
            self.store._wake(RUN_DONE_CHANNEL)
            await wake_waiters(self.store, waiters)
        gone = {msg.id for msg in dead}
        return [msg for msg in messages if msg.id not in gone]

    async def fail_delivery(self, binding: _Binding, x: Execution, error: Exception) -> bool:
        """Count a failed delivery of run ``x``, released after the backoff; True if the run ended.

        If that reaches ``max_deliveries`` the message is dead-lettered and the run ends ``ERROR``.
        If even this write fails, the lease expires, which the next claim counts as a failed
        delivery all the same.
        """
        t = self.store.tables
        record = error_record(error)
        record.pop("traceback", None)
        text = storable_text(f"{record['type']}: {record['message']}")[:2000]
        delay = (binding.retry or x.policy).delay(x.message.failed_ct + 1)
        try:
            async with self.store._begin() as conn:
                row = (
                    await conn.execute(q.fail_stmt(t, x.message, self.registration.id, delay, text))
                ).first()
                dead = row is not None and row.archive_reason == ArchiveReason.DEAD.value
                if dead:
                    failed = x.message.failed_ct + 1
                    reason = f"dead: {failed} failed deliveries, the last: outcome not recorded"
                    ended = await conn.execute(dead_run_stmt(t, x.message.id, reason, record))
                    x.awaited_by = getattr(ended.first(), "awaited_by", None)
        except Exception:
            log.exception("run %s: could not count the failed delivery either", x.run_id)
            return False
        finally:
            self.leases.forget(x.message)
        if dead:
            log.error("run %s dead-lettered: %s", x.run_id, text)
        return dead
