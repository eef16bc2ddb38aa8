"""Durable timers (``ctx.sleep``/``sleep_until``) and events (``wait_for_event``/``send_event``).

On both backends: a wait is recorded like a step, releases the worker while it waits, is
woken by the database, and replays without waiting; events are a mailbox per run and name,
written in the sender's transaction.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

import pgqrs_sqla as pgqrs
from pgqrs_sqla import RunStatus, StepStatus
from tests._wait import eventually


async def _steps(store: pgqrs.Store, run_id: int) -> dict[str, tuple[StepStatus, Any]]:
    run = await store.get_run(run_id)
    return {s.name: (s.status, s.output) for s in run.steps}


async def _kinds(store: pgqrs.Store, run_id: int) -> dict[str, tuple[str | None, Any]]:
    s = store.tables.steps
    async with store.engine.connect() as conn:
        rows = await conn.execute(
            select(s.c.step_name, s.c.kind, s.c.wake_at).where(s.c.run_id == run_id)
        )
        return {row.step_name: (row.kind, row.wake_at) for row in rows}


async def _event_count(store: pgqrs.Store) -> int:
    async with store.engine.connect() as conn:
        count = await conn.scalar(select(func.count()).select_from(store.tables.events))
        return int(count or 0)


# ---------------------------------------------------------------- timers


async def test_a_timer_releases_the_worker_and_the_run_goes_on_after_it(
    store: pgqrs.Store, run_worker: Any
) -> None:
    calls: list[str] = []

    async def handler(ctx: pgqrs.RunContext, params: Any) -> str:
        before = await ctx.step("before", lambda: calls.append("before") or "b")
        await ctx.sleep("nap", 0.6)
        after = await ctx.step("after", lambda: calls.append("after") or "a")
        return before + after

    worker = await run_worker("napper", handler)
    started = datetime.now(UTC)
    run_id = await pgqrs.workflow("napper").trigger().execute(store)
    run = await store.wait_for_status(run_id, RunStatus.PAUSED, timeout=10)
    steps = {s.name: s.status for s in run.steps}
    assert steps == {"before": StepStatus.SUCCESS, "nap": StepStatus.PAUSED}
    kinds = await _kinds(store, run_id)
    assert kinds["nap"][0] == "sleep" and kinds["nap"][1] is not None
    # Nothing held while it sleeps: no task, no lease.
    assert worker.health().in_flight == 0
    message = (await store.get_run(run_id)).message_id
    async with store.engine.connect() as conn:
        m = store.tables.messages
        owner = await conn.scalar(select(m.c.consumer_worker_id).where(m.c.id == message))
    assert owner is None
    assert await store.wait_for_run(run_id, timeout=10) == "ba"
    finished = (await store.get_run(run_id)).finished_at
    assert finished is not None and finished - started >= timedelta(seconds=0.6)
    assert calls == ["before", "after"]  # the step before the timer ran once
    assert (await _steps(store, run_id))["nap"] == (StepStatus.SUCCESS, None)


async def test_a_zero_sleep_is_recorded_and_does_not_park(
    store: pgqrs.Store, run_worker: Any
) -> None:
    async def handler(ctx: pgqrs.RunContext, params: Any) -> str:
        await ctx.sleep("zero", 0)
        await ctx.sleep_until("past", datetime.now(UTC) - timedelta(hours=1))
        return "done"

    worker = await run_worker("zero_sleep", handler)
    run_id = await pgqrs.workflow("zero_sleep").trigger().execute(store)
    assert await store.wait_for_run(run_id, timeout=10) == "done"
    kinds = await _kinds(store, run_id)
    assert {name: kind for name, (kind, _) in kinds.items()} == {"zero": "sleep", "past": "sleep"}
    assert (await store.get_run(run_id)).steps[0].status is StepStatus.SUCCESS
    assert worker.stats.claimed == 1  # one delivery: it never parked


async def test_waking_a_sleeping_run_early_does_not_shorten_its_timer(
    store: pgqrs.Store, run_worker: Any
) -> None:
    deliveries: list[int] = []

    async def handler(ctx: pgqrs.RunContext, params: Any) -> str:
        deliveries.append(ctx.attempt)
        await ctx.sleep("long", timedelta(seconds=1.5))
        return "woke"

    await run_worker("early", handler)
    run_id = await pgqrs.workflow("early").trigger().execute(store)
    await store.wait_for_status(run_id, RunStatus.PAUSED, timeout=10)
    wake_at = (await _kinds(store, run_id))["long"][1]
    await store.resume_run(run_id)  # an early wake-up: the timer re-parks until its deadline
    assert await store.wait_for_run(run_id, timeout=10) == "woke"
    assert len(deliveries) >= 3  # the first, the early wake-up, the one at the deadline
    assert (await _kinds(store, run_id))["long"][1] == wake_at  # the deadline never moved
    run = await store.get_run(run_id)
    assert run.finished_at is not None and run.started_at is not None
    assert run.finished_at - run.created_at >= timedelta(seconds=1.5)


# ---------------------------------------------------------------- events


async def test_an_event_wakes_the_run_waiting_for_it(store: pgqrs.Store, run_worker: Any) -> None:
    async def handler(ctx: pgqrs.RunContext, params: Any) -> Any:
        approval = await ctx.wait_for_event("approved")
        return {"approval": approval}

    worker = await run_worker("approval", handler)
    run_id = await pgqrs.workflow("approval").trigger().execute(store)
    run = await store.wait_for_status(run_id, RunStatus.PAUSED, timeout=10)
    assert [(s.name, s.status) for s in run.steps] == [("approved", StepStatus.PAUSED)]
    assert worker.health().in_flight == 0
    await store.send_event(run_id, "approved", {"by": "ops"})
    assert await store.wait_for_run(run_id, timeout=10) == {"approval": {"by": "ops"}}


async def test_events_sent_before_the_waits_are_kept_and_consumed_in_order(
    store: pgqrs.Store, run_worker: Any
) -> None:
    gate = asyncio.Event()

    async def handler(ctx: pgqrs.RunContext, params: Any) -> Any:
        await ctx.step("gate", gate.wait)
        first = await ctx.wait_for_event("item")
        second = await ctx.wait_for_event("item")
        third = await ctx.wait_for_event("item")
        return [first, second, third]

    await run_worker("mailbox", handler)
    run_id = await pgqrs.workflow("mailbox").trigger().execute(store)
    await store.send_event(run_id, "item", 1)
    await store.send_event(run_id, "item", 2)
    gate.set()
    await store.wait_for_status(run_id, RunStatus.PAUSED, timeout=10)  # waits for the third
    await store.send_event(run_id, "item", 3)
    assert await store.wait_for_run(run_id, timeout=10) == [1, 2, 3]
    assert set(await _steps(store, run_id)) == {"gate", "item", "item#2", "item#3"}


async def test_an_event_sent_in_a_rolled_back_transaction_is_never_seen(
    store: pgqrs.Store, run_worker: Any
) -> None:
    async def handler(ctx: pgqrs.RunContext, params: Any) -> Any:
        try:
            return await ctx.wait_for_event("paid", timeout=0.5)
        except pgqrs.EventTimeout as timeout:
            return {"timed_out": timeout.event_name}

    await run_worker("payment", handler)
    run_id = await pgqrs.workflow("payment").trigger().execute(store)
    await store.wait_for_status(run_id, RunStatus.PAUSED, timeout=10)
    async with store.engine.connect() as conn:
        tx = await conn.begin()
        await store.send_event(run_id, "paid", {"amount": 10}, target=conn)
        await tx.rollback()
    assert await _event_count(store) == 0
    assert await store.wait_for_run(run_id, timeout=10) == {"timed_out": "paid"}


async def _parked_on_event(store: pgqrs.Store, run_worker: Any, workflow: str, event: str) -> int:
    """A run of ``workflow``, whose handler returns what ``wait_for_event(event)`` receives,
    parked on that wait."""

    async def handler(ctx: pgqrs.RunContext, params: Any) -> Any:
        return await ctx.wait_for_event(event)

    await run_worker(workflow, handler)
    run_id = await pgqrs.workflow(workflow).trigger().execute(store)
    await store.wait_for_status(run_id, RunStatus.PAUSED, timeout=10)
    return run_id


async def test_an_event_sent_with_the_apps_commit_wakes_the_run(
    store: pgqrs.Store, run_worker: Any
) -> None:
    run_id = await _parked_on_event(store, run_worker, "payment2", "paid")
    async with store.engine.begin() as conn:
        await store.send_event(run_id, "paid", {"amount": 10}, target=conn)
    assert await store.wait_for_run(run_id, timeout=10) == {"amount": 10}


async def test_send_event_sync_in_a_sync_session(
    store: pgqrs.Store, db_url: str, run_worker: Any
) -> None:
    run_id = await _parked_on_event(store, run_worker, "shipping", "shipped")

    def webhook() -> None:  # a sync app, in its own thread
        engine = create_engine(db_url.replace("postgresql://", "postgresql+psycopg://"))
        try:
            with Session(engine) as session, session.begin():
                store.send_event_sync(run_id, "shipped", "parcel-1", target=session)
        finally:
            engine.dispose()

    await asyncio.to_thread(webhook)
    assert await store.wait_for_run(run_id, timeout=10) == "parcel-1"


async def test_an_event_timeout_is_recorded_and_raised_again_on_replay(
    store: pgqrs.Store, run_worker: Any
) -> None:
    seen: list[str] = []

    async def handler(ctx: pgqrs.RunContext, params: Any) -> Any:
        try:
            await ctx.wait_for_event("reply", timeout=timedelta(seconds=0.3))
        except pgqrs.EventTimeout as timeout:
            seen.append(f"timeout {timeout.timeout:g}")
        # Pause once, so the next delivery replays the wait.
        return await ctx.step("gate", lambda: pgqrs.Step.pause(3600))

    await run_worker("replyer", handler)
    run_id = await pgqrs.workflow("replyer").trigger().execute(store)

    async def at_gate() -> bool:
        return "gate" in {s.name for s in (await store.get_run(run_id)).steps}

    await eventually(at_gate, what="the run paused at its gate")
    await store.send_event(run_id, "reply", "too late")  # kept, but the wait is over
    await store.update_step(run_id, "gate", StepStatus.SUCCESS, "opened")
    await store.resume_run(run_id)
    assert await store.wait_for_run(run_id, timeout=10) == "opened"
    assert seen == ["timeout 0.3", "timeout 0.3"]  # the replay raised it again
    assert (await _steps(store, run_id))["reply"] == (StepStatus.SUCCESS, {"timeout": 0.3})


# ---------------------------------------------------------------- bad input


async def test_send_event_refuses_unknown_and_finished_runs_and_bad_input(
    store: pgqrs.Store, run_worker: Any
) -> None:
    async def handler(ctx: pgqrs.RunContext, params: Any) -> str:
        return "done"

    await run_worker("quick", handler)
    run_id = await pgqrs.workflow("quick").trigger().execute(store)
    await store.wait_for_run(run_id, timeout=10)
    with pytest.raises(pgqrs.RunNotFound) as missing:
        await store.send_event(987654, "x")
    assert missing.value.run_id == 987654
    with pytest.raises(pgqrs.IllegalTransition) as finished:
        await store.send_event(run_id, "x")
    assert finished.value.actual == "SUCCESS"
    with pytest.raises(pgqrs.InvalidName):
        await store.send_event(run_id, "bad name!")
    with pytest.raises(pgqrs.PayloadError):
        await store.send_event(run_id, "x", {"f": object()})
    with pytest.raises(pgqrs.PayloadError):
        await store.send_event(run_id, "x", "y" * (store.max_payload_bytes + 1))
    assert await _event_count(store) == 0


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda ctx: ctx.sleep("t", -1), pgqrs.DurationError),
        (lambda ctx: ctx.sleep("t", float("nan")), pgqrs.DurationError),
        (lambda ctx: ctx.sleep("t", timedelta(days=365 * 11)), pgqrs.DurationError),
        (lambda ctx: ctx.sleep_until("t", datetime(2030, 1, 1)), pgqrs.ValidationError),
        (lambda ctx: ctx.wait_for_event("no spaces"), pgqrs.InvalidName),
        (lambda ctx: ctx.wait_for_event("e", timeout=-1), pgqrs.DurationError),
    ],
)
async def test_bad_wait_arguments_fail_the_run_with_a_typed_error(
    store: pgqrs.Store, run_worker: Any, call: Any, error: type[Exception]
) -> None:
    async def handler(ctx: pgqrs.RunContext, params: Any) -> Any:
        try:
            await call(ctx)
        except error as raised:
            return type(raised).__name__
        return "not raised"

    await run_worker("bad_waits", handler)
    run_id = await pgqrs.workflow("bad_waits").trigger().execute(store)
    assert await store.wait_for_run(run_id, timeout=10) == error.__name__
    assert await _kinds(store, run_id) == {}  # nothing half-written


async def test_a_step_and_a_wait_may_not_share_a_name(store: pgqrs.Store, run_worker: Any) -> None:
    async def handler(ctx: pgqrs.RunContext, params: Any) -> Any:
        await ctx.step("x", lambda: 1)
        await ctx.sleep("x", 0)

    await run_worker("clash", handler)
    run_id = await pgqrs.workflow("clash").trigger().execute(store)
    with pytest.raises(pgqrs.RunFailed) as failed:
        await store.wait_for_run(run_id, timeout=10)
    assert failed.value.error["type"].endswith("StepNameReused")


async def test_a_record_of_another_kind_is_a_replay_mismatch(
    store: pgqrs.Store, run_worker: Any
) -> None:
    version = {"v": 1}

    async def handler(ctx: pgqrs.RunContext, params: Any) -> Any:
        if version["v"] == 1:
            await ctx.step("check", lambda: "stepped")
        else:  # a deploy turned the step into a timer under the same name
            await ctx.sleep("check", 0)
        return await ctx.step("gate", lambda: pgqrs.Step.pause(3600))

    await run_worker("deploy", handler)
    run_id = await pgqrs.workflow("deploy").trigger().execute(store)
    await store.wait_for_status(run_id, RunStatus.PAUSED, timeout=10)
    version["v"] = 2
    await store.resume_run(run_id)
    with pytest.raises(pgqrs.RunFailed) as failed:
        await store.wait_for_run(run_id, timeout=10)
    assert failed.value.error["type"].endswith("ReplayMismatch")
    assert "recorded as a step, but the code now calls a sleep" in failed.value.error["message"]
