"""Run a worker in a thread of its own, for sync apps (Flask, Django views, scripts).

    @contextlib.asynccontextmanager
    async def make_worker():
        async with await pgqrs_sqla.connect(url) as store:  # in the thread's own loop
            yield await registry.create_worker(store, "flask-1")

    runner = ThreadedWorker(make_worker)
    runner.start()          # returns once the worker is registered
    ...
    runner.stop(grace=10)   # in-flight runs finish (or are released), then the thread ends

The worker gets its own event loop in that thread, so its Store is made inside the factory:
as an async context manager, the factory opens the store and closes it, after the worker
has stopped, before the thread ends. A factory may also be an async function returning the
worker; then the thread closes the store the factory gave the worker
(``worker.given_store``) when it ends.
Triggers from the app's sync ``Session`` use ``workflow(...).trigger(...).execute_sync``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from types import TracebackType

from ..worker import Worker, WorkerHealth
from ._factory import WorkerFactory, enter_worker

__all__ = ["ThreadedWorker", "WorkerFactory"]


class ThreadedWorker:
    """A worker running in a daemon thread with its own event loop."""

    def __init__(self, factory: WorkerFactory, *, name: str = "pgqrs-worker") -> None:
        self.factory = factory
        self.name = name
        self.worker: Worker | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready: concurrent.futures.Future[Worker] = concurrent.futures.Future()
        #: what ended the worker's loop, if it ended on an error (re-raised by stop / join)
        self.error: BaseException | None = None

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
        async with contextlib.AsyncExitStack() as stack:  # closes what the factory opened
            try:
                worker, managed = await enter_worker(self.factory, stack)
            except BaseException as error:
                self._ready.set_exception(error)
                return
            self._ready.set_result(worker)
            try:
                await worker.poll_forever()
            except Exception as error:  # kept for the host: health() says it, stop() raises it
                self.error = error
            finally:
                if not managed:
                    # The factory's store was made in this thread's loop and cannot outlive
                    # it (the worker's own pool, if it has one, the worker closed itself).
                    await worker.given_store.close()

    def health(self) -> WorkerHealth:
        """The worker's :meth:`~pgqrs_sqla.Worker.health`, for the app's readiness probe.

        ``error`` says why, if the worker stopped on an error it cannot heal.
        """
        if self.worker is None:
            raise RuntimeError("this ThreadedWorker has not started")
        return self.worker.health()

    def stop(self, grace: float = 30.0, timeout: float | None = None) -> None:
        """Stop the worker gracefully (like :meth:`Worker.stop`) and wait for the thread to end.

        In-flight runs get ``grace`` seconds to finish; the rest are released for other workers.
        Re-raises the error that ended the worker, if one did (``SchemaMissing``,
        ``AuthenticationFailed``...).
        """
        loop = self._loop
        if loop is not None and self.worker is not None and not loop.is_closed():
            future = asyncio.run_coroutine_threadsafe(self.worker.stop(grace=grace), loop)
            try:
                future.result(timeout if timeout is not None else grace + 30)
            except TimeoutError:
                raise
            except Exception:
                pass  # what ended the worker is in self.error, which join() raises
        self.join(timeout)

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread to end; re-raises the error that ended the worker, if any."""
        if self._thread is not None:
            self._thread.join(timeout)
        if self.error is not None:
            raise self.error

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
