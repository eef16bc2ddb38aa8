"""Workers: ``consumer(name, port, queue).handler(fn).create(store)`` and the poll loop.

A worker registers a row, claims messages in batches (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL), runs up to ``concurrency`` handlers at once, and — in a background task that
keeps going while handlers run — heartbeats and extends the leases of what it holds.
Wake-ups come from ``LISTEN/NOTIFY`` on PostgreSQL and in-process notifications; polling
every ``poll_interval`` seconds is the fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import itertools
import os
import random
import socket
import sys
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import and_, exc, exists, func, literal, select, update

from . import queue as q
from ._db import HUB, Waiter, translate, translated
from ._listen import Listener, ListenUnavailable
from ._logging import get_logger, run_id_var, workflow_var
from ._runs_write import dead_run_stmt, hand_back_runs_stmt, start_stmt, start_update
from ._signals import (
    Pause,
    _ConnectionLostSignal,
    _LeaseLostSignal,
    _RetryLater,
    _RunCancelledSignal,
    _StepExhausted,
    _StepPaused,
    _TransitionRefusedSignal,
)
from .codec import check_json
from .context import (
    Execution,
    RunContext,
    StepRecord,
    error_record,
    storable_text,
)
from .dialects import Dialect, aware, utcnow
from .errors import (
    AuthenticationFailed,
    ConfigurationError,
    DatabaseError,
    DatabaseUnavailable,
    HandlerError,
    LeaseLost,
    PgqrsError,
    QueueNotFound,
    SchemaMissing,
    ValidationError,
    WorkerNameInUse,
    WorkflowNotFound,
    duration_seconds,
)
from .models import ArchiveReason, RunStatus, StepStatus, Tables, WorkerStatus
from .runs import CANCEL_CHANNEL, RUN_DONE_CHANNEL, RetryPolicy, WorkflowInfo
from .store import Store

log = get_logger("pgqrs_sqla.worker")

#: How long a stopping worker keeps retrying to give back its leases and mark its row
#: stopped through faults that may heal (seconds, from the first failure).
_DEREGISTER_BUDGET = 10.0
#: Waiting for a worker name (see _when_name_free): how often to look again, and how long
#: past the holder's heartbeat window to keep looking.
_NAME_WAIT_POLL = 0.5
_NAME_WAIT_MARGIN = 1.0

MessageHandler = Callable[[q.Message], Awaitable[Any]]
T = TypeVar("T")


@dataclass
class _Binding:
    queue: str
    handler: Callable[..., Awaitable[Any]]
    retry: RetryPolicy | None
    queue_id: int = 0
    workflow: WorkflowInfo | None = None


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


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _cannot_heal(error: BaseException) -> bool:
    """An error the worker cannot ride out by retrying: the tables are missing, the
    credentials were refused, or it is no database error at all (a bug)."""
    return isinstance(error, SchemaMissing | AuthenticationFailed) or not isinstance(
        error, PgqrsError
    )


class _Episode:
    """A run of failures of one background duty (claiming, heartbeating): logged once at
    WARNING when it begins, with the cause, and at INFO when the duty works again; the
    backoff between tries doubles, with jitter, up to ``cap`` seconds."""

    def __init__(self, worker: str, duty: str, cap: float = 5.0) -> None:
        self.worker, self.duty, self.cap = worker, duty, cap
        self.failures = 0
        self.began = 0.0
        self.cause: str | None = None

    def failed(self, error: BaseException) -> float:
        """Record a failure; returns how long to wait before the next try."""
        self.cause = _describe(error)
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


@dataclass
class _InFlight:
    message: q.Message
    binding: _Binding
    task: asyncio.Task[None]
    execution: Execution | None = None


class ConsumerBuilder:
    """``consumer(name, port, queue, ...)``: say what to run, then ``await .create(store)``."""

    def __init__(self, name: str, port: int | None, queues: tuple[str, ...]) -> None:
        q.validate_name(name, "worker")
        if not queues:
            raise ValidationError("consumer() needs at least one queue or workflow name")
        self.name = name
        self.port = port
        self.queues = [q.validate_name(n) for n in queues]
        self._handlers: dict[str, tuple[Callable[..., Awaitable[Any]], RetryPolicy | None]] = {}

    def handler(
        self,
        fn: Callable[..., Awaitable[Any]],
        *,
        queue: str | None = None,
        retry: RetryPolicy | None = None,
    ) -> ConsumerBuilder:
        """Register ``fn`` for ``queue`` (default: every queue without a handler yet).

        For a workflow, ``async def fn(ctx, params)``; for a plain queue,
        ``async def fn(message)``. ``retry`` overrides the workflow's retry policy.
        """
        if not (inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)):
            raise HandlerError(
                f"handler {getattr(fn, '__qualname__', fn)!r} must be an `async def` function",
                handler=fn,
            )
        targets = (
            [queue] if queue is not None else [n for n in self.queues if n not in self._handlers]
        )
        for name in targets:
            if name not in self.queues:
                raise ConfigurationError(
                    f"{name!r} is not one of this consumer's queues {self.queues}: pass one of "
                    "them as queue=, or add it to consumer(name, port, *queues)"
                )
            self._handlers[name] = (fn, retry)
        return self

    async def create(
        self,
        store: Store,
        *,
        concurrency: int = 1,
        batch_size: int | None = None,
        visibility_timeout: float = 30.0,
        poll_interval: float = 1.0,
        heartbeat_interval: float | None = None,
        listen: bool | None = None,
        hostname: str | None = None,
        own_pool: bool | None = None,
        pool_size: int | None = None,
    ) -> Worker:
        """Register the worker row and return the :class:`Worker` (not yet polling).

        ``own_pool`` (the default, also for ``Store(app_engine)``) gives the worker a
        connection pool of its own of ``pool_size`` (default ``concurrency + 2``), built as
        the app engine's pool is (URL, ``connect_args``, pool events), so jobs cannot starve
        the app of connections; it is disposed when the worker stops. An engine whose pool
        cannot be duplicated (``StaticPool``, in-memory SQLite) is shared by default, and
        ``own_pool=True`` on it raises :class:`ConfigurationError`. ``own_pool=False``
        shares the store's engine.
        """
        missing = [n for n in self.queues if n not in self._handlers]
        if missing:
            raise ConfigurationError(f"no handler for {missing}: call .handler(fn) first")
        if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
            raise ValidationError(
                f"concurrency must be an int >= 1, got {concurrency!r}",
                option="concurrency",
                value=concurrency,
            )
        visibility_timeout = duration_seconds(
            visibility_timeout, "visibility_timeout", positive=True
        )
        poll_interval = duration_seconds(poll_interval, "poll_interval", positive=True)
        if heartbeat_interval is not None:
            heartbeat_interval = duration_seconds(
                heartbeat_interval, "heartbeat_interval", positive=True
            )
        given = store
        if own_pool if own_pool is not None else store._pool_shareable_only() is None:
            store = store.with_own_pool(pool_size or concurrency + 2)
        bindings = []
        try:
            for name in self.queues:
                fn, retry = self._handlers[name]
                binding = _Binding(name, fn, retry)
                try:
                    binding.workflow = await store.get_workflow(name)
                    binding.queue_id = binding.workflow.queue_id
                except PgqrsError as error:
                    if not isinstance(error, QueueNotFound | WorkflowNotFound):
                        raise
                    binding.queue_id = await store.queue_id(name)
                bindings.append(binding)
        except BaseException:
            if store is not given:  # e.g. an unknown queue: do not leak the worker's own pool
                await store.close()
            raise
        worker = Worker(
            store,
            self.name,
            self.port,
            bindings,
            concurrency=concurrency,
            batch_size=batch_size or concurrency,
            visibility_timeout=visibility_timeout,
            poll_interval=poll_interval,
            heartbeat_interval=heartbeat_interval or min(5.0, visibility_timeout / 3),
            listen=store.listen if listen is None else listen,
            hostname=hostname or socket.gethostname(),
        )
        worker._close_store = store is not given
        worker.given_store = given
        try:
            await worker._register()
            # A workflow a trigger created is now served (see Store.unserved_workflows).
            await store._mark_served([b.workflow.name for b in bindings if b.workflow is not None])
        except BaseException:
            if worker._close_store:
                await store.close()
            raise
        return worker


def consumer(name: str, port: int | None, *queues: str) -> ConsumerBuilder:
    """Start building a worker named ``name`` (unique) that serves ``queues``."""
    return ConsumerBuilder(name, port, queues)


@functools.cache
def claim_and_start_stmt(t: Tables, dialect: Dialect, across_priorities: bool = False) -> Any:
    """PostgreSQL: claim a batch and start its runs in one statement (data-modifying CTEs)."""
    claimed = q.claim_stmt(t, dialect, across_priorities).cte("claimed")
    started = start_update(t, t.runs.c.message_id.in_(select(claimed.c.id))).cte("started")
    s = t.steps
    # Whether anything is recorded for the run yet — by an earlier delivery, or by
    # update_step before the first one — so only such runs pay for loading their steps.
    has_steps = exists(select(literal(1)).select_from(s).where(s.c.run_id == started.c.id))
    return select(
        claimed,
        started.c.id.label("run_id"),
        started.c.input,
        started.c.cancel_requested,
        has_steps.label("has_steps"),
        started.c.db_now,
    ).select_from(claimed.outerjoin(started, started.c.message_id == claimed.c.id))


@dataclass(frozen=True)
class _StartedRun:
    id: int
    message_id: int
    input: Any
    cancel_requested: bool
    has_steps: bool = True
    #: the database clock when the claim ran, and the local monotonic time it was sent:
    #: with the message's vt, the lease's deadline (``Execution.note_lease``)
    db_now: Any = None
    sent: float | None = None


@dataclass
class _Stats:
    claimed: int = 0
    completed: int = 0
    errors: int = 0
    lease_lost: int = 0
    #: deliveries whose write the state machine refused while the lease was still held
    refused: int = 0
    last_claim: float | None = None
    last_heartbeat: float | None = None
    lag: float | None = None
    #: times the poll loop found nothing to claim and began waiting for a wake-up or its poll
    idle_waits: int = 0
    started: float = field(default_factory=time.monotonic)


#: The worker rows this process's Worker objects hold, by (database, worker id). A row that
#: names our own pid but is not in here was left by an earlier life of this pid: a container
#: restart runs the worker as pid 1 again.
_LIVE: weakref.WeakValueDictionary[tuple[str, int], Worker] = weakref.WeakValueDictionary()


def _listen_backoff(failures: int) -> float:
    """Seconds before the listener's next attempt: exponential up to 30 s, with jitter so that
    many workers do not reconnect in step."""
    return min(30.0, 0.25 * 2.0 ** (failures - 1)) * random.uniform(0.5, 1.5)


def _first_of(messages: list[q.Message]) -> set[int]:
    """The ids of the messages in their first delivery."""
    return {m.id for m in messages if m.read_ct == 1}


def _pid_running(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (signal 0 tests, delivers nothing).

    A zombie — killed, not yet reaped by its parent or init, which signal 0 still finds —
    is dead. When it cannot tell, it says yes: the worker row is then judged by its
    heartbeat alone.
    """
    if pid <= 0 or sys.platform == "win32":  # Windows' os.kill(pid, 0) would terminate it
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, under another user
        pass
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """Linux: the process has exited and only its entry is left (``/proc/PID/stat`` state
    ``Z``, or ``X`` while it is being reaped). False where there is no procfs."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:  # reaped since the signal: gone
        return bool(os.path.isdir("/proc/self"))
    except OSError:
        return False
    # "pid (comm) S ...": comm may hold spaces and parentheses, so the state follows the last ")".
    state = stat[stat.rfind(b")") + 2 :][:1]
    return state in (b"Z", b"X")


async def _when_name_free(make: Callable[[], Awaitable[T]]) -> T:
    """``await make()`` (which registers a worker); while its name is held by a worker that
    may be dead — its heartbeat window has not passed yet — wait and try again, at most
    until that window (as first seen) has passed, and log that it waits. A live holder
    keeps heartbeating, so it still wins: the ``WorkerNameInUse`` is raised after the wait.

    For the embedded runners and the CLI, where a restart after a crash must not abort
    because the crashed process's row looks alive for a few more seconds.
    """
    deadline: float | None = None
    while True:
        try:
            return await make()
        except WorkerNameInUse as clash:
            stale_in: float | None = getattr(clash, "stale_in", None)
            if stale_in is None:
                raise
            now = time.monotonic()
            if deadline is None:
                deadline = now + stale_in + _NAME_WAIT_MARGIN
                log.warning(
                    "%s; waiting up to %.1fs for that worker to stop or its heartbeat to go "
                    "stale, then taking the name",
                    clash,
                    deadline - now,
                )
            if now >= deadline:
                raise
            await asyncio.sleep(min(_NAME_WAIT_POLL, deadline - now))


class Worker:
    """A registered worker. Run it with :meth:`poll_forever`, :meth:`start` / :meth:`stop`,
    or :meth:`run_until_idle`; or drive it by hand with :meth:`dequeue` and the lease
    operations."""

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
        self.id = 0
        self.status = WorkerStatus.READY
        self.stats = _Stats()
        self._inflight: dict[int, _InFlight] = {}
        self._stopping = asyncio.Event()
        self._waiter: Waiter | None = None
        self._cancel_waiter: Waiter | None = None
        self._task: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._listen_conn: Listener | None = None
        self._listen_task: asyncio.Task[None] | None = None
        self._listen_said = False
        #: failed attempts to (re)open the LISTEN connection, in all
        self._listen_failures = 0
        self._grace = 30.0
        self._close_store = False
        #: the store ``create()`` was given (``store`` may be a pool of the worker's own
        #: made from it); whoever opened it closes it
        self.given_store: Store = store
        self._next_binding = 0
        self._shut_down = False
        self._closers: set[asyncio.Task[None]] = set()
        #: the process that registers the row (recorded on it, and part of its fence)
        self.pid = os.getpid()
        #: leases taken with dequeue() and not yet given up: (message id -> token), so that
        #: shutdown gives back exactly these deliveries, not whatever bears this worker's id
        self._leases: dict[int, int] = {}
        #: claims under way (dequeue() and the poll loop's), which suspend() waits for
        self._claims = 0
        self._no_claims = asyncio.Event()
        self._no_claims.set()
        #: orders status writes: suspend() racing the poll loop's start cannot reorder them
        self._status_lock = asyncio.Lock()
        self._suspended = False
        self._running = False
        #: another registration took this worker's row (its heartbeat found it gone)
        self._taken_over = False
        #: what stopped the poll loop for good (see WorkerHealth.error)
        self._error: BaseException | None = None
        self._claims_episode = _Episode(name, "claims")
        self._beats_episode = _Episode(name, "heartbeats")

    def __repr__(self) -> str:
        return f"<Worker {self.name!r} id={self.id} queues={[b.queue for b in self.bindings]}>"

    @property
    def queues(self) -> list[str]:
        return [b.queue for b in self.bindings]

    # ------------------------------------------------------------ registration

    async def _register(self) -> None:
        w = self.store.tables.workers

        def work(conn: Any) -> int:
            # FOR UPDATE (PostgreSQL; SQLite's write transaction serialises anyway): two
            # workers taking over one stale row queue up here, and the second sees the first.
            row = conn.execute(
                self.store.dialect.lock_for_update(
                    select(
                        w.c.id,
                        w.c.status,
                        w.c.heartbeat_at,
                        w.c.hostname,
                        w.c.pid,
                        w.c.heartbeat_interval,
                        utcnow().label("now"),
                    ).where(w.c.worker_name == self.name)
                )
            ).first()
            values = {
                "hostname": self.hostname,
                "port": self.port,
                "queue_id": self.bindings[0].queue_id,
                "queues": self.queues,
                "status": WorkerStatus.READY.value,
                "started_at": utcnow(),
                "heartbeat_at": utcnow(),
                "stopped_at": None,
                "pid": self.pid,
                "heartbeat_interval": self.heartbeat_interval,
            }
            if row is None:
                nested = conn.begin_nested()
                try:
                    new_id: int = conn.execute(
                        w.insert().values(worker_name=self.name, **values).returning(w.c.id)
                    ).scalar_one()
                    nested.commit()
                    return new_id
                except exc.IntegrityError:
                    nested.rollback()
                    raise WorkerNameInUse(
                        f"worker name {self.name!r} was registered concurrently by another worker; pick "
                        "another name",
                        worker=self.name,
                        stale_in=None,
                    ) from None
            holder = self._live_holder(row)
            if holder is not None:
                interval = row.heartbeat_interval or self.heartbeat_interval
                age = (aware(row.now) - aware(row.heartbeat_at)).total_seconds()  # type: ignore[operator]
                raise WorkerNameInUse(
                    f"worker name {self.name!r} is in use by an active worker ({holder}); "
                    "pick another name or stop that worker",
                    worker=self.name,
                    stale_in=max(0.0, 3 * interval - age),
                )
            conn.execute(update(w).where(w.c.id == row.id).values(**values))
            # A previous life of this name died holding leases: give them back now.
            conn.execute(q.release_dead_worker_stmt(self.store.tables, row.id))
            return int(row.id)

        self.id = await self.store.run(work)
        _LIVE[self.store.db_key, self.id] = self
        await self.store._prune_workers_quietly(self.name)  # rows stopped over a week ago
        log.info("worker %s registered (id %s) for %s", self.name, self.id, self.queues)

    def _live_holder(self, row: Any) -> str | None:
        """Who holds the worker row ``row`` (described), or None if it may be taken over.

        A stopped row is free. A row registered from this host is free at once when its
        process is gone — or when it names our own pid but no Worker of this process holds it
        (a container restarts as pid 1 again) — so "worker-1" restarted after a crash gets
        its name back without waiting. Otherwise the row is live until its heartbeat is
        older than three of the *holder's* heartbeat intervals (ours for rows that do not
        record one): a newcomer with a short interval must not judge a live worker with a
        long one dead.
        """
        if row.status == WorkerStatus.STOPPED.value:
            return None
        if row.hostname == self.hostname and row.pid is not None:
            if row.pid == self.pid:
                if _LIVE.get((self.store.db_key, row.id)) is None:
                    return None
            elif not _pid_running(row.pid):
                return None
        interval = row.heartbeat_interval or self.heartbeat_interval
        age = (aware(row.now) - aware(row.heartbeat_at)).total_seconds()  # type: ignore[operator]
        if age >= 3 * interval:
            return None
        return (
            f"status {row.status}, pid {row.pid} on {row.hostname}, heartbeat {age:.1f}s ago, "
            f"every {interval:g}s"
        )

    def _row_fence(self) -> Any:
        """The worker row as this Worker registered it: a later registration of the same
        name (another process, after judging this one dead) no longer matches."""
        w = self.store.tables.workers
        return and_(w.c.id == self.id, w.c.pid == self.pid, w.c.hostname == self.hostname)

    def _holds_row(self) -> bool:
        """No other Worker of this process registered our row since (the fence's pid and
        hostname cannot tell two Workers of one process apart)."""
        return _LIVE.get((self.store.db_key, self.id)) is self

    async def _set_status(self, status: WorkerStatus | None = None) -> None:
        """Write the worker row's status (default: what the worker is now: suspended,
        polling or ready). Raises ``WorkerNameInUse`` if another registration took the row."""
        w = self.store.tables.workers
        async with self._status_lock:
            if status is None:
                if not self._running and self.status is WorkerStatus.STOPPED:
                    return  # a stopped row stays stopped; start() writes the status then
                status = (
                    WorkerStatus.SUSPENDED
                    if self._suspended
                    else WorkerStatus.POLLING
                    if self._running
                    else WorkerStatus.READY
                )
            values: dict[str, Any] = {"status": status.value, "heartbeat_at": utcnow()}
            if status is WorkerStatus.STOPPED:
                values["stopped_at"] = utcnow()
            row = None
            if self._holds_row():
                async with self.store.autocommit() as conn:
                    row = (
                        await conn.execute(
                            update(w).where(self._row_fence()).values(**values).returning(w.c.id)
                        )
                    ).first()
            if row is None:
                self._taken_over = True
                raise WorkerNameInUse(
                    f"worker {self.name!r} (id {self.id}): another worker registered this name "
                    "after judging this one dead; this one must stop",
                    worker=self.name,
                )
            self.status = status

    async def suspend(self) -> None:
        """Stop claiming; keep heartbeating and extending the leases held (``suspended``).

        In-flight handlers finish normally; the worker row's status is ``suspended`` until
        :meth:`resume`. Once this returns no claim is under way or starts — neither the poll
        loop's nor :meth:`dequeue`'s, which returns ``[]`` while suspended::

            await worker.suspend()   # e.g. while a downstream service is down
            ...
            await worker.resume()
        """
        self._suspended = True
        await self._no_claims.wait()  # a claim already under way finishes first
        await self._set_status()

    async def resume(self) -> None:
        """Claim again after :meth:`suspend`; the status goes back to ``polling``.

        It is ``ready`` if the poll loop is not running. A stopped worker's row stays
        ``stopped``: on a stopped worker, either call only decides how it starts next time.
        """
        self._suspended = False
        await self._set_status()
        if self._waiter is not None:
            self._waiter.wake()

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
        with self._claiming() as allowed:
            while allowed:
                async with self.store.autocommit() as conn:
                    claimed = await self._claim(conn, binding, batch, vt)
                if not claimed:
                    break
                self._leases.update((msg.id, msg.read_ct) for msg in claimed)
                live = await self._bury_exhausted(binding, claimed)
                if live:
                    return live
                # Every one was dead-lettered: claim again, since more may be ready.
        return []

    @contextlib.contextmanager
    def _claiming(self) -> Iterator[bool]:
        """Mark a claim under way, which :meth:`suspend` waits for; False if suspended."""
        if self._suspended:
            yield False
            return
        self._claims += 1
        self._no_claims.clear()
        try:
            yield True
        finally:
            self._claims -= 1
            if not self._claims:
                self._no_claims.set()

    async def _bury_exhausted(
        self, binding: _Binding, messages: list[q.Message]
    ) -> list[q.Message]:
        """Dead-letter the claimed ``messages`` whose failed deliveries reached the queue's
        ``max_deliveries`` (a workflow run ends ``ERROR`` with its message); return the
        others, still leased to this worker.

        An expired lease is counted as a failed delivery by the claim that follows it, so
        exhaustion shows at a claim, and every way of claiming must look. It costs nothing
        for first deliveries and one read of ``max_deliveries`` for redeliveries.
        """
        suspects = [msg for msg in messages if msg.failed_ct > 0]
        if not suspects:
            return messages
        t = self.store.tables
        async with self.store.read() as conn:
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
        async with self.store.begin() as conn:
            for msg in dead:
                reason = q.dead_reason(msg.failed_ct, max_deliveries)
                archive = q.archive_stmt(t, msg, self.id, ArchiveReason.DEAD, reason)
                if (await conn.execute(archive)).first() is None:
                    continue  # the lease is already gone: neither ours to bury nor to return
                buried.append((msg, reason))
                if binding.workflow is not None:
                    last = None if msg.last_error is None else {"message": msg.last_error}
                    await conn.execute(dead_run_stmt(t, msg.id, reason, last))
        for msg in dead:
            self._forget(msg)
        for msg, reason in buried:
            log.error(
                "message %s dead-lettered: %s", msg.id, reason, extra={"queue": binding.queue}
            )
        if buried and binding.workflow is not None:
            self.store.wake(RUN_DONE_CHANNEL)
        gone = {msg.id for msg in dead}
        return [msg for msg in messages if msg.id not in gone]

    def _forget(self, msg: q.Message) -> None:
        """This delivery is no longer a lease of ours (acknowledged, given back, lost)."""
        if self._leases.get(msg.id) == msg.read_ct:
            del self._leases[msg.id]

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

    async def _fenced(self, stmt: Any, msg: q.Message, action: str, *, ends: bool = True) -> Any:
        """Run a lease-fenced statement; ``ends``: on success the lease is no longer ours."""
        try:
            async with self.store.autocommit() as conn:
                row = await q.fenced(conn, stmt, msg, action)
        except LeaseLost:
            self._forget(msg)
            raise
        if ends:
            self._forget(msg)
        return row

    async def extend(self, msg: q.Message, seconds: float) -> None:
        """Push the lease's end to ``now + seconds``; ``LeaseLost`` if no longer ours.

        ``seconds`` is a number of seconds above zero, or a ``timedelta``.
        """
        vt = q.lease_seconds(seconds, "extend() seconds")
        await self._fenced(
            q.extend_stmt(self.store.tables, msg, self.id, vt), msg, "extend", ends=False
        )

    async def archive(self, msg: q.Message) -> None:
        """Acknowledge: the message is done."""
        await self._fenced(q.archive_stmt(self.store.tables, msg, self.id), msg, "archive")

    async def delete(self, msg: q.Message) -> None:
        await self._fenced(q.delete_held_stmt(self.store.tables, msg, self.id), msg, "delete")

    async def release(self, msg: q.Message, *, delay: float = 0.0) -> None:
        """Give the message back, visible again after ``delay`` seconds (not a failure)."""
        await self._fenced(
            q.release_stmt(self.store.tables, msg, self.id, q.seconds(delay)), msg, "release"
        )

    async def fail(self, msg: q.Message, error: str | None = None, *, delay: float = 0.0) -> bool:
        """Record a failed delivery; returns True if that dead-lettered the message."""
        text = None if error is None else storable_text(str(error))  # NUL, lone surrogates
        row = await self._fenced(
            q.fail_stmt(self.store.tables, msg, self.id, q.seconds(delay), text), msg, "fail"
        )
        return bool(row.archive_reason == ArchiveReason.DEAD.value)

    # ------------------------------------------------------------ running

    async def poll_forever(self) -> None:
        """Poll and run handlers until :meth:`stop` (or task cancellation)."""
        await self._run(until_idle=False)

    async def run_until_idle(self, *, timeout: float | None = None) -> None:
        """Process until nothing is ready and nothing is in flight, then return (for tests
        and scripts). Delayed or paused messages are not waited for."""
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
        """Stop claiming; let in-flight runs finish within ``grace`` seconds, then release the
        rest so other workers take them at once.

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
        """What a readiness probe wants to know: ``healthy`` is False while a database
        fault is being ridden out (``fault`` says which) and after the worker stopped on an
        error it cannot heal (``error`` says which)."""
        now = time.monotonic()
        faults = [e.cause for e in (self._claims_episode, self._beats_episode) if e.cause]
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
            error=None if self._error is None else _describe(self._error),
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
        await self._start_listener()
        self._heartbeat_task = asyncio.create_task(
            self._heartbeat_loop(), name=f"pgqrs-heartbeat-{self.name}"
        )
        self._error = None
        # The status is written first (polling; suspended, if suspend() came first), and
        # again with the next claim while the database refuses it.
        status_due = True
        try:
            while not self._stopping.is_set():
                if status_due and self._suspended:
                    try:
                        await self._set_status()
                        status_due = False
                    except WorkerNameInUse:
                        raise
                    except Exception as error:
                        if await self._claims_failed(error):
                            break
                        continue
                if self._suspended:
                    if until_idle and not self._inflight:
                        return
                    await self._wait_while_suspended()
                    continue
                free = self.concurrency - len(self._inflight)
                if free <= 0:
                    await self._wait_for_room()
                    continue
                self._waiter.event.clear()
                failure: Exception | None = None
                with self._claiming() as allowed:
                    if not allowed:  # suspended meanwhile
                        continue
                    try:
                        if status_due:
                            await self._set_status()
                            status_due = False
                        claimed = await self._claim_round(free)
                    except WorkerNameInUse:
                        raise
                    except Exception as error:
                        failure = error
                if failure is not None:
                    if await self._claims_failed(failure):
                        break
                    continue
                self._claims_episode.recovered()
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
        if self._taken_over:
            raise WorkerNameInUse(
                f"worker {self.name!r} stopped: another worker registered this name after "
                "judging this one dead (its heartbeat had stalled)",
                worker=self.name,
            )

    async def _claims_failed(self, error: Exception) -> bool:
        """A claim (or the status write before it) failed: True if the loop must end.

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
            self._error = mapped
            log.error(
                "worker %s: stopping: %s; it claims nothing until restarted",
                self.name,
                _describe(mapped),
                exc_info=mapped,
            )
            return True
        await self._sleep(self._claims_episode.failed(mapped))
        return False

    async def _claim_round(self, free: int) -> int:
        claimed = 0
        # Each round starts at the next queue, so one busy queue cannot take every free slot
        # round after round while another waits.
        start = self._next_binding % len(self.bindings)
        self._next_binding = start + 1
        for binding in self.bindings[start:] + self.bindings[:start]:
            if free <= 0 or self._stopping.is_set():
                break
            batch = min(free, self.batch_size)
            started: list[Any] | None = None
            with translated("claim"):
                async with self.store.autocommit() as conn:
                    # Again here, with the connection in hand: taking it may have waited
                    # (a pool checkout, SQLite's write lock), and a stop() that began
                    # meanwhile must not claim what was triggered after it.
                    if self._stopping.is_set():
                        break
                    if binding.workflow is not None and self.store.dialect.writable_ctes:
                        messages, started = await self._claim_and_start(conn, binding, batch)
                    else:
                        messages = await self._claim(conn, binding, batch, self.visibility_timeout)
            if not messages:
                continue
            if self._stopping.is_set():
                # stop() began while the claim was in flight: its snapshot may postdate a
                # trigger committed after stop(). Hand it all back, as if never claimed.
                await self._hand_back(messages, started)
                break
            self.stats.claimed += len(messages)
            self.stats.last_claim = time.monotonic()
            claimed += len(messages)
            messages = await self._bury_exhausted(binding, messages)
            if not messages:
                continue
            free -= len(messages)
            if binding.workflow is not None:
                kept = {m.id for m in messages}
                if started is not None:
                    started = [row for row in started if row.message_id in kept]
                await self._start_runs(binding, messages, started)
            else:
                self._spawn_batch(binding, messages)
        return claimed

    async def _hand_back(self, messages: list[q.Message], started: list[Any] | None) -> None:
        """Undo a claim that came back after stop() began: the messages visible again with
        their delivery uncounted, and the runs this claim started on their first delivery
        QUEUED again (a redelivered run stays RUNNING, as after a shutdown's release)."""
        t = self.store.tables
        first = [row.id for row in started or () if row.message_id in _first_of(messages)]
        with translated("handing back a claim"):
            async with self.store.begin() as conn:  # lock order: message, then run
                await conn.execute(
                    q.unclaim_many_stmt(t),
                    {"p_leases": [(m.id, m.read_ct) for m in messages], "p_worker_id": self.id},
                )
                if first:
                    await conn.execute(hand_back_runs_stmt(t, first))
        log.info("worker %s: stopping; handed back %d message(s)", self.name, len(messages))

    def _spawn(
        self, binding: _Binding, msg: q.Message, coro: Any, execution: Execution | None = None
    ) -> None:
        task = asyncio.create_task(coro, name=f"pgqrs-{binding.queue}-{msg.id}")
        self._inflight[msg.id] = _InFlight(msg, binding, task, execution)
        task.add_done_callback(lambda _t: self._done(msg.id))

    def _spawn_batch(self, binding: _Binding, messages: list[q.Message]) -> None:
        """One task for a claimed batch of plain messages: handlers run concurrently, and the
        successes are acknowledged together, in one statement."""
        first = messages[0]
        task = asyncio.create_task(
            self._process_messages(binding, messages), name=f"pgqrs-{binding.queue}-{first.id}"
        )
        for msg in messages:
            self._inflight[msg.id] = _InFlight(msg, binding, task)
        ids = [m.id for m in messages]

        def done(_t: asyncio.Task[None]) -> None:
            for message_id in ids:
                self._done(message_id)

        task.add_done_callback(done)

    def _done(self, message_id: int) -> None:
        self._inflight.pop(message_id, None)
        if self._waiter is not None:
            self._waiter.event.set()

    def _on_cancel(self, payload: str) -> None:
        """A run was cancelled: if it is ours, stop it at its next step boundary."""
        for flight in list(self._inflight.values()):
            if flight.execution is not None and str(flight.execution.run_id) == payload:
                flight.execution.cancel_requested = True

    async def _wait_for_room(self) -> None:
        tasks = [f.task for f in self._inflight.values()]
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait([*tasks, stop], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()

    async def _idle_wait(self) -> None:
        assert self._waiter is not None
        self.stats.idle_waits += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._waiter.event.wait(), self.poll_interval)

    async def _wait_while_suspended(self) -> None:
        """Until resume() or stop(), or an in-flight handler ends (which may leave
        run_until_idle done): each sets the waiter's event."""
        assert self._waiter is not None
        self._waiter.event.clear()
        if self._suspended and not self._stopping.is_set():
            await self._waiter.event.wait()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    # ------------------------------------------------------------ plain messages

    async def _process_messages(self, binding: _Binding, messages: list[q.Message]) -> None:
        handled = await asyncio.gather(*(self._process_message(binding, m) for m in messages))
        done = [m for m, ok in zip(messages, handled, strict=True) if ok]
        if not done:
            return
        try:
            async with self.store.autocommit() as conn:
                acked = await q.archive_many(conn, self.store.tables, done, self.id)
        except asyncio.CancelledError:
            for msg in done:
                await self._release_quietly(msg)
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
            await self._release_quietly(msg)
            raise
        except Exception as error:
            self.stats.errors += 1
            log.exception("message %s: handler failed", msg.id, extra=extra)
            policy = binding.retry or RetryPolicy()
            with contextlib.suppress(LeaseLost, PgqrsError):
                await self.fail(
                    msg, f"{type(error).__name__}: {error}", delay=policy.delay(msg.failed_ct + 1)
                )
        return False

    async def _release_quietly(self, msg: q.Message) -> None:
        with contextlib.suppress(Exception):
            await asyncio.shield(self.release(msg))

    # ------------------------------------------------------------ workflow runs

    async def _claim(self, conn: Any, binding: _Binding, batch: int, vt: float) -> list[q.Message]:
        return await q.claim(
            conn,
            self.store.tables,
            binding.queue_id,
            self.id,
            batch=batch,
            vt_seconds=vt,
            second_try=self._may_claim_again,
        )

    def _may_claim_again(self) -> bool:
        """A claim's second try (see :func:`~pgqrs_sqla.queue.claim_rows`): not once stop()
        has begun."""
        return not self._stopping.is_set()

    async def _claim_and_start(
        self, conn: Any, binding: _Binding, batch: int
    ) -> tuple[list[q.Message], list[Any]]:
        """PostgreSQL: claim and mark the runs RUNNING in one statement (data-modifying CTEs)."""
        params = q.claim_params(
            binding.queue_id, self.id, batch=batch, vt_seconds=self.visibility_timeout
        )
        sent = time.monotonic()
        rows = await q.claim_rows(
            conn,
            lambda across: claim_and_start_stmt(self.store.tables, self.store.dialect, across),
            params,
            self._may_claim_again,
        )
        messages = sorted(
            (q.Message.from_row(row) for row in rows), key=lambda m: (-m.priority, m.id)
        )
        runs = [
            _StartedRun(
                row.run_id, row.id, row.input, row.cancel_requested, row.has_steps, row.db_now, sent
            )
            for row in rows
            if row.run_id is not None
        ]
        return messages, runs

    async def _start_runs(
        self, binding: _Binding, messages: list[q.Message], rows: list[Any] | None = None
    ) -> None:
        """Mark claimed runs RUNNING (unless the claim already did) and load the steps that
        earlier deliveries recorded."""
        t = self.store.tables
        s = t.steps
        by_id = {m.id: m for m in messages}
        steps: list[Any] = []
        sent = time.monotonic()
        # On PostgreSQL the claim started the runs and said which have recorded steps: for
        # first deliveries there is nothing to execute here, and no connection to check out.
        # (SQLite's start rows do not say; there the query is a local call.)
        if rows is None or any(row.has_steps for row in rows):
            async with self.store.autocommit() as conn:
                if rows is None:
                    ids = [m.id for m in messages]
                    rows = list((await conn.execute(start_stmt(t), {"p_ids": ids})).all())
                run_ids = [row.id for row in rows if getattr(row, "has_steps", True)]
                if run_ids:
                    steps = list(
                        (
                            await conn.execute(
                                select(
                                    s.c.run_id,
                                    s.c.step_name,
                                    s.c.status,
                                    s.c.output,
                                    s.c.attempts,
                                    s.c.next_delivery,
                                ).where(s.c.run_id.in_(run_ids))
                            )
                        ).all()
                    )
        hold = self._holds_connections()
        started = set()
        assert binding.workflow is not None
        for row in rows:
            msg = by_id[row.message_id]
            started.add(msg.id)
            execution = Execution(
                store=self.store,
                worker_id=self.id,
                message=msg,
                run_id=row.id,
                workflow=binding.queue,
                params=row.input,
                policy=binding.retry or binding.workflow.retry,
                cancel_requested=bool(row.cancel_requested),
                hold_connection=hold,
                lease_seconds=self.visibility_timeout,
            )
            # The claim's vt, against the clock of the statement that started the run.
            execution.note_lease(getattr(row, "sent", None) or sent, msg.vt, row.db_now)
            execution.steps = {
                st.step_name: StepRecord(
                    StepStatus(st.status), st.output, st.attempts, st.next_delivery
                )
                for st in steps
                if st.run_id == row.id
            }
            self._spawn(binding, msg, self._process_run(binding, execution), execution)
        for msg in messages:
            if msg.id not in started:
                # The run already ended (or was never written): nothing to do but ack.
                with contextlib.suppress(LeaseLost):
                    await self.archive(msg)

    def _holds_connections(self) -> bool:
        """Whether each in-flight run may hold one connection for its whole delivery: on
        PostgreSQL, when the worker has a pool of its own (nothing else checks out of it)
        with a connection per run and one to spare for claims and heartbeats."""
        if not (self.store.dialect.autocommit_writes and self._close_store) or (
            self.store._transactions_only()
        ):
            return False  # (a held connection is an autocommit one)
        size = getattr(self.store.engine.sync_engine.pool, "size", None)
        return callable(size) and size() > self.concurrency

    async def _process_run(self, binding: _Binding, x: Execution) -> None:
        # This task's own context: every record logged while the run executes carries it.
        run_id_var.set(x.run_id)
        workflow_var.set(x.workflow)
        try:
            ended = await self._deliver_run(binding, x)
        except DatabaseUnavailable as error:
            # The database went away while the outcome was being recorded: not the run's
            # fault. Abandon the delivery; the run comes back to a worker.
            self.stats.errors += 1
            log.warning("run %s: database unavailable (%s); left for redelivery", x.run_id, error)
            await self._release_quietly(x.message)
            return
        except Exception as error:
            # The database refused to record the outcome (an unstorable value, a delay past
            # what a timestamp holds, ...): the same will happen on every redelivery, so this
            # counts as a failed delivery, and the run dead-letters at max_deliveries.
            self.stats.errors += 1
            log.exception("run %s: could not record the outcome; a failed delivery", x.run_id)
            ended = await self._fail_delivery(binding, x, error)
        finally:
            await x.release_connection()
        if ended:
            self.store.wake(RUN_DONE_CHANNEL)

    async def _fail_delivery(self, binding: _Binding, x: Execution, error: Exception) -> bool:
        """Count a failed delivery of run ``x`` (released after the retry backoff); if that
        reaches ``max_deliveries`` the message is dead-lettered and the run ends ``ERROR``.
        True if the run ended. If even this write fails, the lease expires, which the next
        claim counts as a failed delivery all the same."""
        t = self.store.tables
        record = error_record(error)
        record.pop("traceback", None)
        text = storable_text(f"{record['type']}: {record['message']}")[:2000]
        delay = (binding.retry or x.policy).delay(x.message.failed_ct + 1)
        try:
            async with self.store.begin() as conn:
                row = (await conn.execute(q.fail_stmt(t, x.message, self.id, delay, text))).first()
                dead = row is not None and row.archive_reason == ArchiveReason.DEAD.value
                if dead:
                    failed = x.message.failed_ct + 1
                    reason = f"dead: {failed} failed deliveries, the last: outcome not recorded"
                    await conn.execute(dead_run_stmt(t, x.message.id, reason, record))
        except Exception:
            log.exception("run %s: could not count the failed delivery either", x.run_id)
            return False
        finally:
            self._forget(x.message)
        if dead:
            log.error("run %s dead-lettered: %s", x.run_id, text)
        return dead

    async def _deliver_run(self, binding: _Binding, x: Execution) -> bool:
        """Run the handler for one delivery and record how it ended; True if the run ended."""
        extra: dict[str, Any] = {}
        ended = True
        try:
            if x.cancel_requested:
                raise _RunCancelledSignal()
            output = await binding.handler(RunContext(x), x.params)
            output = check_json(  # the output as stored: what wait_for_run will return
                output,
                what=f"output of workflow {x.workflow!r}",
                max_bytes=self.store.max_payload_bytes,
                default=self.store.json_default,
            )
            if not await x.finish(RunStatus.SUCCESS, output=output):
                raise _LeaseLostSignal()
            self.stats.completed += 1
            log.info("run %s succeeded", x.run_id, extra=extra)
        except (_LeaseLostSignal, LeaseLost):
            ended = False
            self.stats.lease_lost += 1
            log.warning("run %s: lease lost; another worker owns it now", x.run_id, extra=extra)
        except _TransitionRefusedSignal as refused:
            # The lease is ours, but the run or step is in a state this write may not leave
            # (not a lost lease): leave the run as it is; the lease ends on its own.
            ended = False
            self.stats.refused += 1
            log.warning("run %s: %s", x.run_id, refused, extra=extra)
        except (_ConnectionLostSignal, DatabaseUnavailable) as error:
            # Not the run's fault: abandon this delivery; it comes back when the lease ends.
            ended = False
            self.stats.errors += 1
            log.warning("run %s: database unavailable (%s); left for redelivery", x.run_id, error)
            await self._release_quietly(x.message)
        except _RunCancelledSignal:
            await x.finish(RunStatus.CANCELLED)
            log.info("run %s cancelled", x.run_id, extra=extra)
        except _RetryLater as retry:
            ended = False
            write = x.step_upsert(
                self.store.engine.dialect.name,
                retry.step,
                StepStatus.ERROR,
                None,
                retry.error,
                retry.attempts,
                0.0,
            )
            await x.park(RunStatus.RUNNING, retry.delay, write)
        except _StepPaused as pause:
            ended = False
            write = None
            if pause.step is not None:
                write = x.step_upsert(
                    self.store.engine.dialect.name,
                    pause.step,
                    StepStatus.PAUSED,
                    None,
                    None,
                    pause.attempts,
                    0.0,
                )
            if await x.park(RunStatus.PAUSED, pause.seconds, write):
                self.store.wake(RUN_DONE_CHANNEL)
                log.info(
                    "run %s paused at step %s for %.0fs",
                    x.run_id,
                    pause.step,
                    pause.seconds,
                    extra=extra,
                )
            elif await x.park(RunStatus.RUNNING, 0.0):
                # The pause was refused with the lease still ours: update_step recorded the
                # step while its body ran. Hand the run straight back to replay that value.
                log.info("run %s: step %s was recorded meanwhile", x.run_id, pause.step)
        except Pause as pause:  # raised in the handler, outside any step
            ended = False
            await x.park(RunStatus.PAUSED, pause.seconds)
        except _StepExhausted as exhausted:
            self.stats.errors += 1
            await x.finish(RunStatus.ERROR, error=exhausted.error)
            log.error(
                "run %s failed: step %s out of attempts", x.run_id, exhausted.step, extra=extra
            )
        except asyncio.CancelledError:
            ended = False
            await self._release_quietly(x.message)
            raise
        except Exception as error:
            self.stats.errors += 1
            record = error_record(error)
            if x.failed_step is not None and x.failed_step[1] is error:
                record["step"] = x.failed_step[0]
            await x.finish(RunStatus.ERROR, error=record)
            log.error("run %s failed: %s", x.run_id, record["message"], extra=extra)
        return ended

    # ------------------------------------------------------------ background work

    async def _heartbeat_loop(self) -> None:
        """Heartbeat, extend the leases of in-flight messages, and pick up cancellations —
        in its own task, so it keeps going while handlers (and threads) run."""
        w, m, r = self.store.tables.workers, self.store.tables.messages, self.store.tables.runs
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            inflight = list(self._inflight.values())
            try:
                async with self.store.autocommit() as conn:
                    beat = None
                    if self._holds_row():
                        beat = (
                            await conn.execute(
                                update(w)
                                .where(self._row_fence())
                                .values(heartbeat_at=utcnow())
                                .returning(w.c.id)
                            )
                        ).first()
                    if beat is None:
                        self._lost_registration(inflight)
                        return
                    oldest, now = (
                        await conn.execute(
                            select(func.min(m.c.vt), utcnow()).where(
                                m.c.queue_id.in_([b.queue_id for b in self.bindings]),
                                m.c.archived_at.is_(None),
                                m.c.vt <= utcnow(),
                            )
                        )
                    ).one()
                    self.stats.lag = (
                        None if oldest is None else (aware(now) - aware(oldest)).total_seconds()  # type: ignore[operator]
                    )
                    if inflight:
                        # Fenced by token as well as owner: a delivery this worker no longer
                        # holds keeps the vt its new holder gave it.
                        rows = (
                            await conn.execute(
                                q.extend_many_stmt(self.store.tables),
                                {
                                    "p_leases": [
                                        (f.message.id, f.message.read_ct) for f in inflight
                                    ],
                                    "p_worker_id": self.id,
                                    "p_vt": self.visibility_timeout,
                                },
                            )
                        ).all()
                        held = {row.id: row.read_ct for row in rows}
                        runs = [f.execution for f in inflight if f.execution is not None]
                        cancelled: set[int] = set()
                        if runs:
                            cancelled = set(
                                (
                                    await conn.execute(
                                        select(r.c.id).where(
                                            r.c.id.in_([x.run_id for x in runs]),
                                            r.c.cancel_requested.is_(True),
                                        )
                                    )
                                ).scalars()
                            )
                        for f in inflight:
                            if (
                                held.get(f.message.id) != f.message.read_ct
                                and f.execution is not None
                            ):
                                f.execution.lease_lost = True
                            if f.execution is not None and f.execution.run_id in cancelled:
                                f.execution.cancel_requested = True
                self.stats.last_heartbeat = time.monotonic()
                self._beats_episode.recovered()
            except Exception as error:  # ridden out: the loop decides what ends the worker
                self.stats.errors += 1
                self._beats_episode.failed(translate(error, "heartbeat"))
            if self._listen_conn is None and self.listen and self.store.dialect.supports_listen:
                await self._start_listener()

    def _lost_registration(self, inflight: list[_InFlight]) -> None:
        """Another worker registered this name after judging this one dead (its heartbeat
        had stalled past three intervals), and gave back every lease of the row: stop
        claiming, tell the in-flight runs their leases are gone, and leave the row alone."""
        log.error(
            "worker %s (id %s): another worker registered this name after judging this one "
            "dead; stopping (its leases were given back)",
            self.name,
            self.id,
        )
        self._taken_over = True
        for flight in inflight:
            if flight.execution is not None:
                flight.execution.lease_lost = True
        self._stopping.set()
        if self._waiter is not None:
            self._waiter.wake()

    async def _start_listener(self) -> None:
        """Start the wake-up path and say which it is (INFO; WARNING when LISTEN cannot work).

        On PostgreSQL a task of its own keeps a LISTEN connection up (:meth:`_listen_loop`);
        this returns once its first attempt is over, so a NOTIFY sent after the worker has
        started is heard. Once per run: a second call (the heartbeat's) does nothing.
        """
        if self._listen_task is not None:
            return
        if not (self.listen and self.store.dialect.supports_listen):
            why = (
                "listen=False"
                if self.store.dialect.supports_listen
                else "SQLite has no LISTEN; enqueues in this process wake it at once"
            )
            log.info(
                "worker %s: wake-ups: polling every %gs (%s)", self.name, self.poll_interval, why
            )
            return
        self._listen_said = False
        first: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._listen_task = asyncio.create_task(
            self._listen_loop(first), name=f"pgqrs-listen-{self.name}"
        )
        await asyncio.wait([first, self._listen_task], return_when=asyncio.FIRST_COMPLETED)

    async def _listen_loop(self, first: asyncio.Future[None]) -> None:
        """Keep a LISTEN connection up: on a failure or a lost connection, WARNING once per
        episode, poll meanwhile, reconnect with jittered exponential backoff, INFO when it is
        back (and claim at once: what was notified meanwhile went unheard). Ends, leaving the
        worker to poll, when LISTEN cannot work here (a transaction pooler)."""
        failures = 0
        listener: Listener | None = None
        try:
            while not self._stopping.is_set():
                try:
                    pooled = await self.store._behind_pooler()
                    if pooled and not first.done():
                        # Its test NOTIFY takes a while to give up on: poll meanwhile.
                        first.set_result(None)
                    listener = await self.store.dialect.open_listener(
                        self.store.engine,
                        [q.NOTIFY_CHANNEL, CANCEL_CHANNEL],
                        self._on_notification,
                        pooled=pooled,
                        notify=self._notify,
                    )
                except ListenUnavailable as why:
                    log.warning(
                        "worker %s: wake-ups: polling every %gs, because LISTEN cannot work "
                        "here: %s",
                        self.name,
                        self.poll_interval,
                        why,
                    )
                    return
                except Exception as error:  # driver errors too: this task must survive them
                    failures += 1
                    self._listen_failures += 1
                    if failures == 1:
                        log.warning(
                            "worker %s: LISTEN connection failed (%s); polling every %gs "
                            "meanwhile, reconnecting",
                            self.name,
                            translate(error, "LISTEN"),
                            self.poll_interval,
                        )
                    if not first.done():
                        first.set_result(None)
                    await self._sleep(_listen_backoff(failures))
                    continue
                self._listen_conn = listener
                if failures:
                    log.info(
                        "worker %s: LISTEN connection back (via %s); wake-ups resumed",
                        self.name,
                        listener.driver,
                    )
                    if self._waiter is not None:
                        self._waiter.wake()
                elif not self._listen_said:
                    self._listen_said = True
                    log.info(
                        "worker %s: wake-ups: LISTEN via %s, polling every %gs as a fallback",
                        self.name,
                        listener.driver,
                        self.poll_interval,
                    )
                failures = 0
                if not first.done():
                    first.set_result(None)
                stop: asyncio.Future[Any] = asyncio.ensure_future(self._stopping.wait())
                lost: asyncio.Future[Any] = listener.lost
                try:
                    await asyncio.wait([lost, stop], return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stop.cancel()
                if self._stopping.is_set():
                    return
                self._listener_lost()
                await listener.close()
                listener = None
                failures = 1
                await self._sleep(_listen_backoff(failures))
        finally:
            self._listen_conn = None
            if not first.done():
                first.set_result(None)
            if listener is not None:
                await listener.close()

    def _on_notification(self, channel: str, payload: str) -> None:
        if channel == CANCEL_CHANNEL:
            self._on_cancel(payload)
        elif payload in self.queues and self._waiter is not None:
            self._waiter.wake()

    async def _notify(self, channel: str, payload: str) -> None:
        """NOTIFY from a connection other than the listener's (its test notification)."""
        async with self.store.autocommit() as conn:
            notify = self.store.dialect.notify(channel, payload)
            if notify is not None:
                await conn.execute(select(notify))

    def _listener_lost(self) -> None:
        log.warning(
            "worker %s: LISTEN connection lost; polling every %gs until it is back",
            self.name,
            self.poll_interval,
        )
        self._listen_conn = None

    async def _close_quietly(self, conn: Any) -> None:
        with contextlib.suppress(Exception):
            await conn.invalidate()
        with contextlib.suppress(Exception):
            await conn.close()

    async def _deregister(self, leases: dict[int, int]) -> None:
        """Give back ``leases`` and mark the row stopped; a fault that may heal (SQLite busy
        under load, a cancelled statement) is retried a few times, within
        ``_DEREGISTER_BUDGET`` seconds. What still fails is logged, never raised: the leases
        then expire and the row goes stale on their own."""
        first_failure: float | None = None
        for attempt in itertools.count():
            try:
                if leases:
                    # Fenced by token: a retry after a release that went through is a no-op.
                    async with self.store.autocommit() as conn:
                        await conn.execute(
                            q.release_many_stmt(self.store.tables),
                            {"p_leases": list(leases.items()), "p_worker_id": self.id},
                        )
                    leases = {}
                self._leases.clear()
                if not self._taken_over:  # otherwise the row is the new holder's
                    await self._set_status(WorkerStatus.STOPPED)
                return
            except Exception as error:
                mapped = translate(error, "stopping the worker")
                now = time.monotonic()
                first_failure = now if first_failure is None else first_failure
                if (
                    isinstance(mapped, DatabaseError)
                    and mapped.transient
                    and now - first_failure < _DEREGISTER_BUDGET
                ):
                    delay = min(1.0, 0.1 * 2.0**attempt) * random.uniform(0.5, 1.0)
                    log.warning(
                        "worker %s: deregistering failed (%s); retrying in %.1fs",
                        self.name,
                        _describe(mapped),
                        delay,
                    )
                    await asyncio.sleep(delay)
                    continue
                log.warning(
                    "worker %s: could not deregister cleanly (%s); its leases expire and its "
                    "row goes stale on their own",
                    self.name,
                    _describe(mapped),
                )
                return

    async def _shutdown(self) -> None:
        self._shut_down = True  # begun: stop() must not run it a second time
        # What to give back, by delivery, as it stands now: a handler cancelled below
        # releases its own message and this is the backstop; leases taken with dequeue() are
        # released only here. Fenced by token, so nothing of a worker sharing our id (one
        # that took the name over) is touched.
        leases = {**self._leases, **{i: f.message.read_ct for i, f in self._inflight.items()}}
        if self._inflight:
            pending = [f.task for f in self._inflight.values()]
            _done, still = await asyncio.wait(pending, timeout=self._grace)
            for task in still:
                task.cancel()
            if still:
                await asyncio.wait(still)
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat_task
        if self._listen_task is not None:
            task, self._listen_task = self._listen_task, None
            task.cancel()  # its own cleanup closes the LISTEN connection
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._deregister(leases)
        if self._close_store:  # our own pool: disposing it is ours to do
            await self.store.engine.dispose()
        log.info("worker %s stopped", self.name)
