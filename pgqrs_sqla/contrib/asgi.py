"""Run a worker for an ASGI app's lifetime — FastAPI, Starlette, Litestar — without importing them.

With a ``lifespan=`` parameter (Starlette, FastAPI)::

    app = Starlette(routes=..., lifespan=worker_lifespan(make_worker, grace=10))

As ASGI middleware, for apps without one::

    app = WorkerMiddleware(app, make_worker)

``make_worker`` is either an async function returning a :class:`~pgqrs_sqla.Worker` (not
started) on a store the app opens and closes itself, for example
``lambda: registry.create_worker(store, "web-1")``; or, when the factory opens a store of
its own, an ``@contextlib.asynccontextmanager`` that opens it, yields the worker and closes
the store: it is exited after the worker has stopped (whoever opens a store closes it)::

    @contextlib.asynccontextmanager
    async def make_worker():
        async with await pgqrs.connect(url) as store:
            yield await registry.create_worker(store, "web-1")

A worker's own pool (``own_pool=True``, the default unless the engine's pool cannot be
duplicated: ``StaticPool``, in-memory SQLite) is
the worker's to close, and it does so when it stops.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from ..worker import Worker
from ._factory import WorkerFactory, enter_worker

__all__ = ["WorkerFactory", "WorkerMiddleware", "running_worker", "worker_lifespan"]
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@contextlib.asynccontextmanager
async def running_worker(factory: WorkerFactory, *, grace: float = 30.0) -> AsyncIterator[Worker]:
    """Create the worker, run it as a task in this loop, and stop it gracefully on exit.

    Then the factory's context manager is exited, if it returned one.
    """
    async with contextlib.AsyncExitStack() as stack:
        worker, _ = await enter_worker(factory, stack)
        worker.start()
        try:
            yield worker
        finally:
            await worker.stop(grace=grace)


def worker_lifespan(
    factory: WorkerFactory, *, grace: float = 30.0, state_key: str = "pgqrs_worker"
) -> Callable[[Any], contextlib.AbstractAsyncContextManager[dict[str, Worker]]]:
    """A ``lifespan`` for Starlette / FastAPI: the worker runs while the app serves.

    It is available to handlers as ``request.state.<state_key>`` (e.g. for a health endpoint).
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[dict[str, Worker]]:
        async with running_worker(factory, grace=grace) as worker:
            yield {state_key: worker}

    return lifespan


class WorkerMiddleware:
    """ASGI middleware that runs the worker from ``lifespan.startup`` to ``lifespan.shutdown``.

    Every other scope passes straight through.
    """

    def __init__(self, app: ASGIApp, factory: WorkerFactory, *, grace: float = 30.0) -> None:
        self.app = app
        self.factory = factory
        self.grace = grace
        self.worker: Worker | None = None
        self._stack: contextlib.AsyncExitStack[bool | None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI scope: the lifespan runs the worker; the rest goes to the app."""
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def wrapped_receive() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._stack = contextlib.AsyncExitStack()
                try:
                    self.worker, _ = await enter_worker(self.factory, self._stack)
                except BaseException:
                    await self._close()
                    raise
                self.worker.start()
            elif message["type"] == "lifespan.shutdown":
                await self._close()
            return message

        try:
            await self.app(scope, wrapped_receive, send)
        finally:
            await self._close()  # the app ended its lifespan without a shutdown message

    async def _close(self) -> None:
        stack, self._stack = self._stack, None
        if stack is None:
            return
        try:
            if self.worker is not None:
                await self.worker.stop(grace=self.grace)
        finally:
            await stack.aclose()
