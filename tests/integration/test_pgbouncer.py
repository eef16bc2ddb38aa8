"""Through a real PgBouncer in transaction pooling mode (the ``pgbouncer`` fixture), on
asyncpg and psycopg: connect() makes its engine safe and says so, triggers commit with the
caller's transaction, claims, steps, transactional steps and cancel work, and workers detect
that LISTEN cannot work there, say so and poll."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

import pgqrs_sqla as pgqrs
from pgqrs_sqla._listen import POOLER_CONNECT_ARGS
from tests._wait import eventually
from tests._wakeups import DRIVERS, enqueue_elsewhere, with_driver, woken_consumer


def warnings_with(caplog: pytest.LogCaptureFixture, part: str) -> list[str]:
    records = caplog.get_records("setup") + caplog.get_records("call")  # connect() is in setup
    return [
        r.getMessage() for r in records if r.levelno == logging.WARNING and part in r.getMessage()
    ]


@pytest.fixture(params=DRIVERS)
async def bouncer_store(
    request: pytest.FixtureRequest, bouncer_db: str, caplog: pytest.LogCaptureFixture
) -> Any:
    caplog.set_level(logging.INFO, logger="pgqrs_sqla")
    store = await pgqrs.connect(with_driver(bouncer_db, request.param))
    try:
        yield store
    finally:
        await store.close()


async def test_connect_detects_the_pooler_and_makes_claims_safe(
    bouncer_store: pgqrs.Store, caplog: pytest.LogCaptureFixture
) -> None:
    """Without the driver options, concurrent claims and enqueues through PgBouncer fail on
    prepared statements ('does not exist' / 'already exists') round after round."""
    store = bouncer_store
    assert store._pooled is True
    [said] = warnings_with(caplog, "connection pooler")
    assert "PgBouncer" in said
    await store.create_queue("q")
    done: list[int] = []

    async def handler(message: pgqrs.Message) -> None:
        done.append(message.payload)

    worker = (
        await pgqrs.consumer("w", None, "q")
        .handler(handler)
        .create(store, poll_interval=0.05, concurrency=4, batch_size=2)
    )
    async with worker:
        await asyncio.gather(*(store.queue("q").enqueue(i) for i in range(40)))
        await eventually(lambda: len(done) == 40, what="40 messages handled")
    assert sorted(done) == list(range(40))
    assert worker.stats.errors == 0


async def test_wake_ups_through_pgbouncer_fall_back_to_polling(
    bouncer_store: pgqrs.Store, bouncer_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    """LISTEN through transaction pooling is accepted and then never hears a thing: the
    worker finds out, says so once, and its poll picks up another process's message."""
    store = bouncer_store
    worker, woke = await woken_consumer(store, poll_interval=0.2)
    async with worker:
        await eventually(
            lambda: worker._wakeups.task is not None and worker._wakeups.task.done(),
            what="the LISTEN task gives up",
        )
        [said] = warnings_with(caplog, "LISTEN cannot work here")
        assert "polling every 0.2s" in said and "transaction pooling" in said
        assert worker._wakeups.conn is None
        await enqueue_elsewhere(bouncer_db)
        await asyncio.wait_for(woke.wait(), 30)  # by its poll


async def test_workflows_through_pgbouncer(bouncer_store: pgqrs.Store) -> None:
    """Triggers in the caller's transaction, steps, a transactional step and cancel."""
    store = bouncer_store
    notes = Table(
        "notes", MetaData(), Column("id", Integer, primary_key=True), Column("text", String)
    )
    async with store.engine.begin() as conn:
        await conn.run_sync(notes.metadata.create_all)
    await store.create_workflow("wf")
    await store.create_workflow("slow")
    entered, proceed = asyncio.Event(), asyncio.Event()

    async def wf(ctx: pgqrs.RunContext, params: Any) -> Any:
        first = await ctx.step("first", lambda: params["n"] + 1)

        async def note(session: AsyncSession) -> int:
            await session.execute(notes.insert().values(text=f"run {ctx.run_id}"))
            return first * 2

        return await ctx.step("note", note, transactional=True)

    async def slow(ctx: pgqrs.RunContext, params: Any) -> Any:
        await ctx.step("first", lambda: 1)
        entered.set()
        await proceed.wait()
        await ctx.step("second", lambda: 2)

    workers = [
        await pgqrs.consumer("w1", None, "wf").handler(wf).create(store, poll_interval=0.05),
        await pgqrs.consumer("w2", None, "slow").handler(slow).create(store, poll_interval=0.05),
    ]
    for worker in workers:
        worker.start()
    try:
        sessions = async_sessionmaker(store.engine)
        async with sessions() as session, session.begin():
            run_id = await pgqrs.workflow("wf").trigger({"n": 20}).execute(session)
        async with sessions() as session:  # autobegun, rolled back: no run
            await pgqrs.workflow("wf").trigger({"n": 0}).execute(session)
            await session.rollback()
        assert await store.wait_for_run(run_id, timeout=30) == 42
        assert [r.id for r in await store.list_runs(workflow="wf")] == [run_id]
        async with store._read() as conn:
            assert (await conn.execute(select(func.count()).select_from(notes))).scalar() == 1

        running = await pgqrs.workflow("slow").trigger().execute(store)
        await asyncio.wait_for(entered.wait(), 30)
        await store.cancel_run(running)
        proceed.set()
        with pytest.raises(pgqrs.RunCancelled):
            await store.wait_for_run(running, timeout=30)
    finally:
        for worker in workers:
            await worker.stop(grace=5)
    for worker in workers:
        assert worker.stats.errors == 0


@pytest.mark.parametrize("driver", DRIVERS)
async def test_an_apps_engine_behind_pgbouncer_without_the_options_is_named(
    bouncer_db: str, driver: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Store(engine) cannot change the app's engine: the worker's start names what it lacks
    and how to make it; an engine made with the options gets no such warning."""
    caplog.set_level(logging.WARNING, logger="pgqrs_sqla")
    url = with_driver(bouncer_db, driver)
    bare = create_async_engine(url)
    safe = create_async_engine(url, connect_args=POOLER_CONNECT_ARGS[driver])
    try:
        assert await pgqrs.Store(safe)._behind_pooler() is True
        assert warnings_with(caplog, "create_async_engine") == []
        assert await pgqrs.Store(bare)._behind_pooler() is True
        [said] = warnings_with(caplog, "create_async_engine")
        needed = "statement_cache_size" if driver == "asyncpg" else "prepare_threshold"
        assert needed in said and "connection pooler" in said
    finally:
        await bare.dispose()
        await safe.dispose()
