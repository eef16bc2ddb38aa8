"""A worker's scheduler: fire the due ticks of the schedules of the workflows it serves.

:class:`Scheduler` runs in a task of its own beside the heartbeat. Each round is a firing pass
(``Store._fire_due``: one short transaction per due schedule, each tick a run, exactly once
however many workers run the pass), then a sleep until the earliest next tick, at most
:data:`MAX_SLEEP` seconds, or until a schedule of this database is made or changed (in this
process; in another, on PostgreSQL, through NOTIFY). Database faults are ridden out with
backoff, logged once per episode, like the heartbeat's; an error retrying cannot fix (tables
missing, a bug) is logged and retried at the slow pace, since the scheduler never stops the
worker.
"""

from __future__ import annotations

import asyncio
import contextlib

from ._db import HUB, Waiter, translate
from ._heartbeat import _cannot_heal, _Episode
from ._logging import describe, get_logger
from ._schedules import SCHEDULES_CHANNEL
from .store import Store

log = get_logger("pgqrs_sqla.worker")

#: the longest a scheduler sleeps between passes: how late a SQLite worker notices a schedule
#: another process made or changed (this process's changes, and NOTIFY on PostgreSQL, wake it)
MAX_SLEEP = 60.0


class Scheduler:
    """Fires the due ticks of ``workflow_ids``' schedules until cancelled."""

    def __init__(
        self, store: Store, worker: str, workflow_ids: list[int], *, max_sleep: float = MAX_SLEEP
    ) -> None:
        self.store = store
        self.worker = worker
        self.workflow_ids = workflow_ids
        self.max_sleep = max_sleep
        self.episode = _Episode(worker, "schedules")
        #: runs this worker's passes triggered
        self.fired = 0

    async def run(self) -> None:
        """The loop; cancelled by the worker's shutdown."""
        if not self.workflow_ids:
            return
        waiter = HUB.subscribe(self.store.db_key, SCHEDULES_CHANNEL, Waiter())
        while True:
            waiter.event.clear()
            delay = await self.round()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter.event.wait(), delay)

    async def round(self) -> float:
        """One firing pass; returns how long to sleep before the next."""
        try:
            done = await self.store._fire_due(self.workflow_ids)
        except Exception as error:  # ridden out: a schedule's tick waits for the next pass
            mapped = translate(error, "firing schedules")
            if _cannot_heal(mapped):
                log.error(
                    "worker %s: firing schedules failed: %s; retrying in %g s",
                    self.worker,
                    describe(mapped),
                    self.max_sleep,
                    exc_info=mapped,
                )
                return self.max_sleep
            return self.episode.failed(mapped)
        self.episode.recovered()
        self.fired += done.fired
        if done.next_in is None:
            return self.max_sleep
        if done.next_in == 0 and not done.fired:
            # Due, but another worker holds it (or the clocks' rounding differs): soon again.
            return 0.1
        return min(done.next_in, self.max_sleep)
