"""Schedules, on both backends: define, update, pause, resume, delete and list; exactly one run
per tick with several workers in one process; ``catch_up`` exactly after a worker was down for a
day; a worker reconciling the schedules its code declares; the tick reaching the handler; bad
input writing nothing; the CLI.

"Down for a day" is set up by moving the schedule's stored next tick a day back (the database
clock is the only clock), then running one firing pass: what the returning worker does first.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

import pgqrs_sqla as pgqrs
from pgqrs_sqla._schedule_time import tick_key
from tests._cli import run_cli
from tests._wait import eventually


async def _noop(ctx: pgqrs.RunContext, params: Any) -> Any:
    return params


async def _scheduled_runs(store: pgqrs.Store, workflow: str) -> list[pgqrs.RunInfo]:
    runs = await store.list_runs(workflow=workflow, limit=10_000)
    return sorted(runs, key=lambda r: r.scheduled_at or datetime.min.replace(tzinfo=UTC))


async def _db_now(store: pgqrs.Store) -> datetime:
    async with store.engine.connect() as conn:
        value = (await conn.execute(select(pgqrs.dialects.utcnow()))).scalar_one()
    return value if value.tzinfo else value.replace(tzinfo=UTC)


async def _set_next_tick(store: pgqrs.Store, name: str, when: datetime) -> None:
    s = store.tables.schedules
    async with store.engine.begin() as conn:
        await conn.execute(update(s).where(s.c.schedule_name == name).values(next_tick_at=when))


async def _fire(store: pgqrs.Store, workflow: str) -> int:
    """One firing pass for ``workflow``'s schedules, as a worker serving it runs."""
    info = await store.get_workflow(workflow)
    return (await store._fire_due([info.id])).fired


async def _count(store: pgqrs.Store, table: Any) -> int:
    async with store.engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(table)) or 0)


# ------------------------------------------------------------ the API


async def test_create_is_idempotent_and_an_update_recomputes_the_next_tick(
    store: pgqrs.Store,
) -> None:
    await store.create_workflow("report")
    made = await store.create_schedule("nightly", "report", cron="30 2 * * *", params={"a": 1})
    assert (made.workflow, made.cron, made.every, made.timezone) == (
        "report",
        "30 2 * * *",
        None,
        "UTC",
    )
    assert (made.catch_up, made.paused, made.origin, made.last_run_id) == (
        "latest",
        False,
        "api",
        None,
    )
    assert (made.next_tick_at.hour, made.next_tick_at.minute) == (2, 30)
    assert made.next_tick_at > await _db_now(store)

    again = await store.create_schedule("nightly", "report", cron="30 2 * * *", params={"a": 1})
    assert again == made  # the same definition changes nothing

    # New params keep the next tick; a new cron or zone recomputes it from now.
    params = await store.create_schedule("nightly", "report", cron="30 2 * * *", params={"a": 2})
    assert (params.params, params.next_tick_at) == ({"a": 2}, made.next_tick_at)
    await _set_next_tick(store, "nightly", datetime(2020, 1, 1, 2, 30, tzinfo=UTC))  # due, unfired
    berlin = await store.create_schedule(
        "nightly", "report", cron="30 2 * * *", params={"a": 2}, timezone="Europe/Berlin"
    )
    assert berlin.next_tick_at > await _db_now(store)  # the due tick was dropped, not fired
    assert berlin.next_tick_at.minute == 30 and berlin.next_tick_at.hour in (0, 1)  # CET/CEST
    every = await store.create_schedule("nightly", "report", every=timedelta(hours=1))
    assert (every.cron, every.every) == (None, 3600.0)
    assert every.next_tick_at.minute == every.next_tick_at.second == 0
    assert await _fire(store, "report") == 0
    assert await store.list_runs(workflow="report") == []

    assert [s.name for s in await store.list_schedules()] == ["nightly"]
    assert await store.list_schedules(workflow="other") == []


async def test_pause_resume_delete(store: pgqrs.Store) -> None:
    await store.create_workflow("report")
    await store.create_schedule("often", "report", every=60)
    paused = await store.pause_schedule("often")
    assert paused.paused
    await _set_next_tick(store, "often", datetime(2020, 1, 1, tzinfo=UTC))
    assert await _fire(store, "report") == 0  # a paused schedule fires nothing
    resumed = await store.resume_schedule("often")
    assert not resumed.paused
    assert resumed.next_tick_at > await _db_now(store)  # ticks while paused are skipped
    await store.delete_schedule("often")
    assert await store.list_schedules() == []
    for call in (store.delete_schedule, store.pause_schedule, store.resume_schedule):
        with pytest.raises(pgqrs.ScheduleNotFound) as caught:
            await call("often")
        assert caught.value.schedule == "often"


@pytest.mark.parametrize(
    ("options", "error", "option"),
    [
        ({"cron": "61 * * * *"}, pgqrs.InvalidSchedule, "cron"),
        ({"every": 0.5}, pgqrs.InvalidSchedule, "every"),
        ({"cron": "* * * * *", "timezone": "Nowhere/City"}, pgqrs.InvalidSchedule, "timezone"),
        ({"cron": "* * * * *", "catch_up": "some"}, pgqrs.InvalidSchedule, "catch_up"),
        ({"cron": "* * * * *", "every": 60}, pgqrs.InvalidSchedule, "every"),
        ({}, pgqrs.InvalidSchedule, "cron"),
        ({"every": 60, "params": {"x": object()}}, pgqrs.InvalidSchedule, "params"),
        ({"every": 60, "workflow": "missing"}, pgqrs.WorkflowNotFound, None),
    ],
)
async def test_bad_input_is_typed_and_writes_nothing(
    store: pgqrs.Store, options: dict[str, Any], error: type[Exception], option: str | None
) -> None:
    await store.create_workflow("report")
    options = dict(options)  # the parameter is shared by both backends' runs
    workflow = options.pop("workflow", "report")
    with pytest.raises(error) as caught:
        await store.create_schedule("bad", workflow, **options)
    if option is not None:
        assert isinstance(caught.value, pgqrs.InvalidSchedule)
        assert (caught.value.option, caught.value.schedule) == (option, "bad")
    else:
        assert isinstance(caught.value, pgqrs.WorkflowNotFound)
        assert caught.value.workflow == "missing"
    assert await _count(store, store.tables.schedules) == 0
    assert [w.name for w in await store.list_workflows()] == ["report"]


# ------------------------------------------------------------ firing


async def test_several_workers_fire_each_tick_exactly_once(store: pgqrs.Store) -> None:
    """Three workers serving one workflow, an every-second schedule: one run per tick, no
    tick between the first and the last left out."""
    await store.create_workflow("tick")
    await store.create_schedule("each-second", "tick", every=1)
    workers = [
        await pgqrs.consumer(f"w{i}", None, "tick").handler(_noop).create(store, poll_interval=0.05)
        for i in range(3)
    ]
    for worker in workers:
        worker.start()
    try:
        await eventually(lambda: _enough(store, 4), what="four scheduled runs ended", timeout=60)
    finally:
        for worker in workers:
            await worker.stop(grace=5)
    runs = await _scheduled_runs(store, "tick")
    ticks = [r.scheduled_at for r in runs]
    assert None not in ticks
    assert len(set(ticks)) == len(ticks)  # one run per tick
    first = ticks[0]
    assert first is not None
    # Consecutive seconds: none lost between the first and the last (each pass found its
    # tick on time, so catch_up="latest" skipped none).
    assert ticks == [first + timedelta(seconds=k) for k in range(len(ticks))]
    info = await store.get_schedule("each-second")
    assert info.last_tick_at is not None and info.last_run_id is not None
    assert sum(w._scheduler.fired for w in workers) == len(runs)


async def _enough(store: pgqrs.Store, n: int) -> bool:
    runs = await store.list_runs(workflow="tick", status=pgqrs.RunStatus.SUCCESS, limit=100)
    return len(runs) >= n


async def test_the_tick_reaches_the_handler(store: pgqrs.Store) -> None:
    seen: list[datetime | None] = []

    async def handler(ctx: pgqrs.RunContext, params: Any) -> Any:
        seen.append(ctx.scheduled_at)
        return {
            "params": params,
            "tick": ctx.scheduled_at.isoformat() if ctx.scheduled_at else None,
        }

    await store.create_workflow("report")
    await store.create_schedule("hourly", "report", every=3600, params={"kind": "hourly"})
    await _set_next_tick(store, "hourly", datetime(2026, 1, 1, 10, tzinfo=UTC))  # long due
    assert await _fire(store, "report") == 1
    worker = await pgqrs.consumer("w", None, "report").handler(handler).create(store)
    await worker.run_until_idle(timeout=30)
    await worker.stop()
    (run,) = await store.list_runs(workflow="report")
    latest = run.scheduled_at
    assert latest is not None and latest.minute == latest.second == 0
    assert seen == [latest]
    assert run.output == {"params": {"kind": "hourly"}, "tick": latest.isoformat()}
    assert run.idempotency_key == tick_key("hourly", latest)
    info = await store.get_schedule("hourly")
    assert (info.last_tick_at, info.last_run_id) == (latest, run.id)


async def test_a_tick_fired_twice_makes_one_run(store: pgqrs.Store) -> None:
    """The (workflow, idempotency key) record: a tick put back and fired again returns the
    run it already made instead of a second one."""
    await store.create_workflow("report")
    await store.create_schedule("hourly", "report", every=3600)
    tick = _hour(await _db_now(store))
    for _ in range(2):
        await _set_next_tick(store, "hourly", tick)
        await _fire(store, "report")
    runs = await store.list_runs(workflow="report")
    assert [r.scheduled_at for r in runs] in ([tick], [tick + timedelta(hours=1)])
    assert (await store.get_schedule("hourly")).last_run_id == runs[0].id


def _hour(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


@pytest.mark.parametrize("catch_up", ["latest", "all", "none"])
async def test_a_day_down_then_back_daily_cron(store: pgqrs.Store, catch_up: str) -> None:
    """A daily cron whose time was two hours ago: down for a day, two ticks were missed
    (yesterday's and today's); ``latest`` runs today's, ``all`` both, ``none`` neither."""
    await store.create_workflow("report")
    now = await _db_now(store)
    today = (now - timedelta(hours=2)).replace(second=0, microsecond=0)
    yesterday = today - timedelta(days=1)
    cron = f"{today.minute} {today.hour} * * *"
    await store.create_schedule("daily", "report", cron=cron, catch_up=catch_up)
    await _set_next_tick(store, "daily", yesterday)
    fired = await _fire(store, "report")
    ticks = [r.scheduled_at for r in await _scheduled_runs(store, "report")]
    expected = {"latest": [today], "all": [yesterday, today], "none": []}[catch_up]
    assert ticks == expected
    assert fired == len(expected)
    info = await store.get_schedule("daily")
    assert info.next_tick_at == today + timedelta(days=1)
    assert info.last_tick_at == (expected[-1] if expected else None)
    assert await _fire(store, "report") == 0  # nothing due any more


async def test_a_day_down_then_back_hourly_catch_up_all(store: pgqrs.Store) -> None:
    """Every hour, down for a day: each of the 25 hourly ticks from a day ago to the last
    whole hour runs once, oldest first; the next tick is the coming hour."""
    await store.create_workflow("report")
    await store.create_schedule("hourly", "report", every=3600, catch_up="all")
    before = _hour(await _db_now(store))
    await _set_next_tick(store, "hourly", before - timedelta(days=1))
    fired = await _fire(store, "report")
    after = _hour(await _db_now(store))
    ticks = [r.scheduled_at for r in await _scheduled_runs(store, "report")]
    assert fired == len(ticks)
    assert ticks == [before - timedelta(days=1) + timedelta(hours=h) for h in range(len(ticks))]
    assert ticks[-1] in (before, after)  # the last whole hour when the pass ran
    info = await store.get_schedule("hourly")
    assert info.next_tick_at == ticks[-1] + timedelta(hours=1)


# ------------------------------------------------------------ declared in code


async def test_a_worker_reconciles_the_schedules_its_code_declares(store: pgqrs.Store) -> None:
    await store.create_workflow("report")
    await store.create_schedule("by-hand", "report", every=600)  # the API's: never deleted

    async def start(registry: pgqrs.WorkflowRegistry) -> None:
        worker = await registry.create_worker(store, "w")
        await worker.stop()

    v1 = pgqrs.WorkflowRegistry()
    v1.add_workflow("report", _noop)
    v1.schedule("nightly", "report", cron="0 3 * * *", params={"v": 1})
    await start(v1)
    by_name = {s.name: s for s in await store.list_schedules()}
    assert sorted(by_name) == ["by-hand", "nightly"]
    assert (by_name["nightly"].origin, by_name["nightly"].params) == ("code", {"v": 1})

    v2 = pgqrs.WorkflowRegistry()  # the next deploy changes it
    v2.add_workflow("report", _noop)
    v2.schedule("nightly", "report", cron="0 4 * * *", params={"v": 2})
    await start(v2)
    nightly = await store.get_schedule("nightly")
    assert (nightly.cron, nightly.params, nightly.next_tick_at.hour) == ("0 4 * * *", {"v": 2}, 4)

    v3 = pgqrs.WorkflowRegistry()  # and the one after drops it
    v3.add_workflow("report", _noop)
    await start(v3)
    assert [s.name for s in await store.list_schedules()] == ["by-hand"]


async def test_reconcile_leaves_other_workflows_schedules_alone(store: pgqrs.Store) -> None:
    other = pgqrs.WorkflowRegistry()
    other.add_workflow("billing", _noop)
    other.schedule("invoices", "billing", cron="0 1 * * *")
    await (await other.create_worker(store, "billing-worker")).stop()
    mine = pgqrs.WorkflowRegistry()  # a worker of another deploy, other workflows
    mine.add_workflow("report", _noop)
    await (await mine.create_worker(store, "report-worker")).stop()
    assert [s.name for s in await store.list_schedules()] == ["invoices"]
    # A consumer with no schedule declared does not reconcile at all.
    await store.create_workflow("billing")
    plain = pgqrs.consumer("plain", None, "billing").handler(_noop)
    await (await plain.create(store)).stop()
    assert [s.name for s in await store.list_schedules()] == ["invoices"]
    # One that declares them does.
    declared = pgqrs.consumer("decl", None, "billing").handler(_noop)
    declared.schedule("statements", every=timedelta(days=1))
    await (await declared.create(store)).stop()
    assert [s.name for s in await store.list_schedules()] == ["statements"]


def test_declarations_are_checked_when_made() -> None:
    registry = pgqrs.WorkflowRegistry()
    with pytest.raises(pgqrs.InvalidSchedule):
        registry.schedule("x", "report", cron="nope")
    registry.schedule("x", "report", every=60)
    with pytest.raises(pgqrs.ConfigurationError):
        registry.schedule("x", "report", every=60)
    with pytest.raises(pgqrs.ConfigurationError):
        pgqrs.consumer("c", None, "a").schedule("y", workflow="b", every=60)


# ------------------------------------------------------------ CLI


async def test_cli_lists_pauses_resumes_and_deletes(store: pgqrs.Store, db_url: str) -> None:
    await store.create_workflow("report")
    await store.create_schedule("nightly", "report", cron="30 2 * * *")
    await store.create_schedule("hourly", "report", every=3600)
    url = ["--database-url", db_url]
    listed = run_cli(*url, "--json", "schedules", "list")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [r["name"] for r in rows] == ["hourly", "nightly"]
    assert rows[1]["next_tick_at"] and rows[1]["last_run_id"] is None
    text = run_cli(*url, "schedules")
    assert text.returncode == 0 and "nightly" in text.stdout and "every 3600s" in text.stdout
    assert run_cli(*url, "schedules", "pause", "nightly").returncode == 0
    assert (await store.get_schedule("nightly")).paused
    assert run_cli(*url, "schedules", "resume", "nightly").returncode == 0
    assert not (await store.get_schedule("nightly")).paused
    assert run_cli(*url, "schedules", "delete", "nightly").returncode == 0
    missing = run_cli(*url, "schedules", "delete", "nightly")
    assert missing.returncode == 1 and "no schedule named 'nightly'" in missing.stderr
    assert [s.name for s in await store.list_schedules()] == ["hourly"]
