"""A claimed batch of plain queue messages: the handlers run together, the successes acked.

The part of the worker's :class:`~pgqrs_sqla._delivery.Delivery` that serves plain queues
(a workflow's runs are the rest of it).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from . import queue as q
from ._logging import get_logger
from ._worker_state import _Binding, _InFlight
from .errors import LeaseLost, PgqrsError
from .retry import RetryPolicy

if TYPE_CHECKING:
    from ._leases import Leases
    from ._registration import Registration
    from ._worker_state import _Stats
    from .store import Store

log = get_logger("pgqrs_sqla.worker")


class PlainMessages:
    """Plain messages, for :class:`~pgqrs_sqla._delivery.Delivery` (which it is mixed into)."""

    store: Store
    registration: Registration
    leases: Leases
    stats: _Stats
    inflight: dict[int, _InFlight]

    def _ended(self, binding: _Binding, message_ids: list[int]) -> None:
        raise NotImplementedError  # Delivery's

    def spawn_batch(self, binding: _Binding, messages: list[q.Message]) -> None:
        """One task for a claimed batch of plain messages: handlers run concurrently.

        The successes are acknowledged together, in one statement.
        """
        first = messages[0]
        task = asyncio.create_task(
            self._process_messages(binding, messages), name=f"pgqrs-{binding.queue}-{first.id}"
        )
        for msg in messages:
            self.inflight[msg.id] = _InFlight(msg, binding, task)
        ids = [m.id for m in messages]
        task.add_done_callback(lambda _t: self._ended(binding, ids))

    async def _process_messages(self, binding: _Binding, messages: list[q.Message]) -> None:
        handled = await asyncio.gather(*(self._process_message(binding, m) for m in messages))
        done = [m for m, ok in zip(messages, handled, strict=True) if ok]
        if not done:
            return
        try:
            async with self.store._autocommit() as conn:
                acked = await q.archive_many(conn, self.store.tables, done, self.registration.id)
        except asyncio.CancelledError:
            for msg in done:
                await self.leases.release_quietly(msg)
            raise
        except PgqrsError as error:  # e.g. the database went away: the leases will expire
            self.stats.errors += 1
            log.warning("could not acknowledge %d message(s): %s", len(done), error)
            return
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
