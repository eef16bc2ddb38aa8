"""Helpers for testing an app that uses pgqrs_sqla.

from pgqrs_sqla.testing import temp_store, drain, triggered

async def test_order_triggers_fulfilment():
    async with temp_store() as store:
        await store.create_workflow("fulfil_order")
        run_id = await place_order(store)            # your code, triggering a run
        [run] = await triggered(store, "fulfil_order")
        assert run.input == {"order_id": 1}
        await drain(store, {"fulfil_order": fulfil_order})   # run the worker until idle
        assert (await store.get_run(run_id)).status == "SUCCESS"
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from .models import RunStatus
from .runs import RunInfo
from .store import Store, connect
from .worker import consumer


@contextlib.asynccontextmanager
async def temp_store(**options: Any) -> AsyncIterator[Store]:
    """A Store on a fresh SQLite file with the tables installed; removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="pgqrs-test-") as directory:
        store = await connect(f"sqlite:///{os.path.join(directory, 'test.db')}", **options)
        try:
            await store.install()
            yield store
        finally:
            await store.close()


async def drain(
    store: Store,
    handlers: Mapping[str, Callable[..., Awaitable[Any]]],
    *,
    timeout: float = 30.0,
    name: str = "pgqrs-testing-worker",
    **options: Any,
) -> None:
    """Run a worker over ``handlers`` ({workflow or queue name: handler}) until nothing is
    ready and nothing is in flight. Delayed or paused work is left for later."""
    builder = consumer(name, None, *handlers)
    for queue, handler in handlers.items():
        builder.handler(handler, queue=queue)
    options.setdefault("poll_interval", 0.05)
    worker = await builder.create(store, **options)
    await worker.run_until_idle(timeout=timeout)


async def triggered(
    store: Store, workflow: str | None = None, *, status: RunStatus | None = None
) -> list[RunInfo]:
    """Runs that were triggered (committed), oldest first, optionally of one workflow/status."""
    runs = await store.list_runs(workflow=workflow, status=status, limit=10_000)
    return list(reversed(runs))
