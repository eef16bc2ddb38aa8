"""How many deliveries a worker holds: the handlers running, and those claimed ahead of a slot.

``concurrency`` is how many handlers run at once (the slots); ``batch_size`` is the most
messages one claim takes, and the most the worker holds, running or waiting for a slot.
Between the two the worker holds what keeps its slots busy for :data:`PREFETCH_WINDOW`
seconds at the pace its deliveries have been taking: fast handlers get whole batches claimed
(and acknowledged) in one round trip each, slow ones are claimed no further ahead than the
free slots, so a worker never sits on work another worker could start now.

A delivery claimed ahead waits for a slot with its lease held (the heartbeat extends it like
a running one's) and is checked before it starts: see :mod:`pgqrs_sqla._plain_messages` and
:meth:`pgqrs_sqla._delivery.Delivery.start_runs`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

from ._execution import LEASE_DRIFT, LEASE_MARGIN

#: ``batch_size`` unless given: the most a claim takes, and held (at least ``concurrency``)
DEFAULT_BATCH_SIZE = 50
#: seconds of work (at the pace measured) a worker claims ahead of its free slots
PREFETCH_WINDOW = 0.1
#: a plain message handled is acknowledged within this many seconds (one statement for all
#: those handled meanwhile), or when its batch ends, whichever comes first
ACK_DELAY = 0.05
#: the weight of the last delivery in the running mean of their durations
_WEIGHT = 0.2


def lease_end(sent: float, vt_seconds: float) -> float:
    """Until when (local monotonic) a lease set to ``now + vt_seconds`` at ``sent`` is surely ours.

    The statement that set it ran no earlier than ``sent``; less a margin for the clocks'
    drift, as :meth:`~pgqrs_sqla._execution.Execution.note_lease` does.
    """
    return sent + vt_seconds - LEASE_MARGIN - vt_seconds * LEASE_DRIFT


class Slots:
    """The worker's ``concurrency`` slots, the deliveries waiting for one, and the pace.

    ``room()`` is called when the last waiting delivery got its slot: the poll loop may claim.
    """

    def __init__(self, concurrency: int, batch_size: int, room: Callable[[], None]) -> None:
        self.concurrency = concurrency
        self.batch_size = batch_size
        self._free = asyncio.Semaphore(concurrency)
        self._room = room
        #: deliveries claimed and not yet started (waiting for a slot)
        self.waiting = 0
        #: running mean of a delivery's duration in a slot, in seconds (None: none seen yet)
        self.pace: float | None = None

    def limit(self, *, prefetch: bool = True) -> int:
        """How many deliveries to hold, running or waiting: at least ``concurrency``.

        More (up to ``batch_size``) once deliveries are seen to be quick enough that those
        claimed ahead start within :data:`PREFETCH_WINDOW`. ``prefetch`` False: no more.
        """
        most = max(self.concurrency, self.batch_size)
        if not prefetch or self.pace is None or most == self.concurrency:
            return self.concurrency
        ahead = int(self.concurrency * PREFETCH_WINDOW / max(self.pace, 1e-6))
        return max(self.concurrency, min(most, ahead))

    def room(self, held: int, *, prefetch: bool = True) -> int:
        """How many to claim now, holding ``held``: none while some still wait for a slot."""
        if self.waiting:
            return 0
        return self.limit(prefetch=prefetch) - held

    def queued(self, count: int) -> None:
        """``count`` deliveries were claimed: each waits for a slot (:meth:`slot`)."""
        self.waiting += count

    def skipped(self, count: int = 1) -> None:
        """``count`` waiting deliveries will not start (given back, or their lease lost)."""
        self.waiting -= count
        if self.waiting == 0:
            self._room()

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Wait for a free slot for one queued delivery, and hold it while the body runs.

        The time the body takes goes into :attr:`pace`.
        """
        try:
            await self._free.acquire()
        finally:
            self.skipped()
        began = time.monotonic()
        try:
            yield
        finally:
            self._free.release()
            took = time.monotonic() - began
            self.pace = took if self.pace is None else self.pace + _WEIGHT * (took - self.pace)
