"""A claimed batch of plain queue messages: the handlers run together, the successes acked.

The part of the worker's :class:`~pgqrs_sqla._delivery.Delivery` that serves plain queues
(a workflow's runs are the rest of it).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import queue as q
from ._logging import get_logger
from ._prefetch import ACK_DELAY, Slots, lease_end
from ._worker_state import _Binding, _InFlight
from .errors import LeaseLost, PgqrsError
from .retry import RetryPolicy

if TYPE_CHECKING:
    from ._leases import Leases
    from ._registration import Registration
    from ._worker_state import _Stats
    from .store import Store

log = get_logger("pgqrs_sqla.worker")


@dataclass
class _Batch:
    """A claimed batch: the messages not started yet, and those handled and not yet acked."""

    pending: deque[q.Message]
    handled: list[q.Message] = field(default_factory=list)
    #: the acknowledgement due :data:`ACK_DELAY` after a message was handled, if none is yet
    timer: asyncio.TimerHandle | None = None
    #: acknowledgements under way (those the timer started)
    acks: list[asyncio.Task[None]] = field(default_factory=list)


class PlainMessages:
    """Plain messages, for :class:`~pgqrs_sqla._delivery.Delivery` (which it is mixed into)."""

    store: Store
    registration: Registration
    leases: Leases
    stats: _Stats
    inflight: dict[int, _InFlight]
    slots: Slots
    stopping: asyncio.Event
    visibility_timeout: float

    def _ended(self, binding: _Binding, message_ids: list[int]) -> None:
        raise NotImplementedError  # Delivery's

    def spawn_batch(self, binding: _Binding, messages: list[q.Message], sent: float) -> None:
        """One task for a claimed batch of plain messages, claimed at monotonic time ``sent``.

        Their handlers run in the worker's slots (``concurrency`` at once, in claim order);
        those handled are acknowledged together, in one statement per :data:`ACK_DELAY`.
        """
        first = messages[0]
        task = asyncio.create_task(
            self._process_messages(binding, messages), name=f"pgqrs-{binding.queue}-{first.id}"
        )
        until = lease_end(sent, self.visibility_timeout)
        for msg in messages:
            self.inflight[msg.id] = _InFlight(msg, binding, task, lease_until=until)
        self.slots.queued(len(messages))
        ids = [m.id for m in messages]
        task.add_done_callback(lambda _t: self._ended(binding, ids))

    async def _process_messages(self, binding: _Binding, messages: list[q.Message]) -> None:
        batch = _Batch(deque(messages))
        try:
            runners = min(len(messages), self.slots.concurrency)
            await asyncio.gather(*(self._runner(binding, batch) for _ in range(runners)))
        finally:
            if batch.timer is not None:
                batch.timer.cancel()
            if batch.pending:  # cancelled before they started: the shutdown gives them back
                self.slots.skipped(len(batch.pending))
                batch.pending.clear()
        if batch.acks:
            await asyncio.gather(*batch.acks)
        await self._ack(binding, batch)

    async def _runner(self, binding: _Binding, batch: _Batch) -> None:
        """Take the batch's messages one at a time, each in a slot, until none is left."""
        while batch.pending:
            msg = batch.pending.popleft()
            async with self.slots.slot():
                if not await self._may_start(binding, msg, batch):
                    continue
                ok = await self._process_message(binding, msg)
            if ok:
                batch.handled.append(msg)
                if batch.timer is None:  # acknowledged within ACK_DELAY, or at the batch's end
                    batch.timer = asyncio.get_running_loop().call_later(
                        ACK_DELAY, self._ack_due, binding, batch
                    )
            else:
                self._ended(binding, [msg.id])

    def _ack_due(self, binding: _Binding, batch: _Batch) -> None:
        """The batch's timer: acknowledge what was handled so far, while the rest runs."""
        batch.timer = None
        batch.acks.append(asyncio.create_task(self._ack(binding, batch)))

    async def _may_start(self, binding: _Binding, msg: q.Message, batch: _Batch) -> bool:
        """A message about to start: is its lease still ours (and the worker not stopping)?

        It may have waited for its slot. The heartbeat extends its lease while it waits, and
        says if it found it gone; if the heartbeat has not kept up (the database unreachable,
        the loop starved), one fenced extension makes sure before the handler runs. A worker
        that began stopping gives back the messages not started: another worker takes them
        at once.
        """
        flight = self.inflight.get(msg.id)
        if self.stopping.is_set():
            rest = [msg, *batch.pending]
            self.slots.skipped(len(batch.pending))
            batch.pending.clear()
            await self._give_back(rest)
            self._ended(binding, [m.id for m in rest])
            return False
        if flight is None or flight.lost:
            self.stats.lease_lost += 1
            log.warning("message %s: lease lost before it started", msg.id)
            return False
        if time.monotonic() >= flight.lease_until:
            sent = time.monotonic()
            try:
                await self.leases.extend(msg, self.visibility_timeout)
            except LeaseLost:
                self.stats.lease_lost += 1
                log.warning("message %s: lease lost before it started", msg.id)
                return False
            except PgqrsError as error:  # unreachable: the lease ends on its own
                self.stats.errors += 1
                log.warning("message %s: lease not confirmed, not started: %s", msg.id, error)
                return False
            flight.lease_until = lease_end(sent, self.visibility_timeout)
        return True

    async def _give_back(self, messages: list[q.Message]) -> None:
        """Give back leases not started (the worker is stopping); failures are left to expiry."""
        params = {
            "p_leases": [(m.id, m.read_ct) for m in messages],
            "p_worker_id": self.registration.id,
        }
        with contextlib.suppress(Exception):
            async with self.store._autocommit() as conn:
                await conn.execute(q.release_many_stmt(self.store.tables), params)

    async def _ack(self, binding: _Binding, batch: _Batch) -> None:
        """Acknowledge the messages handled so far in one statement, fenced by their leases.

        A message whose lease was lost meanwhile is not acknowledged (its new holder has it).
        """
        done, batch.handled = batch.handled, []
        if not done:
            return
        try:
            try:
                async with self.store._autocommit() as conn:
                    acked = await q.archive_many(
                        conn, self.store.tables, done, self.registration.id
                    )
            except asyncio.CancelledError:
                for msg in done:
                    await self.leases.release_quietly(msg)
                raise
            except PgqrsError as error:  # e.g. the database went away: the leases will expire
                self.stats.errors += 1
                log.warning("could not acknowledge %d message(s): %s", len(done), error)
                return
        finally:
            self._ended(binding, [m.id for m in done])
        self.stats.completed += len(acked)
        lost = len(done) - len(acked)
        if lost:
            self.stats.lease_lost += lost
            log.warning("%d message(s) of queue %s: lease lost before ack", lost, binding.queue)

    async def _process_message(self, binding: _Binding, msg: q.Message) -> bool:
        """Run the handler; True if the message is to be acknowledged."""
        extra = {"queue": binding.queue, "message_id": msg.id}
        try:
            await binding.handler(msg)
            return True
        except LeaseLost:
            self.stats.lease_lost += 1
            log.warning("message %s: lease lost", msg.id, extra=extra)
        except asyncio.CancelledError:
            await self.leases.release_quietly(msg)
            raise
        except Exception as error:
            self.stats.errors += 1
            log.exception("message %s: handler failed", msg.id, extra=extra)
            policy = binding.retry or RetryPolicy()
            with contextlib.suppress(LeaseLost, PgqrsError):
                await self.leases.fail(
                    msg, f"{type(error).__name__}: {error}", delay=policy.delay(msg.failed_ct + 1)
                )
        return False
