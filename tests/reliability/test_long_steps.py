"""Long steps: a step that outlasts the visibility timeout keeps its lease while its worker
lives (the heartbeat extends it), and is taken over within a few leases once that worker's
process is SIGKILLed."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

import pgqrs_sqla as pgqrs
from tests._rows import message_of
from tests._wait import eventually

from ._support import Procs, report

pytestmark = pytest.mark.reliability

VT = 1.0  # the lease; tests/worker_proc.py's `long` mode uses the same


def recording_handler(who: str, executed: list[str], started: asyncio.Event, seconds: float) -> Any:
    async def handler(ctx: pgqrs.RunContext, params: Any) -> Any:
        async def long() -> str:
            executed.append(who)
            started.set()
            await asyncio.sleep(seconds)
            return who

        return await ctx.step("long", long)

    return handler


@pytest.mark.timeout(60)
async def test_a_long_step_is_not_stolen_from_a_live_worker(store: pgqrs.Store) -> None:
    await store.create_workflow("long")
    executed: list[str] = []
    owner_started, thief_started = asyncio.Event(), asyncio.Event()
    owner = await (
        pgqrs.consumer("owner", None, "long")
        .handler(recording_handler("owner", executed, owner_started, 3 * VT))
        .create(store, visibility_timeout=VT, poll_interval=0.05)
    )
    thief = await (
        pgqrs.consumer("thief", None, "long")
        .handler(recording_handler("thief", executed, thief_started, 0))
        .create(store, visibility_timeout=VT, poll_interval=0.05)
    )
    run_id = await pgqrs.workflow("long").trigger().execute(store)
    async with owner:
        await asyncio.wait_for(owner_started.wait(), 30)
        async with thief:  # polls the same queue for the whole 3 s step
            started = time.monotonic()
            assert await store.wait_for_run(run_id, timeout=30) == "owner"
            step_s = time.monotonic() - started
    run = await store.get_run(run_id)
    report(
        "long step kept",
        backend=store.engine.dialect.name,
        visibility_timeout_s=VT,
        step_s=step_s,
        thief_claims=thief.stats.claimed,
        executions=len(executed),
    )
    assert executed == ["owner"]
    assert thief.stats.claimed == 0
    assert (await message_of(store, run_id)).read_ct == 1
    assert [(s.name, s.attempts) for s in run.steps] == [("long", 1)]
    assert step_s >= 2 * VT  # it really outlived the lease


@pytest.mark.timeout(90)
async def test_a_long_step_is_taken_over_promptly_after_its_worker_is_killed(
    store: pgqrs.Store, db_url: str, tmp_path: Path
) -> None:
    await store.create_workflow("long")
    run_id = await pgqrs.workflow("long").trigger().execute(store)
    procs = Procs("long", db_url, tmp_path)
    await procs.start("victim")
    executed: list[str] = []
    rescued = asyncio.Event()
    rescuer = await (
        pgqrs.consumer("rescuer", None, "long")
        .handler(recording_handler("rescuer", executed, rescued, 0))
        .create(store, visibility_timeout=VT, poll_interval=0.05)
    )
    async with procs.session():

        async def victim_started() -> bool:
            return any(e["run"] == run_id for e in procs.journal_lines())

        await eventually(
            victim_started, timeout=30, interval=0.05, what="the victim starts the step"
        )
        async with rescuer:
            # The victim's step runs past three leases; its heartbeat keeps the run.
            await asyncio.sleep(3 * VT)
            assert rescuer.stats.claimed == 0
            assert (await message_of(store, run_id)).read_ct == 1
            await procs.kill("victim")
            killed_at = time.monotonic()
            await asyncio.wait_for(rescued.wait(), 30)
            takeover = time.monotonic() - killed_at
            assert await store.wait_for_run(run_id, timeout=30) == "rescuer"
    report(
        "long step taken over",
        backend=store.engine.dialect.name,
        visibility_timeout_s=VT,
        takeover_after_kill_s=takeover,
    )
    assert executed == ["rescuer"]
    assert [e["attempt"] for e in procs.journal_lines()] == [1]
    assert (await message_of(store, run_id)).read_ct == 2
    assert takeover < 3 * VT
