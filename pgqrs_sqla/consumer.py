"""``consumer(name, port, queue).handler(fn).create(store)``: say what a worker runs, then make it.

:class:`ConsumerBuilder` collects the handlers, checks the options and resolves each queue or
workflow against the store, then registers the worker's row and returns the
:class:`~pgqrs_sqla.worker.Worker` (not yet polling).
"""

from __future__ import annotations

import inspect
import socket
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from . import queue as q
from ._prefetch import DEFAULT_BATCH_SIZE
from ._schedules import ScheduleSpec
from ._worker_state import Handler, bind, check_options
from .errors import ConfigurationError, HandlerError, ValidationError
from .retry import RetryPolicy
from .store import Store
from .worker import Worker


class ConsumerBuilder:
    """``consumer(name, port, queue, ...)``: say what to run, then ``await .create(store)``."""

    def __init__(self, name: str, port: int | None, queues: tuple[str, ...]) -> None:
        q.validate_name(name, "worker")
        if not queues:
            raise ValidationError("consumer() needs at least one queue or workflow name")
        self.name = name
        self.port = port
        self.queues = [q.validate_name(n) for n in queues]
        self._handlers: dict[str, tuple[Handler, RetryPolicy | None]] = {}
        #: schedules declared in code; reconciled at create() when ``reconcile`` is set
        self.schedules: dict[str, ScheduleSpec] = {}
        self.reconcile = False

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

    def schedule(
        self,
        name: str,
        *,
        workflow: str | None = None,
        cron: str | None = None,
        every: float | timedelta | None = None,
        params: Any = None,
        timezone: str = "UTC",
        catch_up: str = "latest",
    ) -> ConsumerBuilder:
        """Declare schedule ``name`` of ``workflow`` (default: this consumer's first queue).

        The options are :meth:`Store.create_schedule`'s, checked here. At :meth:`create` the
        worker reconciles: each declared schedule is created or updated, and a schedule
        declared in code earlier for one of this worker's workflows and no longer declared is
        deleted (schedules made with ``create_schedule`` are never deleted).
        """
        target = workflow if workflow is not None else self.queues[0]
        if target not in self.queues:
            raise ConfigurationError(
                f"schedule {name!r}: {target!r} is not one of this consumer's workflows "
                f"{self.queues}: declare it on a consumer that serves it"
            )
        if name in self.schedules:
            raise ConfigurationError(f"schedule {name!r} is declared twice: declare it once")
        self.schedules[name] = ScheduleSpec.of(
            name,
            target,
            cron=cron,
            every=every,
            params=params,
            timezone=timezone,
            catch_up=catch_up,
        )
        self.reconcile = True
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

        ``concurrency`` handlers run at once (default 1: one at a time, in claim order).
        ``batch_size`` is the most messages one claim takes and the most the worker holds,
        running or claimed ahead waiting for a slot (default ``max(concurrency, 50)``): while
        handlers are quick the worker claims ahead of its free slots, enough to keep them busy
        for about 0.1 s, so a claim and an acknowledgement each serve many messages; while
        they are slow it claims only for its free slots. A message claimed ahead keeps its
        lease (the heartbeat extends it) and is checked before it starts; ``stop()`` gives the
        ones not started back at once, and a crashed worker's come back when their leases
        expire (``visibility_timeout``). ``batch_size=1`` claims one message at a time.

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
        timing = check_options(
            concurrency, visibility_timeout, poll_interval, heartbeat_interval, batch_size
        )
        given = store
        if own_pool if own_pool is not None else store._pool_shareable_only() is None:
            store = store.with_own_pool(pool_size or concurrency + 2)
        try:
            bindings = await bind(store, self.queues, self._handlers)
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
            batch_size=max(concurrency, DEFAULT_BATCH_SIZE) if batch_size is None else batch_size,
            visibility_timeout=timing.visibility_timeout,
            poll_interval=timing.poll_interval,
            heartbeat_interval=timing.heartbeat_interval,
            listen=store.listen if listen is None else listen,
            hostname=hostname or socket.gethostname(),
            own_pool=store is not given,
        )
        worker.given_store = given
        try:
            await worker._registration.register()
            # A workflow a trigger created is now served (see Store.unserved_workflows).
            served = [b.workflow.name for b in bindings if b.workflow is not None]
            await store._mark_served(served)
            if self.reconcile:  # a deploy's schedules take effect as its workers start
                await store._reconcile_schedules(served, list(self.schedules.values()))
        except BaseException:
            if worker._close_store:
                await store.close()
            raise
        return worker


def consumer(name: str, port: int | None, *queues: str) -> ConsumerBuilder:
    """Start building a worker named ``name`` (unique) that serves ``queues``."""
    return ConsumerBuilder(name, port, queues)
