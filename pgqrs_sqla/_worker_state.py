"""What a worker's pieces share: the handler bound to each queue it serves, and its state.

The handlers are resolved against the store when the worker is created; the state is the
deliveries in flight, its counters, and the gate that claims pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from . import queue as q
from ._execution import Execution
from ._limited_claim import limited_queues
from ._typed_hooks import typed_handler
from .errors import PgqrsError, QueueNotFound, ValidationError, WorkflowNotFound, duration_seconds
from .retry import RetryPolicy
from .runs import WorkflowInfo
from .store import Store

Handler = Callable[..., Awaitable[Any]]


@dataclass
class _Binding:
    queue: str
    handler: Callable[..., Awaitable[Any]]
    retry: RetryPolicy | None
    queue_id: int = 0
    workflow: WorkflowInfo | None = None
    #: the queue has a concurrency or rate limit: claims go through ``_limited_claim``
    #: (read at start, and again by each heartbeat)
    limited: bool = False
    #: the rate limit allows no claim before this (``time.monotonic()``)
    closed_until: float = 0.0


@dataclass
class _InFlight:
    message: q.Message
    binding: _Binding
    task: asyncio.Task[None]
    execution: Execution | None = None
    #: local monotonic time until which the lease is surely ours (the claim's, then each
    #: heartbeat's extension): a delivery claimed ahead that waited past it is extended
    #: before it starts
    lease_until: float = float("inf")
    #: the heartbeat found the lease gone: a delivery claimed ahead does not start
    lost: bool = False


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


class ClaimGate:
    """Claims under way (``dequeue()``'s and the poll loop's), and whether claiming is suspended.

    ``suspend()`` waits for the claims under way.
    """

    def __init__(self) -> None:
        self.suspended = False
        self._claims = 0
        self._none = asyncio.Event()
        self._none.set()

    @contextlib.contextmanager
    def claiming(self) -> Iterator[bool]:
        """Mark a claim under way; False if suspended."""
        if self.suspended:
            yield False
            return
        self._claims += 1
        self._none.clear()
        try:
            yield True
        finally:
            self._claims -= 1
            if not self._claims:
                self._none.set()

    async def idle(self) -> None:
        """Until no claim is under way."""
        await self._none.wait()


async def bind(
    store: Store, queues: list[str], handlers: dict[str, tuple[Handler, RetryPolicy | None]]
) -> list[_Binding]:
    """A binding per queue: its handler, and the workflow (or plain queue) of that name."""
    bindings = []
    for name in queues:
        fn, retry = handlers[name]
        binding = _Binding(name, fn, retry)
        try:
            binding.workflow = await store.get_workflow(name)
            binding.queue_id = binding.workflow.queue_id
            binding.handler = typed_handler(fn)  # params and output by its annotations
        except PgqrsError as error:
            if not isinstance(error, QueueNotFound | WorkflowNotFound):
                raise
            binding.queue_id = await store._queue_id(name)
        bindings.append(binding)
    limited = await limited_queues(store, [b.queue_id for b in bindings])
    for binding in bindings:
        binding.limited = binding.queue_id in limited
    return bindings


@dataclass(frozen=True)
class Timing:
    """A worker's checked timing options (seconds)."""

    visibility_timeout: float
    poll_interval: float
    heartbeat_interval: float


def check_options(
    concurrency: object,
    visibility_timeout: object,
    poll_interval: object,
    heartbeat_interval: object | None,
    batch_size: object | None = None,
) -> Timing:
    """``consumer(...).create()``'s options checked; ``ValidationError`` names a wrong one.

    The heartbeat interval defaults to a third of the lease, at most 5 s.
    """
    if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
        raise ValidationError(
            f"concurrency must be an int >= 1, got {concurrency!r}",
            option="concurrency",
            value=concurrency,
        )
    if batch_size is not None and (
        not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1
    ):
        raise ValidationError(
            f"batch_size must be an int >= 1 (or None for the default), got {batch_size!r}",
            option="batch_size",
            value=batch_size,
        )
    vt = duration_seconds(visibility_timeout, "visibility_timeout", positive=True)
    poll = duration_seconds(poll_interval, "poll_interval", positive=True)
    beat = (
        min(5.0, vt / 3)
        if heartbeat_interval is None
        else duration_seconds(heartbeat_interval, "heartbeat_interval", positive=True)
    )
    return Timing(vt, poll, beat)
