"""Fencing and the races around it, on both backends: a former lease holder writes nothing,
a step recorded from outside wins over a body still running, cancellation neither deadlocks
nor waits for a heartbeat, and failures are charged to the step that raised them.

Where a race needs two transactions open at once, PostgreSQL runs it for real (the test
waits until the database shows one session blocked on the other's row lock); SQLite, with
its single writer, runs the same story with the takeover committed first.
"""

from __future__ import annotations

import asyncio
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

import pgqrs_sqla as pgqrs
from pgqrs_sqla import RunStatus, Step, StepStatus, TransientError
from tests._wait import until_a_session_waits_on_a_lock

ROOT = Path(__file__).resolve().parents[2]
Handler = Callable[[pgqrs.RunContext, Any], Awaitable[Any]]


async def steps_of(store: pgqrs.Store, run_id: int) -> dict[str, Any]:
    s = store.tables.steps
    async with store._read() as conn:
        rows = (
            await conn.execute(
                select(s.c.step_name, s.c.status, s.c.output).where(s.c.run_id == run_id)
            )
        ).all()
    return {row.step_name: (row.status, row.output) for row in rows}


async def message_id_of(store: pgqrs.Store, run_id: int) -> int:
    return (await store.get_run(run_id)).message_id  # type: ignore[return-value]


def take_over(store: pgqrs.Store, message_id: int) -> Any:
    """What a claim does to a message whose lease expired: lock it (FOR UPDATE, as the
    claim's SKIP LOCKED selection does) and bump its delivery count, the lease token."""
    m = store.tables.messages
    locked = select(m.c.id).where(m.c.id == message_id).with_for_update()
    return update(m).where(m.c.id.in_(locked.scalar_subquery())).values(read_ct=m.c.read_ct + 1)


# ---------------------------------------------------------------- a former holder is fenced


async def test_a_takeover_during_a_checkpoint_refuses_the_former_holders_write(
    store: pgqrs.Store, run_worker: Any, wait_until: Any
) -> None:
    first_done, proceed = asyncio.Event(), asyncio.Event()
    bodies: list[str] = []

    async def handler(ctx: pgqrs.RunContext, params: Any) -> str:
        await ctx.step("first", lambda: "one")
        first_done.set()
        await proceed.wait()

        async def second() -> str:
            bodies.append("second")
            return "two"

        await ctx.step("second", second)
        return "finished"

    worker = await run_worker("fenced", handler, visibility_timeout=60)
    run_id = await pgqrs.workflow("fenced").trigger().execute(store)
    await asyncio.wait_for(first_done.wait(), 10)
    message_id = await message_id_of(store, run_id)

    takeover: AsyncConnection = await store.engine.connect()
    try:
        await takeover.begin()
        await takeover.execute(take_over(store, message_id))
        if store.postgres:
            # The claim is in flight, uncommitted, when the former holder checkpoints: its
            # write must wait for the outcome and then see the new token.
            proceed.set()
            await until_a_session_waits_on_a_lock(store)
            await takeover.commit()
        else:
            await takeover.commit()
            proceed.set()
    finally:
        await takeover.close()

    await wait_until(lambda: _async(worker.stats.lease_lost == 1))
    assert bodies == ["second"]  # the body ran; its checkpoint is what the fence refused
    recorded = await steps_of(store, run_id)
    assert set(recorded) == {"first"}
    run = await store.get_run(run_id)
    assert run.status is RunStatus.RUNNING  # not finished by the former holder


async def _async(value: Any) -> Any:
    return value


# ---------------------------------------------------------------- recorded from outside


async def test_update_step_before_the_first_delivery_is_replayed(
    store: pgqrs.Store, run_worker: Any
) -> None:
    called: list[str] = []

    async def approval() -> Any:
        called.append("approval")
        return Step.pause(3600)

    async def handler(ctx: pgqrs.RunContext, params: Any) -> Any:
        decision = await ctx.step("approval", approval)
        return {"decision": decision}

    await store.create_workflow("early")
    run_id = await pgqrs.workflow("early").trigger().execute(store)
    # The webhook is faster than any worker: the step is recorded before the first delivery.
    await store.update_step(run_id, "approval", StepStatus.SUCCESS, {"ok": True})
    await run_worker("early", handler)
    assert await store.wait_for_run(run_id, timeout=10) == {"decision": {"ok": True}}
    assert called == []


@pytest.mark.parametrize("body_result", ["value", "pause"])
async def test_update_step_while_the_body_runs_wins(
    store: pgqrs.Store, run_worker: Any, body_result: str
) -> None:
    running, finish_body = asyncio.Event(), asyncio.Event()

    async def approval() -> Any:
        running.set()
        await finish_body.wait()
        return Step.pause(3600) if body_result == "pause" else "from the body"

    async def handler(ctx: pgqrs.RunContext, params: Any) -> Any:
        return await ctx.step("approval", approval)

    # A long lease: were the refused write taken for a lost lease, the run would sit for it.
    await run_worker("race", handler, visibility_timeout=120)
    run_id = await pgqrs.workflow("race").trigger().execute(store)
    await asyncio.wait_for(running.wait(), 10)
    await store.update_step(run_id, "approval", StepStatus.SUCCESS, "from the webhook")
    await store.resume_run(run_id)
    finish_body.set()
    assert await store.wait_for_run(run_id, timeout=10) == "from the webhook"
    assert (await steps_of(store, run_id))["approval"] == ("SUCCESS", "from the webhook")


async def test_a_transactional_step_recorded_meanwhile_rolls_back_its_writes(
    store: pgqrs.Store, backend: str, run_worker: Any
) -> None:
    if backend == "sqlite":
        pytest.skip(
            "SQLite has one writer: update_step waits until the step's transaction commits, "
            "so the step's own result is recorded first and update_step is refused"
        )
    async with store._begin() as conn:
        await conn.execute(text("CREATE TABLE effects (id INTEGER PRIMARY KEY, note TEXT)"))
    running, finish_body = asyncio.Event(), asyncio.Event()

    async def write(session: Any) -> str:
        await session.execute(text("INSERT INTO effects (id, note) VALUES (1, 'body')"))
        running.set()
        await finish_body.wait()
        return "from the body"

    async def handler(ctx: pgqrs.RunContext, params: Any) -> Any:
        return await ctx.step("write", write, transactional=True)

    await run_worker("txrace", handler, visibility_timeout=120)
    run_id = await pgqrs.workflow("txrace").trigger().execute(store)
    await asyncio.wait_for(running.wait(), 10)
    await store.update_step(run_id, "write", StepStatus.SUCCESS, "from the webhook")
    finish_body.set()
    assert await store.wait_for_run(run_id, timeout=10) == "from the webhook"
    async with store._read() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM effects"))).scalar_one() == 0


# ---------------------------------------------------------------- long transactional steps


async def test_a_long_transactional_step_keeps_the_workers_other_leases(
    store: pgqrs.Store, backend: str, run_worker: Any
) -> None:
    if backend == "sqlite":
        pytest.skip(
            "SQLite has one writer: a transactional step holds it for its whole length, so "
            "no heartbeat (and no claim) runs meanwhile; docs/concepts.md says so"
        )
    journal: list[tuple[str, str]] = []
    long_started, plain_started = asyncio.Event(), asyncio.Event()

    async def slow_write(session: Any) -> str:
        long_started.set()
        await asyncio.sleep(3.0)  # the workload: a step three leases long
        return "slow"

    async def handler(ctx: pgqrs.RunContext, params: dict[str, str]) -> None:
        if params["kind"] == "tx":
            await ctx.step("tx", slow_write, transactional=True)
            return

        async def plain() -> None:
            journal.append(("plain", str(ctx.attempt)))
            plain_started.set()
            await asyncio.sleep(3.0)

        await ctx.step("plain", plain)

    # One worker holds both runs (concurrency 2) with 1 s leases; a rival polls every 50 ms.
    await run_worker("long", handler, concurrency=2, visibility_timeout=1.0)
    tx = await pgqrs.workflow("long").trigger({"kind": "tx"}).execute(store)
    plain = await pgqrs.workflow("long").trigger({"kind": "plain"}).execute(store)
    await asyncio.wait_for(asyncio.gather(long_started.wait(), plain_started.wait()), 10)
    rival = await run_worker("long", handler, visibility_timeout=1.0)
    for run_id in (tx, plain):
        await store.wait_for_run(run_id, timeout=20)
    assert journal == [("plain", "1")]  # never redelivered to the rival
    assert rival.stats.claimed == 0


# ---------------------------------------------------------------- cancellation


async def test_cancel_takes_locks_in_the_claims_order(store: pgqrs.Store, backend: str) -> None:
    if backend == "sqlite":
        pytest.skip("SQLite takes one database-wide write lock: there is no lock order")
    await store.create_workflow("c")
    run_id = await pgqrs.workflow("c").trigger().execute(store)
    message_id = await message_id_of(store, run_id)
    m, r = store.tables.messages, store.tables.runs
    claim: AsyncConnection = await store.engine.connect()
    try:
        # A claim's shape: the message row first (FOR UPDATE), then its run.
        await claim.begin()
        await claim.execute(select(m.c.id).where(m.c.id == message_id).with_for_update())
        cancelling = asyncio.create_task(store.cancel_run(run_id))
        await until_a_session_waits_on_a_lock(store)
        await claim.execute(update(r).where(r.c.id == run_id).values(status="RUNNING"))
        await claim.commit()
    finally:
        await claim.close()
    info = await asyncio.wait_for(cancelling, 10)  # a deadlock would raise here
    assert info.id == run_id


async def test_cancel_from_another_process_reaches_a_running_worker_at_once(
    store: pgqrs.Store, db_url: str, backend: str, run_worker: Any
) -> None:
    if backend == "sqlite":
        pytest.skip("SQLite has no cross-process notification; the heartbeat carries it")
    started = asyncio.Event()

    async def tick() -> None:
        await asyncio.sleep(0.02)

    async def handler(ctx: pgqrs.RunContext, params: Any) -> None:
        started.set()
        for i in range(1000):
            await ctx.step(f"tick-{i}", tick)

    # Heartbeats every 20 s: only the NOTIFY can bring the cancellation in time.
    await run_worker("ticks", handler, visibility_timeout=60)
    run_id = await pgqrs.workflow("ticks").trigger().execute(store)
    await asyncio.wait_for(started.wait(), 10)
    script = textwrap.dedent(
        f"""
        import asyncio, pgqrs_sqla as pgqrs
        async def main():
            store = await pgqrs.connect({db_url!r})
            await store.cancel_run({run_id})
            await store.close()
        asyncio.run(main())
        """
    )
    began = time.monotonic()
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script, cwd=ROOT)
    assert await asyncio.wait_for(proc.wait(), 60) == 0
    with pytest.raises(pgqrs.RunCancelled):
        await store.wait_for_run(run_id, timeout=10)
    assert time.monotonic() - began < 10  # well inside one 20 s heartbeat
    assert (await store.get_run(run_id)).status is RunStatus.CANCELLED


# ---------------------------------------------------------------- errors and their steps


async def test_a_failure_is_charged_to_the_step_that_raised_it(
    store: pgqrs.Store, run_worker: Any
) -> None:
    async def fails() -> None:
        raise ValueError("bad data")

    async def handler(ctx: pgqrs.RunContext, params: dict[str, bool]) -> None:
        for name in ("alpha", "beta", "gamma", "delta", "epsilon"):
            await ctx.step(name, lambda: None)
        if params["in_step"]:
            await ctx.step("zeta", fails)
        raise RuntimeError("after the steps")

    await run_worker("charge", handler)
    in_step = await pgqrs.workflow("charge").trigger({"in_step": True}).execute(store)
    outside = await pgqrs.workflow("charge").trigger({"in_step": False}).execute(store)
    for run_id in (in_step, outside):
        with pytest.raises(pgqrs.RunFailed):
            await store.wait_for_run(run_id, timeout=10)
    error = (await store.get_run(in_step)).error
    assert error["step"] == "zeta" and error["type"] == "builtins.ValueError"
    error = (await store.get_run(outside)).error
    assert "step" not in error and error["type"] == "builtins.RuntimeError"


async def test_transient_retry_after_takes_a_timedelta(store: pgqrs.Store, run_worker: Any) -> None:
    attempts: list[int] = []

    async def flaky() -> str:
        attempts.append(len(attempts) + 1)
        if len(attempts) == 1:
            raise TransientError("try again", retry_after=timedelta(milliseconds=100))
        return "ok"

    async def handler(ctx: pgqrs.RunContext, params: Any) -> str:
        return str(await ctx.step("flaky", flaky))

    await run_worker("td", handler)
    run_id = await pgqrs.workflow("td").trigger().execute(store)
    assert await store.wait_for_run(run_id, timeout=10) == "ok"
    assert attempts == [1, 2]


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), "30", True])
def test_bad_retry_after_and_pause_durations_are_typed_errors(bad: Any) -> None:
    with pytest.raises(pgqrs.ValidationError, match="retry_after"):
        TransientError(retry_after=bad)
    with pytest.raises(pgqrs.ValidationError, match="pause duration"):
        Step.pause(bad)
