"""contrib.threaded: a sync app with the worker in a thread, on both backends."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
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


THREADED_APP = """
import asyncio, contextlib, gc, os, sys
from sqlalchemy import create_engine
from sqlalchemy.orm import Session
import pgqrs_sqla as pgqrs
from pgqrs_sqla.contrib.threaded import ThreadedWorker

URL, SYNC_URL, FORM = os.environ["URL"], os.environ["SYNC_URL"], os.environ["FORM"]
opened = []


async def shout(ctx, params):
    return await ctx.step("shout", lambda: params.upper())


def build(store, **options):
    return pgqrs.consumer("thread-w", None, "shout").handler(shout).create(
        store, poll_interval=0.05, **options
    )


@contextlib.asynccontextmanager
async def managed():  # opens a store, yields the worker, closes the store
    async with await pgqrs.connect(URL) as store:
        opened.append(store)
        yield await build(store)  # the default: the worker gets a pool of its own


async def returned():  # the thread closes worker.given_store: the store the factory made
    store = await pgqrs.connect(URL)
    opened.append(store)
    return await build(store, own_pool=FORM == "returned-own-pool")


factory = managed if FORM == "managed" else returned
runner = ThreadedWorker(factory)
worker = runner.start()
assert worker.given_store is opened[0]
assert (worker.store is opened[0]) is (FORM == "returned")
engine = create_engine(SYNC_URL)
with Session(engine) as session, session.begin():
    run_id = pgqrs.workflow("shout").trigger("hi").execute_sync(session)


async def result():
    async with await pgqrs.connect(URL) as store:
        return await store.wait_for_run(run_id, timeout=30)


assert asyncio.run(result()) == "HI"
runner.stop(grace=5)
engine.dispose()
del worker, opened, runner
gc.collect()
print("ok")
"""


@pytest.mark.parametrize("form", ["managed", "returned", "returned-own-pool"])
async def test_every_store_the_thread_opened_is_closed(
    store: pgqrs.Store, db_url: str, tmp_path: Path, form: str
) -> None:
    """A real process in development mode: no unclosed connection (ResourceWarning) is left
    when the thread ends, on the worker's own pool (the default) or on the factory's store."""
    await store.create_workflow("shout")
    (tmp_path / "app.py").write_text(THREADED_APP)
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-X", "dev", "-W", "error::ResourceWarning", "app.py"],
        cwd=tmp_path,
        env={
            **os.environ,
            "URL": db_url,
            "SYNC_URL": db_url.replace("postgresql://", "postgresql+psycopg://"),
            "FORM": form,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
    assert "ResourceWarning" not in done.stderr, done.stderr
