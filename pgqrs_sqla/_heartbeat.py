"""A worker's background duty: heartbeat its row, extend its leases, notice cancellations and lag.

The lag is its queues'; and it rides out the database faults it meets.

:class:`Heartbeat` runs in a task of its own, so it keeps going while handlers (and
threads) run. :class:`_Episode` is one run of failures of a duty (claims, heartbeats),
logged once when it begins and once when it ends; :class:`ClaimFaults` tells the poll loop
whether a failed claim is ridden out or ends the worker; :class:`WorkerHealth` is what
a readiness probe reads of it all.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from . import _observe, queue as q
from ._db import translate
from ._limited_claim import limited_queues_stmt
from ._logging import describe, get_logger
from ._prefetch import lease_end
from ._registration import Registration
from ._wakeups import Wakeups
from ._worker_state import _InFlight, _Stats
from .dialects import aware, utcnow
from .errors import AuthenticationFailed, PgqrsError, SchemaMissing
from .models import Tables
from .store import Store

log = get_logger("pgqrs_sqla.worker")


@dataclass(frozen=True)
class WorkerHealth:
    """What a readiness probe wants to know."""

    name: str
    status: str
    running: bool
    in_flight: int
    last_heartbeat_age: float | None
    last_claim_age: float | None
    #: seconds the oldest ready message of this worker's queues has waited (None: none waiting)
    lag: float | None
    errors: int
    #: why the worker stopped on its own (tables missing, credentials refused, a bug): it
    #: claims nothing until restarted; None while it has not
    error: str | None = None
    #: the database fault the worker is riding out now (claims or heartbeats failing; it
    #: retries with backoff), None when its last claim and heartbeat went through
    fault: str | None = None

    @property
    def healthy(self) -> bool:
        """Running, not stopped by an error, and no database fault under way."""
        return self.running and self.error is None and self.fault is None


class _Episode:
    """A run of failures of one background duty (claiming, heartbeating), logged at each end.

    Logged once at WARNING when it begins, with the cause, and at INFO when the duty works again;
    the backoff between tries doubles, with jitter, up to ``cap`` seconds.
    """

    def __init__(self, worker: str, duty: str, cap: float = 5.0) -> None:
        self.worker, self.duty, self.cap = worker, duty, cap
        self.failures = 0
        self.began = 0.0
        self.cause: str | None = None

    def failed(self, error: BaseException) -> float:
        """Record a failure; returns how long to wait before the next try."""
        self.cause = describe(error)
        if self.failures == 0:
            self.began = time.monotonic()
            log.warning(
                "worker %s: %s failing (%s); retrying with backoff until it works",
                self.worker,
                self.duty,
                self.cause,
            )
        else:
            log.debug("worker %s: %s failed again: %s", self.worker, self.duty, self.cause)
        self.failures += 1
        delay = min(self.cap, 0.1 * 2.0 ** min(self.failures - 1, 10))
        return delay * random.uniform(0.5, 1.0)

    def recovered(self) -> None:
        if self.failures:
            log.info(
                "worker %s: %s works again after %d failure(s) over %.1fs (last: %s)",
                self.worker,
                self.duty,
                self.failures,
                time.monotonic() - self.began,
                self.cause,
            )
        self.failures = 0
        self.cause = None


def _cannot_heal(error: BaseException) -> bool:
    """An error the worker cannot ride out by retrying.

    The tables are missing, the credentials were refused, or it is no database error at all (a
    bug).
    """
    return isinstance(error, SchemaMissing | AuthenticationFailed) or not isinstance(
        error, PgqrsError
    )


class ClaimFaults:
    """The poll loop's claims failing: ridden out with backoff, or an error that ends the worker.

    The error is kept as ``error``.
    """

    def __init__(self, worker: str, stats: _Stats) -> None:
        self.worker = worker
        self.stats = stats
        self.episode = _Episode(worker, "claims")
        #: what stopped the poll loop for good (see WorkerHealth.error)
        self.error: BaseException | None = None

    def failed(self, error: Exception) -> float | None:
        """A claim (or the status write before it) failed: seconds to back off, or None to end.

        A fault that may heal (timeouts, cancellations, lock waits, a read-only database,
        SQLite busy, a pooler's lost state, the server gone) is waited out with backoff; an
        error retrying cannot fix (the tables missing, credentials refused, or no database
        error at all: a bug) ends the worker, loudly, with ``health().error`` saying why.
        """
        mapped = translate(error, "claim")
        if mapped is not error and mapped.__cause__ is None:
            mapped.__cause__ = error
        self.stats.errors += 1
        if _cannot_heal(mapped):
            self.error = mapped
            log.error(
                "worker %s: stopping: %s; it claims nothing until restarted",
                self.worker,
                describe(mapped),
                exc_info=mapped,
            )
            return None
        return self.episode.failed(mapped)


def oldest_ready_stmt(t: Tables, queue_ids: Sequence[int]) -> Select[Any, datetime]:
    """The vt of the oldest ready message of ``queue_ids``, with the database clock."""
    m = t.messages
    return select(func.min(m.c.vt), utcnow()).where(
        m.c.queue_id.in_(queue_ids), m.c.archived_at.is_(None), m.c.vt <= utcnow()
    )


def ready_depths_stmt(t: Tables, queue_ids: Sequence[int]) -> Select[Any]:
    """Each of ``queue_ids``' name, ready messages, the oldest one's vt, and the database clock.

    For an observer's gauges (:meth:`~pgqrs_sqla._observe.Observer.queue_depths`): a range of
    the ready index per queue.
    """
    m, qt = t.messages, t.queues
    ready = and_(m.c.queue_id == qt.c.id, m.c.archived_at.is_(None), m.c.vt <= utcnow())
    return (
        select(qt.c.queue_name, func.count(m.c.id), func.min(m.c.vt), utcnow())
        .select_from(qt.outerjoin(m, ready))
        .where(qt.c.id.in_(queue_ids))
        .group_by(qt.c.queue_name)
    )


def cancel_requested_stmt(t: Tables, run_ids: Sequence[int]) -> Select[int]:
    """Which of ``run_ids`` were asked to cancel."""
    r = t.runs
    return select(r.c.id).where(r.c.id.in_(run_ids), r.c.cancel_requested.is_(True))


class Heartbeat:
    """Every ``interval`` seconds: heartbeat the worker's row and extend the leases it holds.

    It heartbeats the row of ``registration``, extends the leases of what ``inflight()`` returns
    by ``visibility_timeout``, flags in-flight runs whose lease was lost or whose cancellation was
    asked, measures the lag of ``queue_ids`` (into ``stats``) and tells ``limited`` which of them
    have a concurrency or rate limit now. When another registration took
    the row it calls ``lost`` and ends.
    """

    def __init__(
        self,
        store: Store,
        registration: Registration,
        wakeups: Wakeups,
        stats: _Stats,
        *,
        queue_ids: list[int],
        interval: float,
        visibility_timeout: float,
        inflight: Callable[[], list[_InFlight]],
        lost: Callable[[list[_InFlight]], None],
        limited: Callable[[set[int]], None] = lambda _ids: None,
    ) -> None:
        self.store = store
        self.registration = registration
        self.wakeups = wakeups
        self.stats = stats
        self.queue_ids = queue_ids
        self.interval = interval
        self.visibility_timeout = visibility_timeout
        self.inflight = inflight
        self.lost = lost
        #: told, each beat, which of ``queue_ids`` have a limit now
        self.limited = limited
        self.episode = _Episode(registration.name, "heartbeats")
        #: the background prune (``Store._prune_round``), a task of its own so a long one never
        #: delays a heartbeat or a lease extension; the next is due at ``next_prune``
        self.prune_task: asyncio.Task[None] | None = None
        self.next_prune = self._prune_after(first=True)
        #: when an observer's queue depths are next read (monotonic; see ``_observe``)
        self.next_depths = 0.0

    def _prune_after(self, *, first: bool = False) -> float:
        """When the next background prune is due (monotonic), or infinity if never.

        The store's ``prune_interval`` with jitter (the first one at a random point of it), so
        workers started together do not prune together.
        """
        interval = self.store.prune_interval
        if interval is None:
            return float("inf")
        spread = random.uniform(0.0, 1.0) if first else random.uniform(0.75, 1.25)
        return time.monotonic() + interval * spread

    def _maybe_prune(self) -> None:
        """Start a background prune if one is due and none is under way."""
        if time.monotonic() < self.next_prune:
            return
        if self.prune_task is not None and not self.prune_task.done():
            return
        self.next_prune = self._prune_after()
        self.prune_task = asyncio.create_task(self._prune())

    async def _prune(self) -> None:
        try:
            await self.store._prune_round(self.registration.name)
        except Exception as error:  # logged; the next round tries again
            log.warning(
                "worker %s: background prune failed: %s",
                self.registration.name,
                describe(translate(error, "prune")),
            )

    async def _depths(self, conn: AsyncConnection, observer: _observe.Observer) -> None:
        """Tell ``observer`` its queues' depths, if it wants them and they are due."""
        interval = observer.depth_interval
        if interval is None or time.monotonic() < self.next_depths:
            return
        self.next_depths = time.monotonic() + interval
        rows = (await conn.execute(ready_depths_stmt(self.store.tables, self.queue_ids))).all()
        observer.queue_depths(
            {
                name: (int(ready), None if vt is None else (aware(now) - aware(vt)).total_seconds())  # type: ignore[operator]
                for name, ready, vt, now in rows
            }
        )

    async def run(self) -> None:
        """The loop; cancelled by the worker's shutdown (which cancels a prune under way)."""
        try:
            await self._beat_forever()
        finally:
            if self.prune_task is not None and not self.prune_task.done():
                self.prune_task.cancel()
                await asyncio.gather(self.prune_task, return_exceptions=True)

    async def _beat_forever(self) -> None:
        t = self.store.tables
        while True:
            await asyncio.sleep(self.interval)
            inflight = self.inflight()
            try:
                async with self.store._autocommit() as conn:
                    if not await self.registration.beat(conn):
                        self.lost(inflight)
                        return
                    oldest, now = (await conn.execute(oldest_ready_stmt(t, self.queue_ids))).one()
                    self.stats.lag = (
                        None if oldest is None else (aware(now) - aware(oldest)).total_seconds()  # type: ignore[operator]
                    )
                    stmt = limited_queues_stmt(t, self.queue_ids)
                    self.limited(set((await conn.execute(stmt)).scalars()))
                    if (observer := _observe.observer) is not None:
                        await self._depths(conn, observer)
                    if inflight:
                        # Fenced by token as well as owner: a delivery this worker no longer
                        # holds keeps the vt its new holder gave it.
                        sent = time.monotonic()
                        rows = (
                            await conn.execute(
                                q.extend_many_stmt(t),
                                {
                                    "p_leases": [
                                        (f.message.id, f.message.read_ct) for f in inflight
                                    ],
                                    "p_worker_id": self.registration.id,
                                    "p_vt": self.visibility_timeout,
                                },
                            )
                        ).all()
                        held = {row.id: row.read_ct for row in rows}
                        runs = [f.execution.run_id for f in inflight if f.execution is not None]
                        cancelled: set[int] = set()
                        if runs:
                            stmt = cancel_requested_stmt(t, runs)
                            cancelled = set((await conn.execute(stmt)).scalars())
                        until = lease_end(sent, self.visibility_timeout)
                        for f in inflight:
                            if held.get(f.message.id) != f.message.read_ct:
                                f.lost = True
                                if f.execution is not None:
                                    f.execution.lease_lost = True
                            else:
                                f.lease_until = until
                            if f.execution is not None and f.execution.run_id in cancelled:
                                f.execution.cancel_requested = True
                self.stats.last_heartbeat = time.monotonic()
                self.episode.recovered()
                self._maybe_prune()
            except Exception as error:  # ridden out: the loop decides what ends the worker
                self.stats.errors += 1
                self.episode.failed(translate(error, "heartbeat"))
            await self.wakeups.restart_if_down()
