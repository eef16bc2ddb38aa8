"""A registry of workflow and queue handlers: what an app runs, in one importable place.

    registry = WorkflowRegistry()

    @registry.workflow("fulfil_order", retry=RetryPolicy(max_attempts=3))
    async def fulfil_order(ctx, params): ...

    @registry.queue("emails")
    async def send_email(message): ...

    worker = await registry.create_worker(store, "worker-1", concurrency=4)

The CLI runs one with ``pgqrs-sqla worker myapp.jobs:registry``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

from ._limits import Limit, RateLimitOption, limit_columns
from ._schedules import ScheduleSpec
from .consumer import consumer
from .errors import ConfigurationError
from .queue import validate_name
from .runs import RetryPolicy
from .store import Store
from .worker import Worker

H = TypeVar("H", bound=Callable[..., Awaitable[Any]])


@dataclass(frozen=True)
class _Entry:
    handler: Callable[..., Awaitable[Any]]
    retry: RetryPolicy | None
    workflow: bool
    #: the limits declared with it (``create_workflow``'s / ``create_queue``'s options)
    limits: dict[str, Any] = field(default_factory=dict)


def _limits(*, rate: RateLimitOption, **counts: Limit) -> dict[str, Any]:
    """The limit options given (None left out), checked now rather than at a worker's start."""
    given: dict[str, Any] = {k: v for k, v in counts.items() if v is not None}
    if rate is not None:
        given["rate_limit"] = rate
    limit_columns(**given)
    return given


class WorkflowRegistry:
    """Handlers by workflow / queue name; builds workers that serve them."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        #: schedules by name: (workflow, create_schedule's options)
        self._schedules: dict[str, tuple[str, dict[str, Any]]] = {}

    def _add(
        self,
        name: str,
        handler: H,
        retry: RetryPolicy | None,
        workflow: bool,
        limits: dict[str, Any],
    ) -> H:
        validate_name(name, "workflow" if workflow else "queue")
        if name in self._entries:
            raise ConfigurationError(
                f"{name!r} is registered twice: register each workflow or queue once (one "
                "handler per name), or give the second one another name"
            )
        self._entries[name] = _Entry(handler, retry, workflow, limits)
        return handler

    def workflow(
        self,
        name: str,
        *,
        retry: RetryPolicy | None = None,
        concurrency: Limit = None,
        key_concurrency: Limit = None,
        rate_limit: RateLimitOption = None,
    ) -> Callable[[H], H]:
        """Decorator: ``async def handler(ctx, params)`` runs workflow ``name``.

        The limits are :meth:`Store.create_workflow`'s, checked here and set by every worker
        this registry makes, at its start: a deploy that changes one changes it for every
        worker (``UNLIMITED`` removes one; an option left out keeps what is set).
        """
        limits = _limits(concurrency=concurrency, key_concurrency=key_concurrency, rate=rate_limit)
        return lambda handler: self._add(name, handler, retry, True, limits)

    def queue(
        self,
        name: str,
        *,
        retry: RetryPolicy | None = None,
        concurrency: Limit = None,
        rate_limit: RateLimitOption = None,
    ) -> Callable[[H], H]:
        """Decorator: ``async def handler(message)`` consumes plain queue ``name``.

        Its limits as :meth:`workflow`'s, for :meth:`Store.create_queue`.
        """
        limits = _limits(concurrency=concurrency, rate=rate_limit)
        return lambda handler: self._add(name, handler, retry, False, limits)

    def add_workflow(
        self,
        name: str,
        handler: H,
        *,
        retry: RetryPolicy | None = None,
        concurrency: Limit = None,
        key_concurrency: Limit = None,
        rate_limit: RateLimitOption = None,
    ) -> H:
        """Register ``handler`` for workflow ``name``, like the :meth:`workflow` decorator.

        ``handler`` is ``async def handler(ctx, params)``; it is returned. A name registered twice
        is a :class:`~pgqrs_sqla.errors.ConfigurationError`.
        """
        limits = _limits(concurrency=concurrency, key_concurrency=key_concurrency, rate=rate_limit)
        return self._add(name, handler, retry, True, limits)

    def schedule(
        self,
        name: str,
        workflow: str,
        *,
        cron: str | None = None,
        every: float | timedelta | None = None,
        params: Any = None,
        timezone: str = "UTC",
        catch_up: str = "latest",
    ) -> None:
        """Declare schedule ``name``: ``workflow`` triggered on ``cron`` or ``every`` N seconds.

        The options are :meth:`Store.create_schedule`'s, checked here. A worker this registry
        makes reconciles at start: the declared schedules of the workflows it serves are
        created or updated, and one declared before and no longer is deleted (schedules made
        with ``create_schedule`` are never deleted).
        """
        if name in self._schedules:
            raise ConfigurationError(f"schedule {name!r} is declared twice: declare it once")
        options = {
            "cron": cron,
            "every": every,
            "params": params,
            "timezone": timezone,
            "catch_up": catch_up,
        }
        ScheduleSpec.of(name, workflow, **options)  # refused now, not at a worker's start
        self._schedules[name] = (workflow, options)

    @property
    def names(self) -> list[str]:
        """The registered workflow and queue names, in the order they were registered."""
        return list(self._entries)

    async def setup(self, store: Store, names: Iterable[str] | None = None) -> None:
        """Create the workflows and queues (idempotent)."""
        for name in names if names is not None else self._entries:
            entry = self._entries[name]
            if entry.workflow:
                await store.create_workflow(name, retry=entry.retry, **entry.limits)
            else:
                await store.create_queue(name, **entry.limits)

    async def create_worker(
        self,
        store: Store,
        name: str,
        port: int | None = None,
        *,
        queues: Iterable[str] | None = None,
        **options: Any,
    ) -> Worker:
        """Set up and register a worker serving ``queues`` (default: everything registered).

        ``options`` go to :meth:`ConsumerBuilder.create` (concurrency, visibility_timeout...).
        """
        chosen = list(queues) if queues is not None else self.names
        unknown = [n for n in chosen if n not in self._entries]
        if unknown or not chosen:
            raise ConfigurationError(
                f"unknown queue(s) {unknown}; this registry has {self.names}: pass queues= from "
                "those, or register the missing ones first"
                if unknown
                else "the registry is empty: register a workflow or queue first"
            )
        await self.setup(store, chosen)
        builder = consumer(name, port, *chosen)
        for queue in chosen:
            entry = self._entries[queue]
            builder.handler(entry.handler, queue=queue, retry=entry.retry)
        for schedule, (workflow, schedule_options) in self._schedules.items():
            if workflow in chosen:
                builder.schedule(schedule, workflow=workflow, **schedule_options)
        builder.reconcile = True  # the registry is the code's whole say
        return await builder.create(store, **options)
