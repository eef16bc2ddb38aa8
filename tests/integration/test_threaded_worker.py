"""contrib.threaded: a sync app with the worker in a thread, on both backends."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

import pgqrs_sqla as pgqrs
from pgqrs_sqla.contrib.threaded import ThreadedWorker


async def shout(ctx: pgqrs.RunContext, params: Any) -> Any:
    return await ctx.step("shout", lambda: params.upper())


async def test_sync_app_with_a_worker_thread(store: pgqrs.Store, db_url: str) -> None:
    await store.create_workflow("shout")

    async def make_worker() -> pgqrs.Worker:
        own = await pgqrs.connect(db_url)  # made in the thread's own loop
        return (
            await pgqrs.consumer("thread-w", None, "shout")
            .handler(shout)
            .create(own, poll_interval=0.05, own_pool=False)
        )

    def sync_app() -> int:
        runner = ThreadedWorker(make_worker)
        worker = runner.start()
        assert worker.name == "thread-w"
        engine = create_engine(db_url.replace("postgresql://", "postgresql+psycopg://"))
        try:
            with Session(engine) as session, session.begin():
                return pgqrs.workflow("shout").trigger("hi").execute_sync(session)
        finally:
            engine.dispose()
            # keep the runner alive until the test has seen the result
            sync_app.runner = runner  # type: ignore[attr-defined]

    run_id = await asyncio.to_thread(sync_app)
    assert await store.wait_for_run(run_id, timeout=10) == "HI"
    await asyncio.to_thread(sync_app.runner.stop, 5)  # type: ignore[attr-defined]
    assert [(w.name, w.status) for w in await store.list_workers()] == [("thread-w", "stopped")]


def test_factory_errors_surface_in_start() -> None:
    async def broken() -> pgqrs.Worker:
        raise pgqrs.ConfigurationError("no database configured")

    with pytest.raises(pgqrs.ConfigurationError, match="no database"):
        ThreadedWorker(broken).start()
