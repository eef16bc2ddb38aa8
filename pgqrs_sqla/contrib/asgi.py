"""Run a worker for the lifetime of an ASGI app — FastAPI, Starlette, Litestar — without
importing any of them.

With a ``lifespan=`` parameter (Starlette, FastAPI)::

    app = Starlette(routes=..., lifespan=worker_lifespan(make_worker, grace=10))

As ASGI middleware, for apps without one::

    app = WorkerMiddleware(app, make_worker)

``make_worker`` is an async function returning a :class:`~pgqrs_sqla.Worker` (not started):
for example ``lambda: registry.create_worker(store, "web-1")``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from ..worker import Worker

WorkerFactory = Callable[[], Awaitable[Worker]]
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@contextlib.asynccontextmanager
async def running_worker(factory: WorkerFactory, *, grace: float = 30.0) -> AsyncIterator[Worker]:
    """Create the worker, run it as a task in this loop, and stop it gracefully on exit."""
    worker = await factory()
    worker.start()
    try:
        yield worker
    finally:
        await worker.stop(grace=grace)


def worker_lifespan(
    factory: WorkerFactory, *, grace: float = 30.0, state_key: str = "pgqrs_worker"
) -> Callable[[Any], contextlib.AbstractAsyncContextManager[dict[str, Worker]]]:
    """A ``lifespan`` for Starlette / FastAPI: the worker runs while the app serves, and is
    available to handlers as ``request.state.<state_key>`` (e.g. for a health endpoint)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[dict[str, Worker]]:
        async with running_worker(factory, grace=grace) as worker:
            yield {state_key: worker}

    return lifespan


class WorkerMiddleware:
    """ASGI middleware that starts the worker on ``lifespan.startup`` and stops it on
    ``lifespan.shutdown``; every other scope passes straight through."""

    def __init__(self, app: ASGIApp, factory: WorkerFactory, *, grace: float = 30.0) -> None:
        self.app = app
        self.factory = factory
        self.grace = grace
        self.worker: Worker | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def wrapped_receive() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.worker = await self.factory()
                self.worker.start()
            elif message["type"] == "lifespan.shutdown" and self.worker is not None:
                await self.worker.stop(grace=self.grace)
            return message

        await self.app(scope, wrapped_receive, send)
