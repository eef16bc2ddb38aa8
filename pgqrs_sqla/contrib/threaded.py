"""Run a worker in a thread of its own, for sync apps (Flask, Django views, scripts).

    runner = ThreadedWorker(lambda: registry.create_worker(store_factory(), "flask-1"))
    runner.start()          # returns once the worker is registered
    ...
    runner.stop(grace=10)   # in-flight runs finish (or are released), then the thread ends

The worker gets its own event loop in that thread, so make its Store inside the factory
(``await pgqrs_sqla.connect(url)``); it is closed when the thread ends.
Triggers from the app's sync ``Session`` use ``workflow(...).trigger(...).execute_sync``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable
from types import TracebackType

from ..worker import Worker

WorkerFactory = Callable[[], Awaitable[Worker]]


class ThreadedWorker:
    """A worker running in a daemon thread with its own event loop."""

    def __init__(self, factory: WorkerFactory, *, name: str = "pgqrs-worker") -> None:
        self.factory = factory
        self.name = name
        self.worker: Worker | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready: concurrent.futures.Future[Worker] = concurrent.futures.Future()

    def start(self, timeout: float = 30.0) -> Worker:
        """Start the thread; returns the registered worker (re-raises a factory error)."""
        if self._thread is not None:
            raise RuntimeError("this ThreadedWorker was already started")
        self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)
        self._thread.start()
        self.worker = self._ready.result(timeout)
        return self.worker

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            worker = await self.factory()
        except BaseException as error:
            self._ready.set_exception(error)
            return
        self._ready.set_result(worker)
        try:
            await worker.poll_forever()
        finally:
            # The store was made in this thread's loop and cannot outlive it.
            await worker.store.close()

    def stop(self, grace: float = 30.0, timeout: float | None = None) -> None:
        """Stop claiming, let in-flight runs finish within ``grace``, release the rest, and
        wait for the thread to end."""
        if self._loop is not None and self.worker is not None and not self._loop.is_closed():
            future = asyncio.run_coroutine_threadsafe(self.worker.stop(grace=grace), self._loop)
            future.result(timeout if timeout is not None else grace + 30)
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> ThreadedWorker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
