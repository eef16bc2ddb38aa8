"""Durable waits under SIGKILL: a timer and an event wait outlive the worker process that
parked them, and a storm of kills over runs that wait for events and sleep loses nothing,
runs no step twice and consumes every event once. Worker processes run
``tests/worker_proc.py waits``: each step is transactional and writes one row of the app
table ``effects`` with its checkpoint, so a step body that counts is one that committed."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

import pgqrs_sqla as pgqrs
from pgqrs_sqla import RunStatus
from pgqrs_sqla.dialects import aware, utcnow
from tests._rows import deliveries_by_run
from tests._wait import eventually

from ._support import Procs, report, run_statuses

pytestmark = pytest.mark.reliability

Plan = list[list[Any]]


async def prepare(store: pgqrs.Store) -> None:
    # Kills hit runs many times over: their deliveries must not run out.
    await store.create_workflow("waits", max_deliveries=1000)
    async with store._begin() as conn:
        await conn.execute(
            text("CREATE TABLE effects (run_id BIGINT NOT NULL, step VARCHAR(32) NOT NULL)")
        )


async def trigger(store: pgqrs.Store, plan: Plan, n: int = 1) -> list[int]:
    async with store._begin() as conn:
        return [
            await pgqrs.workflow("waits").trigger({"plan": plan}).execute(conn) for _ in range(n)
        ]


async def effects(store: pgqrs.Store) -> Counter[tuple[int, str]]:
    """How many times each (run, step) body committed its side effect."""
    async with store._read() as conn:
        rows = (await conn.execute(text("SELECT run_id, step FROM effects"))).all()
    return Counter((int(r.run_id), str(r.step)) for r in rows)


async def db_now(store: pgqrs.Store) -> datetime:
    async with store._read() as conn:
        now = aware((await conn.execute(select(utcnow()))).scalar_one())
    assert now is not None
    return now


async def wait_row(store: pgqrs.Store, run_id: int, name: str) -> Any:
    """The step row of wait ``name``: its status, kind, wake_at and wait_for."""
    s = store.tables.steps
    async with store._read() as conn:
        return (
            await conn.execute(
                select(s.c.status, s.c.kind, s.c.wake_at, s.c.wait_for).where(
                    s.c.run_id == run_id, s.c.step_name == name
                )
            )
        ).one()


async def event_rows(store: pgqrs.Store) -> list[Any]:
    e = store.tables.events
    async with store._read() as conn:
        return list(
            (
                await conn.execute(
                    select(
                        e.c.run_id, e.c.event_name, e.c.payload, e.c.consumed_at, e.c.consumed_by
                    ).order_by(e.c.id)
                )
            ).all()
        )


def bodies(procs: Procs) -> Counter[tuple[int, str]]:
    """How many times each (run, step) body started (the journal: committed or not)."""
    return Counter((int(b["run"]), str(b["step"])) for b in procs.journal_lines())


def pid_of(procs: Procs, run_id: int, step: str) -> int:
    [pid] = {
        int(b["pid"]) for b in procs.journal_lines() if (b["run"], b["step"]) == (run_id, step)
    }
    return pid


async def park_then_kill(
    store: pgqrs.Store, procs: Procs, run_id: int, wait: str, kind: str
) -> Any:
    """Worker process ``a`` runs the run into wait ``wait``; it is SIGKILLed there. Returns
    the wait's row as parked."""
    a = await procs.start("a")
    await store.wait_for_status(run_id, RunStatus.PAUSED, timeout=30)
    parked = await wait_row(store, run_id, wait)
    assert (parked.status, parked.kind) == ("PAUSED", kind)
    await procs.kill("a")
    assert a.returncode == -9
    return parked


# ---------------------------------------------------------------- a timer

NAP = 3.0  # seconds


@pytest.mark.timeout(60)
async def test_a_sleep_outlives_its_killed_worker_with_its_deadline_unchanged(
    store: pgqrs.Store, db_url: str, backend: str, tmp_path: Path
) -> None:
    await prepare(store)
    [run_id] = await trigger(store, [["step", "before"], ["sleep", "nap", NAP], ["step", "after"]])
    procs = Procs("waits", db_url, tmp_path)
    async with procs.session() as codes:
        parked = await park_then_kill(store, procs, run_id, "nap", "sleep")
        wake_at = aware(parked.wake_at)
        assert wake_at is not None
        killed_at = await db_now(store)
        assert killed_at < wake_at, "the worker must die while the run sleeps"
        await procs.start("b")
        await eventually(lambda: procs.ready("b"), timeout=30, what="worker b ready")
        b_ready = await db_now(store)
        output = await store.wait_for_run(run_id, timeout=30)

    run = await store.get_run(run_id)
    steps = {s.name: s for s in run.steps}
    after = await wait_row(store, run_id, "nap")
    before_done = aware(steps["before"].finished_at)
    finished = aware(run.finished_at)
    assert before_done is not None and finished is not None
    report(
        "sleep across a kill",
        backend=backend,
        nap_s=NAP,
        killed_after_park_s=(killed_at - (wake_at - timedelta(seconds=NAP))).total_seconds(),
        b_ready_before_deadline_s=(wake_at - b_ready).total_seconds(),
        finished_after_deadline_s=(finished - wake_at).total_seconds(),
    )
    assert codes == {"b": 0}, procs.log_tail()
    assert output == {}
    assert run.status is RunStatus.SUCCESS
    # Each step body ran once: "before" in the killed worker, "after" in its successor.
    assert bodies(procs) == {(run_id, "before"): 1, (run_id, "after"): 1}
    assert await effects(store) == {(run_id, "before"): 1, (run_id, "after"): 1}
    assert pid_of(procs, run_id, "before") == procs.killed[0]
    assert pid_of(procs, run_id, "after") != procs.killed[0]
    # Not shortened: the run went on only at the deadline set when it first parked ...
    assert (after.status, aware(after.wake_at)) == ("SUCCESS", wake_at)
    assert finished - before_done >= timedelta(seconds=NAP)
    assert finished >= wake_at
    # ... and not restarted: worker b did not sleep a whole nap again once it could run it.
    assert finished - max(wake_at, b_ready) < timedelta(seconds=NAP)


# ---------------------------------------------------------------- an event


@pytest.mark.timeout(60)
async def test_an_event_sent_while_no_worker_lives_is_consumed_once_by_the_next(
    store: pgqrs.Store, db_url: str, backend: str, tmp_path: Path
) -> None:
    await prepare(store)
    plan = [["step", "before"], ["event", "approved"], ["step", "after"]]
    [run_id] = await trigger(store, plan)
    procs = Procs("waits", db_url, tmp_path)
    async with procs.session() as codes:
        parked = await park_then_kill(store, procs, run_id, "approved", "event")
        assert parked.wait_for == "approved"
        await store.send_event(run_id, "approved", {"by": "ops"})  # no worker alive
        [sent] = await event_rows(store)
        assert sent.consumed_at is None
        assert (await store.get_run(run_id)).status is RunStatus.PAUSED
        await procs.start("b")
        output = await store.wait_for_run(run_id, timeout=30)

    assert codes == {"b": 0}, procs.log_tail()
    assert output == {"approved": {"by": "ops"}}
    [event] = await event_rows(store)
    assert (event.run_id, event.event_name, event.payload) == (run_id, "approved", {"by": "ops"})
    assert event.consumed_at is not None and event.consumed_by == "approved"
    run = await store.get_run(run_id)
    assert {s.name: s.output for s in run.steps}["approved"] == {"payload": {"by": "ops"}}
    assert bodies(procs) == {(run_id, "before"): 1, (run_id, "after"): 1}
    assert await effects(store) == {(run_id, "before"): 1, (run_id, "after"): 1}
    assert pid_of(procs, run_id, "before") == procs.killed[0]


# ---------------------------------------------------------------- a kill storm

RUNS = 30
SLOTS = 2
STORM_SECONDS = 8.0  # kills stop after this, or once every run is done
STORM_PLAN: Plan = [
    ["step", "s1"],
    ["event", "go"],
    ["step", "s2"],
    ["sleep", "nap", 0.2],
    ["step", "s3"],
]


@pytest.mark.timeout(90)
async def test_a_kill_storm_over_waiting_runs(
    store: pgqrs.Store, db_url: str, backend: str, tmp_path: Path
) -> None:
    """2 worker processes, one SIGKILLed and restarted every 0.3-0.8 s, while the test sends
    each run its event at a random moment: before its wait, while it is parked, or while its
    worker lies dead."""
    await prepare(store)
    run_ids = await trigger(store, STORM_PLAN, RUNS)
    procs = Procs("waits", db_url, tmp_path)

    async def send_all() -> None:
        for i, run_id in enumerate(random.sample(run_ids, len(run_ids))):
            if i == RUNS // 2:
                # The other half's runs stay parked until the storm has killed workers, so
                # its kills meet unfinished runs however fast (or slow) this machine is.
                await eventually(
                    lambda: len(procs.killed) >= 5, timeout=60, what="the storm's first kills"
                )
            await asyncio.sleep(random.uniform(0.0, 0.2))
            await store.send_event(run_id, "go", {"run": run_id})

    async def finished() -> bool:
        return (await run_statuses(store, "waits")).get("SUCCESS", 0) == RUNS

    async with procs.session() as codes:
        sender = asyncio.create_task(send_all())
        try:
            started = await procs.storm(SLOTS, STORM_SECONDS, (0.3, 0.8), finished)
            storm = time.monotonic() - started
            await sender
        finally:
            sender.cancel()  # a no-op once it has sent every event
        await eventually(finished, timeout=40, interval=0.2, what="every run SUCCESS")
        drained = time.monotonic() - started

    t = store.tables
    async with store._read() as conn:
        steps = (
            await conn.execute(select(t.steps.c.run_id, t.steps.c.step_name, t.steps.c.status))
        ).all()
    deliveries = await deliveries_by_run(store)
    outputs = {run_id: await store.wait_for_run(run_id, timeout=5) for run_id in run_ids}
    events = await event_rows(store)
    started_bodies = bodies(procs)
    committed = await effects(store)
    by_pid: dict[int, set[int]] = {}
    for line in procs.journal_lines():
        by_pid.setdefault(int(line["run"]), set()).add(int(line["pid"]))
    # Runs that a killed process worked on and another finished (parked or cut short there).
    taken_over = [r for r, pids in by_pid.items() if pids & set(procs.killed) and len(pids) > 1]
    report(
        "kill storm over waits",
        backend=backend,
        runs=RUNS,
        processes=SLOTS,
        kills=len(procs.killed),
        storm_s=storm,
        drained_s=drained,
        deliveries=sum(deliveries.values()),
        max_deliveries_of_a_run=max(deliveries.values()),
        runs_taken_over_from_a_killed_process=len(taken_over),
        bodies_cut_by_a_kill=sum(started_bodies.values()) - sum(committed.values()),
    )

    assert set(codes.values()) == {0}, procs.log_tail()
    assert await run_statuses(store, "waits") == {"SUCCESS": RUNS}
    assert outputs == {run_id: {"go": {"run": run_id}} for run_id in run_ids}
    # Every step body committed exactly once per run; every wait recorded once, done.
    names = ("s1", "s2", "s3")
    assert committed == {(run_id, s): 1 for run_id in run_ids for s in names}
    assert sorted((r.run_id, r.step_name) for r in steps) == sorted(
        (run_id, s) for run_id in run_ids for s in ("s1", "go", "s2", "nap", "s3")
    )
    assert {r.status for r in steps} == {"SUCCESS"}
    # Every event consumed exactly once, by the wait it was sent to.
    assert sorted(e.run_id for e in events) == sorted(run_ids)
    assert all(e.consumed_at is not None and e.consumed_by == "go" for e in events)
    assert all(e.payload == {"run": e.run_id} for e in events)
    assert len(procs.killed) >= 5, "the storm must actually kill workers"
    assert taken_over, "some kill must have hit a process with runs under way"


# ---------------------------------------------------------------- rolled-back events

ROLLED_BACK_RUNS = 16
EVENT_TIMEOUT = 3.0


@pytest.mark.timeout(60)
async def test_events_rolled_back_under_concurrency_are_never_seen(
    store: pgqrs.Store, run_worker: Any
) -> None:
    """Every run gets an event in a transaction that rolls back, sent while the workers claim
    and park the runs (on PostgreSQL a park that comes meanwhile waits on the sender's lock
    of the message row, then finds no event); the even ones then get a committed event too. The odd ones time out, the even ones see only
    the committed payload, and no rolled-back event exists."""

    async def handler(ctx: pgqrs.RunContext, params: Any) -> Any:
        try:
            return await ctx.wait_for_event("paid", timeout=EVENT_TIMEOUT)
        except pgqrs.EventTimeout:
            return "timed out"

    await run_worker("ghosts", handler, concurrency=4)
    async with store._begin() as conn:
        run_ids = [
            await pgqrs.workflow("ghosts").trigger().execute(conn) for _ in range(ROLLED_BACK_RUNS)
        ]
    one_at_a_time = asyncio.Semaphore(4)

    async def ghost_then_maybe_real(i: int, run_id: int) -> None:
        async with one_at_a_time, store.engine.connect() as conn:
            tx = await conn.begin()
            await store.send_event(run_id, "paid", "ghost", target=conn)
            await asyncio.sleep(random.uniform(0.0, 0.05))  # held while workers park runs
            await tx.rollback()
        if i % 2 == 0:
            await store.send_event(run_id, "paid", "real")

    await asyncio.gather(*(ghost_then_maybe_real(i, r) for i, r in enumerate(run_ids)))
    outputs = [await store.wait_for_run(r, timeout=30) for r in run_ids]
    assert outputs == ["real" if i % 2 == 0 else "timed out" for i in range(ROLLED_BACK_RUNS)]
    events = await event_rows(store)
    assert sorted(e.run_id for e in events) == sorted(run_ids[::2])
    assert {(e.payload, e.consumed_by) for e in events} == {("real", "paid")}


# ---------------------------------------------------------------- children

KIDS = 5


@pytest.mark.timeout(60)
async def test_a_parent_waiting_for_children_outlives_its_killed_worker(
    store: pgqrs.Store, db_url: str, backend: str, tmp_path: Path
) -> None:
    """The worker is SIGKILLed while a parent waits for its 5 children (each asleep): the
    next worker finishes them all, each child started and each step ran exactly once, and
    the parent, woken by the last child, goes on."""
    await prepare(store)
    child_plan = [["sleep", "nap", 1.5], ["step", "child"]]
    plan = [["step", "before"], ["children", "kids", KIDS, child_plan], ["step", "after"]]
    [parent] = await trigger(store, plan)
    procs = Procs("waits", db_url, tmp_path)
    async with procs.session() as codes:
        a = await procs.start("a")
        await store.wait_for_status(parent, RunStatus.PAUSED, timeout=30)

        async def kids_asleep() -> bool:
            children = (await store.get_run(parent)).children
            runs = [await store.get_run(c) for c in children]
            return len(runs) == KIDS and all(r.status is RunStatus.PAUSED for r in runs)

        await eventually(kids_asleep, timeout=30, what="5 children asleep")
        parked = await wait_row(store, parent, "kids")
        assert (parked.status, parked.kind) == ("PAUSED", "run")
        await procs.kill("a")
        assert a.returncode == -9
        await procs.start("b")
        output = await store.wait_for_run(parent, timeout=30)

    assert codes == {"b": 0}, procs.log_tail()
    assert output == {"kids": ["SUCCESS"] * KIDS}
    run = await store.get_run(parent)
    children = run.children
    assert len(children) == KIDS  # started once each, never again after the kill
    expected = {(parent, "before"): 1, (parent, "after"): 1}
    expected.update({(child, "child"): 1 for child in children})
    assert await effects(store) == expected
    for child in children:
        assert (await store.get_run(child)).parent_run_id == parent
    report("parent waiting for children across a kill", backend=backend, children=KIDS)
