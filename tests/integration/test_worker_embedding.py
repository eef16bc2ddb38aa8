"""The worker as a guest in an app's loop: own pool, concurrency, several workflows, graceful
stop, heartbeats during blocking steps, health, and the run in every log record."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.util import await_only

import pgqrs_sqla as pgqrs
from pgqrs_sqla import RunStatus
from tests._rows import message_of
from tests.conftest import TaggedEngine


async def test_worker_has_its_own_pool_and_leaves_the_apps_alone(store: pgqrs.Store) -> None:
    async def handler(ctx: pgqrs.RunContext, params: Any) -> Any:
        return "done"

    await store.create_workflow("wf")
    worker = await pgqrs.consumer("w", None, "wf").handler(handler).create(store, pool_size=2)
    assert worker.store.engine is not store.engine
    assert worker.store.engine.url == store.engine.url
    async with worker:
        run_id = await pgqrs.workflow("wf").trigger().execute(store)
        assert await store.wait_for_run(run_id, timeout=10) == "done"
    assert (await store.get_run(run_id)).status is RunStatus.SUCCESS  # the app's engine still works
    shared = await pgqrs.consumer("w2", None, "wf").handler(handler).create(store, own_pool=False)
    assert shared.store is store


async def test_the_workers_own_pool_connects_as_the_apps_engine_does(
    store: pgqrs.Store, tagged_app_engine: TaggedEngine
) -> None:
    """``connect_args``, pool events and execution options survive into the worker's own
    pool, and the worker's connections never come from the app's pool."""
    probe = tagged_app_engine.probe
    app_engine = tagged_app_engine.engine.execution_options(app_option="kept")
    app_store = pgqrs.Store(app_engine)

    async def handler(ctx: pgqrs.RunContext, params: Any) -> Any:
        async def look(session: AsyncSession) -> Any:
            conn = await session.connection()
            return {
                "tag": (await session.execute(text(probe))).scalar(),
                "option": conn.sync_connection.get_execution_options().get("app_option"),  # type: ignore[union-attr]
                "app_checked_out": app_engine.sync_engine.pool.checkedout(),
            }

        return await ctx.step("look", look, transactional=True)

    await app_store.create_workflow("probe")
    worker = (
        await pgqrs.consumer("w", None, "probe")
        .handler(handler)
        .create(app_store, own_pool=True, pool_size=2, poll_interval=0.05)
    )
    assert worker.store.engine.sync_engine.pool is not app_engine.sync_engine.pool
    assert worker.store.engine.sync_engine.pool.size() == 2
    async with worker:
        run_id = await pgqrs.workflow("probe").trigger().execute(store)
        assert await store.wait_for_run(run_id, timeout=10) == {
            "tag": "orders-web",
            "option": "kept",
            "app_checked_out": 0,
        }


async def test_concurrency_runs_handlers_at_once_and_one_worker_serves_several_workflows(
    store: pgqrs.Store,
) -> None:
    entered = 0
    all_in = asyncio.Event()

    async def gather(ctx: pgqrs.RunContext, params: Any) -> Any:
        nonlocal entered
        entered += 1
        if entered == 3:
            all_in.set()
        await asyncio.wait_for(all_in.wait(), 10)  # only completes if 3 run at the same time
        return ctx.workflow

    async def other(ctx: pgqrs.RunContext, params: Any) -> Any:
        return "other"

    await store.create_workflow("gather")
    await store.create_workflow("other")
    worker = await (
        pgqrs.consumer("multi", None, "gather", "other")
        .handler(gather, queue="gather")
        .handler(other, queue="other")
        .create(store, concurrency=3, poll_interval=0.05)
    )
    async with worker:
        ids = [await pgqrs.workflow("gather").trigger().execute(store) for _ in range(3)]
        other_id = await pgqrs.workflow("other").trigger().execute(store)
        assert [await store.wait_for_run(i, timeout=10) for i in ids] == ["gather"] * 3
        assert await store.wait_for_run(other_id, timeout=10) == "other"


async def test_stop_lets_in_flight_runs_finish_within_grace(store: pgqrs.Store) -> None:
    started, proceed = asyncio.Event(), asyncio.Event()

    async def handler(ctx: pgqrs.RunContext, params: Any) -> Any:
        started.set()
        await proceed.wait()  # until stop() has begun: the run is in flight when it does
        return await ctx.step("after", lambda: "finished")

    await store.create_workflow("wf")
    worker = (
        await pgqrs.consumer("w", None, "wf").handler(handler).create(store, poll_interval=0.05)
    )
    worker.start()
    run_id = await pgqrs.workflow("wf").trigger().execute(store)
    await asyncio.wait_for(started.wait(), 10)
    stopping = asyncio.create_task(worker.stop(grace=30))
    await asyncio.sleep(0)  # one loop turn: stop() has raised its flag
    assert not stopping.done()
    proceed.set()
    await asyncio.wait_for(stopping, 60)
    assert (await store.get_run(run_id)).status is RunStatus.SUCCESS
    assert worker.health().status == "stopped"


async def test_stop_after_grace_releases_the_run_for_another_worker_at_once(
    store: pgqrs.Store,
) -> None:
    started = asyncio.Event()
    block = asyncio.Event()

    async def stuck(ctx: pgqrs.RunContext, params: Any) -> Any:
        await ctx.step("one", lambda: 1)
        started.set()
        await block.wait()

    async def quick(ctx: pgqrs.RunContext, params: Any) -> Any:
        return await ctx.step("two", lambda: 2)

    await store.create_workflow("wf")
    first = (
        await pgqrs.consumer("first", None, "wf")
        .handler(stuck)
        .create(store, visibility_timeout=300, poll_interval=0.05)
    )
    first.start()
    run_id = await pgqrs.workflow("wf").trigger().execute(store)
    await asyncio.wait_for(started.wait(), 10)
    await first.stop(grace=0.05)
    msg = await message_of(store, run_id)
    assert msg.consumer_worker_id is None  # released, not left to a 300 s lease
    second = (
        await pgqrs.consumer("second", None, "wf").handler(quick).create(store, poll_interval=0.05)
    )
    async with second:
        assert await store.wait_for_run(run_id, timeout=10) == 2
    assert [s.name for s in (await store.get_run(run_id)).steps] == ["one", "two"]


async def test_heartbeat_and_lease_extension_continue_during_a_blocking_step(
    store: pgqrs.Store, wait_until: Any
) -> None:
    async def handler(ctx: pgqrs.RunContext, params: Any) -> Any:
        # The workload: blocks a thread (not the loop) for longer than the 1.2 s lease.
        return await ctx.step("cpu", lambda: time.sleep(3.0) or "ok")

    await store.create_workflow("wf")
    worker = (
        await pgqrs.consumer("hb", None, "wf")
        .handler(handler)
        # A lease of 1.2 s renewed every 0.1 s: a 0.4 s lease was lost on a machine loaded
        # enough to starve the loop for 0.3 s (seen with 4 test processes on 2 busy cores).
        .create(store, visibility_timeout=1.2, heartbeat_interval=0.1, poll_interval=0.05)
    )
    thief = await pgqrs.consumer("thief", None, "wf").handler(handler).create(store, own_pool=False)
    async with worker:
        run_id = await pgqrs.workflow("wf").trigger().execute(store)
        await store.wait_for_status(run_id, RunStatus.RUNNING, timeout=10)
        before = {w.name: w.heartbeat_at for w in await store.list_workers()}["hb"]
        # While the step runs (3 s, longer than the 1.2 s lease), nobody else can claim it.
        for _ in range(5):
            assert await thief.dequeue(1) == []
            await asyncio.sleep(0.4)  # the measurement: samples spanning more than one lease
        after = {w.name: w.heartbeat_at for w in await store.list_workers()}["hb"]
        assert after > before
        waiting = await pgqrs.workflow("wf").trigger().execute(store)  # concurrency 1: it waits

        async def lag_measured() -> bool:  # the next heartbeat measures it
            return worker.health().lag is not None

        await wait_until(lag_measured, timeout=5)
        health = worker.health()
        assert health.running
        assert health.in_flight == 1
        assert health.last_heartbeat_age is not None
        assert health.lag is not None  # the second run has been ready since it was triggered
        assert health.lag >= 0
        assert await store.wait_for_run(run_id, timeout=10) == "ok"
        assert await store.wait_for_run(waiting, timeout=10) == "ok"
    assert (await store.get_run(run_id)).steps[0].attempts == 1


async def test_log_records_carry_run_workflow_and_step(
    store: pgqrs.Store, caplog: pytest.LogCaptureFixture
) -> None:
    async def handler(ctx: pgqrs.RunContext, params: Any) -> Any:
        async def flaky() -> None:
            raise pgqrs.TransientError("later", retry_after=0.01)

        return await ctx.step("flaky", flaky, retry=pgqrs.RetryPolicy(max_attempts=2))

    await store.create_workflow("logged")
    worker = (
        await pgqrs.consumer("lw", None, "logged")
        .handler(handler)
        .create(store, poll_interval=0.05)
    )
    with caplog.at_level(logging.INFO, logger="pgqrs_sqla"):
        async with worker:
            run_id = await pgqrs.workflow("logged").trigger().execute(store)
            with pytest.raises(pgqrs.RunFailed):
                await store.wait_for_run(run_id, timeout=10)
    retry = next(r for r in caplog.records if "transient error" in r.getMessage())
    assert (retry.run_id, retry.workflow, retry.step) == (run_id, "logged", "flaky")  # type: ignore[attr-defined]
    failed = next(r for r in caplog.records if "out of attempts" in r.getMessage())
    assert (failed.run_id, failed.workflow) == (run_id, "logged")  # type: ignore[attr-defined]


async def test_a_claim_in_flight_when_stop_begins_is_handed_back(store: pgqrs.Store) -> None:
    """The race behind a stopping worker that ran a late run: its claim was sent before
    stop(), but the server took the claim's snapshot after a trigger committed after stop().
    Forced here by holding the claim statement at the driver until the late run is
    committed: the claim's answer arrives after stop() began, so it is handed back."""
    if not store.postgres:
        pytest.skip(
            "SQLite: the claim runs under the store's in-process writer lock, so a "
            "trigger of this process cannot commit between the stop check and the claim"
        )
    await store.create_workflow("drain")
    ran: list[str] = []

    async def handler(ctx: pgqrs.RunContext, params: str) -> str:
        ran.append(params)
        return params

    worker = (
        await pgqrs.consumer("stopping", None, "drain")
        .handler(handler)
        .create(store, poll_interval=0.05)
    )
    at_gate, open_gate = asyncio.Event(), asyncio.Event()

    def hold_claims(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "SKIP LOCKED" in statement and not open_gate.is_set():
            at_gate.set()
            await_only(open_gate.wait())

    engine = worker.store.engine.sync_engine
    event.listen(engine, "before_cursor_execute", hold_claims)
    try:
        worker.start()
        await asyncio.wait_for(at_gate.wait(), 10)  # a claim is in flight, past its stop check
        stopping = asyncio.create_task(worker.stop(grace=10))
        await asyncio.sleep(0)  # one loop turn: stop() has raised its flag
        late = await pgqrs.workflow("drain").trigger("late").execute(store)
        open_gate.set()
        await asyncio.wait_for(stopping, 15)
    finally:
        event.remove(engine, "before_cursor_execute", hold_claims)
    info = await store.get_run(late)
    assert info.status is pgqrs.RunStatus.QUEUED
    assert info.started_at is None
    assert ran == []
    assert worker.stats.claimed == 0
    async with store.engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT read_ct, consumer_worker_id FROM pgqrs_messages WHERE id = :id"),
                {"id": (await store.get_run(late)).message_id},
            )
        ).one()
    assert tuple(row) == (0, None)  # the claim is undone: no delivery counted, no owner
    # ...and another worker runs it.
    other = await pgqrs.consumer("next", None, "drain").handler(handler).create(store)
    await other.run_until_idle(timeout=10)
    await other.stop()
    assert ran == ["late"]


async def test_a_stopping_worker_claims_nothing_new(store: pgqrs.Store) -> None:
    """Between stop() and the end of its grace, the in-flight run finishes, and a run
    triggered meanwhile is left on the queue for another worker."""
    running, finish = asyncio.Event(), asyncio.Event()

    async def handler(ctx: pgqrs.RunContext, params: str) -> str:
        if params == "first":
            running.set()
            await finish.wait()
        return params

    await store.create_workflow("drain")
    worker = (
        await pgqrs.consumer("stopping", None, "drain")
        .handler(handler)
        .create(store, concurrency=2, poll_interval=0.05)
    )
    worker.start()
    first = await pgqrs.workflow("drain").trigger("first").execute(store)
    await asyncio.wait_for(running.wait(), 10)
    stopping = asyncio.create_task(worker.stop(grace=10))
    await asyncio.sleep(0)  # one loop turn: the new task runs stop() up to its first await,
    # which is after it has raised the stop flag (deterministic, not a timing guess)
    late = await pgqrs.workflow("drain").trigger("late").execute(store)  # wakes the worker
    finish.set()
    await asyncio.wait_for(stopping, 15)
    assert await store.wait_for_run(first, timeout=5) == "first"
    assert (await store.get_run(late)).status is pgqrs.RunStatus.QUEUED
    assert worker.stats.claimed == 1
