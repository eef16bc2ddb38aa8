"""Workers: ``consumer(name, port, queue).handler(fn).create(store)`` and the poll loop.

A worker registers a row, claims messages in batches (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL) — ahead of its free slots while its handlers are quick, up to ``batch_size``
(:mod:`pgqrs_sqla._prefetch`) — runs up to ``concurrency`` handlers at once, and — in a background task that
keeps going while handlers run — heartbeats and extends the leases of what it holds.
Wake-ups come from ``LISTEN/NOTIFY`` on PostgreSQL and in-process notifications; polling
every ``poll_interval`` seconds is the fallback.

:class:`Worker` is the orchestrator: its poll loop, start/stop and health. The pieces it
wires together each do one job: its row (:mod:`pgqrs_sqla._registration`), the leases it
holds (:mod:`pgqrs_sqla._leases`), claiming and running deliveries
(:mod:`pgqrs_sqla._delivery`), heartbeats (:mod:`pgqrs_sqla._heartbeat`) and wake-ups
(:mod:`pgqrs_sqla._wakeups`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from . import queue as q
from ._db import HUB, Waiter, translated
from ._delivery import Delivery
from ._heartbeat import ClaimFaults, Heartbeat, WorkerHealth as WorkerHealth
from ._leases import Leases
from ._logging import describe, get_logger
from ._prefetch import Slots
from ._registration import (
    Registration,
    _when_name_free as _when_name_free,  # the CLI's and contrib's
)
from ._scheduler import Scheduler
from ._wakeups import Wakeups
from ._worker_state import ClaimGate, _Binding, _InFlight, _Stats
from .errors import (
    ConfigurationError,
    ValidationError,
    WorkerNameInUse,
    duration_seconds,
)
from .models import WorkerStatus
from .runs import CANCEL_CHANNEL
from .store import Store

log = get_logger("pgqrs_sqla.worker")

MessageHandler = Callable[[q.Message], Awaitable[Any]]


class Worker:
    """A registered worker: run it, or drive it by hand with :meth:`dequeue` and the leases.

    Run it with :meth:`poll_forever`, :meth:`start` / :meth:`stop`, or :meth:`run_until_idle`.
    """

    def __init__(
        self,
        store: Store,
        name: str,
        port: int | None,
        bindings: list[_Binding],
        *,
        concurrency: int,
        batch_size: int,
        visibility_timeout: float,
        poll_interval: float,
        heartbeat_interval: float,
        listen: bool,
        hostname: str,
        own_pool: bool = False,
    ) -> None:
        self.store = store
        self.name = name
        self.port = port
        self.hostname = hostname
        self.bindings = bindings
        self.concurrency = concurrency
        self.batch_size = batch_size
        self.visibility_timeout = visibility_timeout
        self.poll_interval = poll_interval
        self.heartbeat_interval = heartbeat_interval
        self.listen = listen
        self.stats = _Stats()
        self._inflight: dict[int, _InFlight] = {}
        self._stopping = asyncio.Event()
        self._waiter: Waiter | None = None
        self._cancel_waiter: Waiter | None = None
        self._task: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._scheduler_task: asyncio.Task[None] | None = None
        self._grace = 30.0
        #: the worker's pool is its own (made by create()): disposing it is ours to do
        self._close_store = own_pool
        #: the store ``create()`` was given (``store`` may be a pool of the worker's own
        #: made from it); whoever opened it closes it
        self.given_store: Store = store
        self._shut_down = False
        #: claims under way (dequeue() and the poll loop's), which suspend() waits for
        self._gate = ClaimGate()
        self._running = False
        #: claims failing, and what stopped the poll loop for good (WorkerHealth.error)
        self._claim_faults = ClaimFaults(name, self.stats)
        # The pieces, each handed what it needs.
        self._registration = Registration(
            store,
            name,
            port=port,
            hostname=hostname,
            queues=self.queues,
            queue_id=bindings[0].queue_id,
            heartbeat_interval=heartbeat_interval,
        )
        self._leases = Leases(store, self._registration)
        #: set when a delivery ends or the last one claimed ahead starts: the loop may claim
        self._room = asyncio.Event()
        self._slots = Slots(concurrency, batch_size, self._room.set)
        self._delivery = Delivery(
            store,
            self._registration,
            self._leases,
            self.stats,
            visibility_timeout=visibility_timeout,
            concurrency=concurrency,
            own_pool=own_pool,
            stopping=self._stopping,
            inflight=self._inflight,
            done=self._done,
            slots=self._slots,
        )
        self._wakeups = Wakeups(
            store,
            name,
            self.queues,
            listen=listen,
            poll_interval=poll_interval,
            stopping=self._stopping,
            wake=self._wake,
            on_cancel=self._on_cancel,
        )
        self._heartbeat = Heartbeat(
            store,
            self._registration,
            self._wakeups,
            self.stats,
            queue_ids=[b.queue_id for b in bindings],
            interval=heartbeat_interval,
            visibility_timeout=visibility_timeout,
            inflight=lambda: list(self._inflight.values()),
            lost=self._lost_registration,
            limited=self._set_limited,
        )
        #: fires the due ticks of the schedules of the workflows it serves
        self._scheduler = Scheduler(
            store, name, [b.workflow.id for b in bindings if b.workflow is not None]
        )

    def __repr__(self) -> str:
        return f"<Worker {self.name!r} id={self.id} queues={[b.queue for b in self.bindings]}>"

    @property
    def queues(self) -> list[str]:
        """The names of the queues this worker serves, in the order they were bound."""
        return [b.queue for b in self.bindings]

    @property
    def id(self) -> int:
        """The worker row's id (0 until registered)."""
        return self._registration.id

    @property
    def status(self) -> WorkerStatus:
        """The status last written on the worker row."""
        return self._registration.status

    @property
    def pid(self) -> int:
        """The process that registered the row (recorded on it, and part of its fence)."""
        return self._registration.pid

    @property
    def _error(self) -> BaseException | None:
        """What stopped the poll loop for good (see WorkerHealth.error)."""
        return self._claim_faults.error

    # ------------------------------------------------------------ status

    def _current_status(self) -> WorkerStatus | None:
        """What the worker is now: suspended, polling or ready.

        None: a stopped row stays stopped; start() writes the status then.
        """
        if not self._running and self.status is WorkerStatus.STOPPED:
            return None
        if self._gate.suspended:
            return WorkerStatus.SUSPENDED
        return WorkerStatus.POLLING if self._running else WorkerStatus.READY

    async def _set_status(self) -> None:
        """Write what the worker is now on its row.

        Raises ``WorkerNameInUse`` if another registration took the row.
        """
        await self._registration.set_status(self._current_status)

    async def suspend(self) -> None:
        """Stop claiming; keep heartbeating and extending the leases held (``suspended``).

        In-flight handlers finish normally; the worker row's status is ``suspended`` until
        :meth:`resume`. Once this returns no claim is under way or starts — neither the poll
        loop's nor :meth:`dequeue`'s, which returns ``[]`` while suspended::

            await worker.suspend()   # e.g. while a downstream service is down
            ...
            await worker.resume()
        """
        self._gate.suspended = True
        await self._gate.idle()  # a claim already under way finishes first
        await self._set_status()

    async def resume(self) -> None:
        """Claim again after :meth:`suspend`; the status goes back to ``polling``.

        It is ``ready`` if the poll loop is not running. A stopped worker's row stays
        ``stopped``: on a stopped worker, either call only decides how it starts next time.
        """
        self._gate.suspended = False
        await self._set_status()
        self._wake()

    # ------------------------------------------------------------ low-level queue API

    async def dequeue(
        self, batch: int = 1, *, queue: str | None = None, visibility_timeout: float | None = None
    ) -> list[q.Message]:
        """Claim up to ``batch`` ready messages; each is leased to this worker.

        The lease lasts ``visibility_timeout`` seconds (default: the worker's). A claimed
        message whose failed deliveries — expired leases count — reached the queue's
        ``max_deliveries`` is dead-lettered instead of returned, as the handler path does;
        ``[]`` still means nothing was ready. A suspended worker claims nothing.
        """
        if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
            raise ValidationError(f"batch must be a positive int, got {batch!r}", value=batch)
        vt = (
            self.visibility_timeout
            if visibility_timeout is None
            else q.lease_seconds(visibility_timeout, "visibility_timeout")
        )
        binding = self._binding(queue)
        with self._gate.claiming() as allowed:
            if allowed:
                return await self._delivery.dequeue(binding, batch, vt)
        return []

    def _binding(self, queue: str | None) -> _Binding:
        if queue is None:
            return self.bindings[0]
        for b in self.bindings:
            if b.queue == queue:
                return b
        raise ConfigurationError(
            f"worker {self.name!r} does not serve queue {queue!r}: name one of {self.queues!r}, "
            "or create a worker for that queue"
        )

    async def extend(self, msg: q.Message, seconds: float) -> None:
        """Push the lease's end to ``now + seconds``; ``LeaseLost`` if no longer ours.

        ``seconds`` is a number of seconds above zero, or a ``timedelta``.
        """
        await self._leases.extend(msg, seconds)

    async def archive(self, msg: q.Message) -> None:
        """Acknowledge: the message is done."""
        await self._leases.archive(msg)

    async def delete(self, msg: q.Message) -> None:
        """Delete the message outright (not archived); ``LeaseLost`` if no longer ours."""
        await self._leases.delete(msg)

    async def release(self, msg: q.Message, *, delay: float = 0.0) -> None:
        """Give the message back, visible again after ``delay`` seconds (not a failure)."""
        await self._leases.release(msg, delay=delay)

    async def fail(self, msg: q.Message, error: str | None = None, *, delay: float = 0.0) -> bool:
        """Record a failed delivery; returns True if that dead-lettered the message."""
        return await self._leases.fail(msg, error, delay=delay)

    # ------------------------------------------------------------ running

    async def poll_forever(self) -> None:
        """Poll and run handlers until :meth:`stop` (or task cancellation)."""
        await self._run(until_idle=False)

    async def run_until_idle(self, *, timeout: float | None = None) -> None:
        """Process until nothing is ready and nothing is in flight, then return.

        For tests and scripts. Delayed or paused messages are not waited for.
        """
        if timeout is not None:
            timeout = duration_seconds(timeout, "timeout", positive=True)
        async with asyncio.timeout(timeout):
            await self._run(until_idle=True)

    def start(self) -> asyncio.Task[None]:
        """Run :meth:`poll_forever` as a task in the current loop; returns the task."""
        if self._task is None or self._task.done():
            self._stopping.clear()
            self._task = asyncio.create_task(self.poll_forever(), name=f"pgqrs-worker-{self.name}")
        return self._task

    async def stop(self, grace: float = 30.0) -> None:
        """Stop claiming; let in-flight runs finish within ``grace`` seconds, then release the rest.

        Released messages are taken by other workers at once, as are those claimed ahead
        and not started, which are given back as their turn comes instead of run.

        A worker driven by hand (never started) is closed the same way: its leases given
        back, its row marked stopped, its own pool disposed.

        Raises ``WorkerNameInUse`` if the worker had already stopped itself because another
        worker registered its name after judging it dead (a heartbeat that stalled too long),
        and the error that stopped it if it stopped on one it cannot heal (``SchemaMissing``,
        ``AuthenticationFailed``; see ``health().error``). Database faults met while
        stopping are retried a few times, then logged: never raised as driver errors.
        """
        grace = duration_seconds(grace, "grace")
        self._stopping.set()
        if self._waiter is not None:
            self._waiter.wake()
        self._grace = grace
        with translated("stopping the worker"):  # a driver error is never raised raw
            if self._task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            elif not self._running and not self._shut_down:
                # Never started (driven by hand with dequeue() and the lease operations): the
                # poll loop's shutdown has not run, so give back the leases, mark the row
                # stopped and close the worker's own pool here.
                await self._shutdown()

    async def __aenter__(self) -> Worker:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def health(self) -> WorkerHealth:
        """What a readiness probe wants to know: whether the worker is healthy, and if not, why.

        ``healthy`` is False while a database fault is being ridden out (``fault`` says which) and
        after the worker stopped on an error it cannot heal (``error`` says which).
        """
        now = time.monotonic()
        faults = [e.cause for e in (self._claim_faults.episode, self._heartbeat.episode) if e.cause]
        return WorkerHealth(
            name=self.name,
            status=self.status.value,
            running=self._running or (self._task is not None and not self._task.done()),
            in_flight=len(self._inflight),
            last_heartbeat_age=None
            if self.stats.last_heartbeat is None
            else now - self.stats.last_heartbeat,
            last_claim_age=None if self.stats.last_claim is None else now - self.stats.last_claim,
            lag=self.stats.lag,
            errors=self.stats.errors,
            error=None if self._error is None else describe(self._error),
            fault="; ".join(faults) or None,
        )

    async def _run(self, *, until_idle: bool) -> None:
        self._shut_down = False
        self._waiter = Waiter()
        for b in self.bindings:
            HUB.subscribe(self.store.db_key, b.queue, self._waiter)
        self._cancel_waiter = Waiter(self._on_cancel)
        HUB.subscribe(self.store.db_key, CANCEL_CHANNEL, self._cancel_waiter)
        self._running = True
        await self._wakeups.start()
        self._heartbeat_task = asyncio.create_task(
            self._heartbeat.run(), name=f"pgqrs-heartbeat-{self.name}"
        )
        self._scheduler_task = asyncio.create_task(
            self._scheduler.run(), name=f"pgqrs-scheduler-{self.name}"
        )
        self._claim_faults.error = None
        # The status is written first (polling; suspended, if suspend() came first), and
        # again with the next claim while the database refuses it.
        status_due = True
        try:
            while not self._stopping.is_set():
                if status_due and self._gate.suspended:
                    try:
                        await self._set_status()
                        status_due = False
                    except WorkerNameInUse:
                        raise
                    except Exception as error:
                        if await self._claims_failed(error):
                            break
                        continue
                if self._gate.suspended:
                    if until_idle and not self._inflight:
                        return
                    await self._wait_while_suspended()
                    continue
                free = self._free()
                if free <= 0:
                    await self._wait_for_room()
                    continue
                self._waiter.event.clear()
                failure: Exception | None = None
                with self._gate.claiming() as allowed:
                    if not allowed:  # suspended meanwhile
                        continue
                    try:
                        if status_due:
                            await self._set_status()
                            status_due = False
                        claimed = await self._delivery.claim_round(
                            self.bindings, free, self.batch_size
                        )
                    except WorkerNameInUse:
                        raise
                    except Exception as error:
                        failure = error
                if failure is not None:
                    if await self._claims_failed(failure):
                        break
                    continue
                self._claim_faults.episode.recovered()
                if claimed:
                    continue
                if until_idle and not self._inflight:
                    return
                await self._idle_wait()
        finally:
            self._running = False
            await self._shutdown()
        if self._error is not None:
            raise self._error
        if self._registration.taken_over:
            raise WorkerNameInUse(
                f"worker {self.name!r} stopped: another worker registered this name after "
                "judging this one dead (its heartbeat had stalled)",
                worker=self.name,
            )

    async def _claims_failed(self, error: Exception) -> bool:
        """A claim (or the status write before it) failed: True if the loop must end.

        Else it backs off first. See :meth:`~pgqrs_sqla._heartbeat.ClaimFaults.failed`.
        """
        delay = self._claim_faults.failed(error)
        if delay is None:
            return True
        await self._sleep(delay)
        return False

    def _done(self, message_id: int) -> None:
        self._inflight.pop(message_id, None)
        self._room.set()
        if self._waiter is not None:
            self._waiter.event.set()

    def _free(self) -> int:
        """How many messages to claim now (see :class:`~pgqrs_sqla._prefetch.Slots`).

        Up to ``concurrency`` held, and more claimed ahead of the free slots when deliveries
        are quick, up to ``batch_size``; none while some claimed ahead still wait for a slot.
        A limited queue's claim is never ahead of the free slots: its limits count the runs
        a claim starts.
        """
        prefetch = not any(b.limited for b in self.bindings)
        return self._slots.room(len(self._inflight), prefetch=prefetch)

    def _on_cancel(self, payload: str) -> None:
        """A run was cancelled: if it is ours, stop it at its next step boundary."""
        for flight in list(self._inflight.values()):
            if flight.execution is not None and str(flight.execution.run_id) == payload:
                flight.execution.cancel_requested = True

    async def _wait_for_room(self) -> None:
        """Until a delivery ends, the last one claimed ahead starts, or stop()."""
        self._room.clear()
        if self._free() > 0 or self._stopping.is_set():
            return
        room = asyncio.ensure_future(self._room.wait())
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait([room, stop], return_when=asyncio.FIRST_COMPLETED)
        finally:
            room.cancel()
            stop.cancel()

    async def _idle_wait(self) -> None:
        """Until a wake-up, the poll interval, or the end of a full rate window, if sooner."""
        assert self._waiter is not None
        self.stats.idle_waits += 1
        now = time.monotonic()
        closed = [b.closed_until - now for b in self.bindings if b.closed_until > now]
        timeout = min([self.poll_interval, *closed])
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._waiter.event.wait(), timeout)

    def _set_limited(self, queue_ids: set[int]) -> None:
        """The heartbeat read which queues have a limit now: claim those through the limited claim.

        A limit added on a live system takes effect here, at each worker's next heartbeat;
        the values of a limit are read by every limited claim. A full rate window is looked
        at again too (its limit may have changed): one claim per heartbeat at most.
        """
        for binding in self.bindings:
            binding.limited = binding.queue_id in queue_ids
            binding.closed_until = 0.0

    async def _wait_while_suspended(self) -> None:
        """Until resume() or stop(), or an in-flight handler ends: each sets the waiter's event.

        An in-flight handler's end may leave run_until_idle done.
        """
        assert self._waiter is not None
        self._waiter.event.clear()
        if self._gate.suspended and not self._stopping.is_set():
            await self._waiter.event.wait()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    def _wake(self) -> None:
        """Wake the poll loop (new work, a resume, a stop)."""
        if self._waiter is not None:
            self._waiter.wake()

    def _lost_registration(self, inflight: list[_InFlight]) -> None:
        """Another worker took this one's name after judging it dead, and gave back its leases.

        It judged so when this one's heartbeat had stalled past three intervals, and gave back every
        lease of the row: stop claiming, tell the in-flight runs their leases are gone, and leave
        the row alone.
        """
        log.error(
            "worker %s (id %s): another worker registered this name after judging this one "
            "dead; stopping (its leases were given back)",
            self.name,
            self.id,
        )
        self._registration.taken_over = True
        for flight in inflight:
            if flight.execution is not None:
                flight.execution.lease_lost = True
        self._stopping.set()
        self._wake()

    async def _shutdown(self) -> None:
        self._shut_down = True  # begun: stop() must not run it a second time
        # What to give back, by delivery, as it stands now: a handler cancelled below
        # releases its own message and this is the backstop; leases taken with dequeue() are
        # released only here. Fenced by token, so nothing of a worker sharing our id (one
        # that took the name over) is touched.
        leases = {**self._leases.held, **{i: f.message.read_ct for i, f in self._inflight.items()}}
        if self._inflight:
            pending = [f.task for f in self._inflight.values()]
            _done, still = await asyncio.wait(pending, timeout=self._grace)
            for task in still:
                task.cancel()
            if still:
                await asyncio.wait(still)
        for background in (self._heartbeat_task, self._scheduler_task):
            if background is not None:
                background.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await background
        await self._wakeups.stop()
        await self._registration.deregister(leases, self._leases.held.clear)
        if self._close_store:  # our own pool: disposing it is ours to do
            await self.store.engine.dispose()
        log.info("worker %s stopped", self.name)
