"""What a worker factory may return, and who closes what it opened."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

from ..worker import Worker, _when_name_free

#: ``async def make() -> Worker`` for a worker on a store someone else opens and closes
#: (the app's), or a function returning an async context manager that yields the worker
#: and closes, on exit, the store it opened (``@contextlib.asynccontextmanager``).
WorkerFactory = Callable[[], Awaitable[Worker] | contextlib.AbstractAsyncContextManager[Worker]]


async def enter_worker(
    factory: WorkerFactory, stack: contextlib.AsyncExitStack[bool | None]
) -> tuple[Worker, bool]:
    """Call ``factory``; returns the worker and whether the factory was a context manager.

    A context manager is entered on ``stack``, so whatever it opened is closed when the stack
    unwinds (after the worker has stopped).

    A name still held by a worker that may have died (an app restarted right after a
    crash) is waited for, bounded by that worker's heartbeat window, and the factory called
    again: startup does not abort on it. A live holder still wins (``WorkerNameInUse``).
    """

    async def make() -> tuple[Worker, bool]:
        made = factory()
        if isinstance(made, contextlib.AbstractAsyncContextManager):
            return await stack.enter_async_context(made), True
        return await made, False

    return await _when_name_free(make)
