"""Who owns the pool: a worker on ``Store(app_engine)`` gets a small pool of its own by
default (docs/embedding.md's promise), built from the app engine's URL and connect_args; an
engine whose pool cannot be duplicated (StaticPool, in-memory SQLite) is shared, and asking
for an own pool there is refused saying what to do."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool, StaticPool

import pgqrs_sqla as pgqrs
from pgqrs_sqla.store import normalise_url
from tests.conftest import TaggedEngine


async def test_a_worker_on_the_apps_engine_gets_its_own_pool_by_default(
    tagged_app_engine: TaggedEngine,
) -> None:
    app_engine, probe = tagged_app_engine.engine, tagged_app_engine.probe
    app_store = pgqrs.Store(app_engine)
    app_pool = app_engine.sync_engine.pool

    async def handler(ctx: pgqrs.RunContext, params: Any) -> Any:
        async def look(session: AsyncSession) -> Any:
            return {
                "tag": (await session.execute(text(probe))).scalar(),
                "app_checked_out": app_pool.checkedout(),  # type: ignore[attr-defined]
            }

        first = await ctx.step("first", look, transactional=True)
        second = await ctx.step("second", look, transactional=True)
        return [first, second]

    await app_store.create_workflow("probe")
    worker = (
        await pgqrs.consumer("w", None, "probe")
        .handler(handler)
        .create(app_store, concurrency=2, poll_interval=0.05)  # no own_pool=: the default
    )
    assert worker.store is not app_store
    own = worker.store.engine.sync_engine
    assert own.pool is not app_pool
    assert own.pool.size() == 4  # type: ignore[attr-defined]  # concurrency + 2
    assert own.url == app_engine.url
    run_id = await pgqrs.workflow("probe").trigger().execute(app_store)
    assert app_pool.checkedout() == 0  # type: ignore[attr-defined]
    await worker.run_until_idle(timeout=60)
    # Every step ran on the worker's connections, none of the app's was held meanwhile,
    # and those connections were made with the app's connect_args / connect events.
    run = await app_store.get_run(run_id)
    assert run.output == [{"tag": "orders-web", "app_checked_out": 0}] * 2
    assert worker.given_store is app_store
    async with app_engine.connect() as conn:  # the worker closed its pool, not the app's
        assert (await conn.execute(text("SELECT 1"))).scalar() == 1


async def test_a_pool_that_cannot_be_duplicated_is_shared_and_own_pool_is_refused(
    db_url: str, backend: str
) -> None:
    if backend == "postgresql":
        engine = create_async_engine(normalise_url(db_url), poolclass=StaticPool)
        why = "StaticPool holds a single connection"
    else:
        engine = create_async_engine("sqlite+aiosqlite://")  # in memory (a StaticPool too)
        why = "holds a single connection"
    store = pgqrs.Store(engine)

    async def handler(ctx: pgqrs.RunContext, params: Any) -> Any:
        return "done"

    try:
        await store.install()
        await store.create_workflow("wf")
        shared = await pgqrs.consumer("w", None, "wf").handler(handler).create(store)
        assert shared.store is store  # the default: shared, not duplicated
        with pytest.raises(pgqrs.ConfigurationError) as caught:
            await pgqrs.consumer("w2", None, "wf").handler(handler).create(store, own_pool=True)
        assert why in str(caught.value)
        assert "share the app's engine (own_pool=False)" in str(caught.value)
    finally:
        await engine.dispose()


async def test_an_in_memory_sqlite_database_is_not_duplicated_whatever_its_pool() -> None:
    engine = create_async_engine(
        "sqlite+aiosqlite:///file:jobs?mode=memory&cache=shared&uri=true",
        poolclass=AsyncAdaptedQueuePool,
    )
    store = pgqrs.Store(engine)
    try:
        assert store._pool_shareable_only() is not None
        with pytest.raises(pgqrs.ConfigurationError, match="in memory"):
            store.with_own_pool(2)
    finally:
        await engine.dispose()
