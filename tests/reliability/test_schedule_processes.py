"""Schedules across worker processes (``tests/worker_proc.py schedule``): several processes
serving one workflow with an every-second schedule fire each tick exactly once, on both
backends; and on PostgreSQL a process SIGKILLed with its tick transaction open loses no tick
and doubles none.

The tick transaction is caught open honestly: the test holds ``LOCK TABLE`` on the runs
table, so the one worker's firing statement (which has locked its schedule row and wants to
insert the run) waits inside its transaction; the test sees that wait in
``pg_stat_activity``, kills the process, then lets go.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

import pgqrs_sqla as pgqrs
from tests._wait import eventually

from ._support import Procs, report

pytestmark = pytest.mark.reliability


async def _ticks(store: pgqrs.Store) -> list[datetime]:
    runs = await store.list_runs(workflow="schedule", limit=10_000)
    ticks = [r.scheduled_at for r in runs]
    assert None not in ticks
    return sorted(t for t in ticks if t is not None)


def _consecutive(ticks: list[datetime]) -> bool:
    return ticks == [ticks[0] + timedelta(seconds=k) for k in range(len(ticks))]


async def test_processes_fire_each_tick_once(
    store: pgqrs.Store, db_url: str, backend: str, tmp_path: Path
) -> None:
    await store.create_workflow("schedule")
    await store.create_schedule("each-second", "schedule", every=1, catch_up="all")
    procs = Procs("schedule", db_url, tmp_path)
    async with procs.session():
        for i in range(3):
            await procs.start(f"p{i}")

        async def enough() -> bool:
            # Fired is not yet handled: on a loaded machine five ticks had fired and no
            # handler had begun when the processes were stopped (a CI gate run).
            return len(await _ticks(store)) >= 5 and bool(procs.journal_lines())

        await eventually(enough, timeout=60, what="five ticks fired, one handled")
    ticks = await _ticks(store)
    assert len(set(ticks)) == len(ticks)
    assert _consecutive(ticks)
    handled = [line["tick"] for line in procs.journal_lines()]
    # What the handlers saw as their tick is a tick that was fired.
    assert handled and set(handled) <= {t.isoformat() for t in ticks}
    report("schedule processes", backend=backend, processes=3, ticks=len(ticks))


async def test_a_worker_killed_mid_tick_loses_and_doubles_no_tick(
    store: pgqrs.Store, db_url: str, backend: str, tmp_path: Path
) -> None:
    if backend != "postgresql":
        pytest.skip("holding a table lock against another process's open transaction: PostgreSQL")
    await store.create_workflow("schedule")
    await store.create_schedule("each-second", "schedule", every=1, catch_up="all")
    procs = Procs("schedule", db_url, tmp_path)
    async with procs.session():
        await procs.start("victim")
        await eventually(lambda: procs.ready("victim"), timeout=60, what="victim ready")
        async with store.engine.connect() as blocker:
            await blocker.execute(text("BEGIN"))
            await blocker.execute(text(f"LOCK TABLE {store.tables.runs.name} IN EXCLUSIVE MODE"))

            async def firing_waits() -> bool:
                async with store.engine.connect() as conn:
                    waiting = await conn.scalar(
                        text(
                            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = "
                            "'Lock' AND state = 'active' AND query LIKE '%INSERT INTO "
                            f"{store.tables.runs.name}%' AND datname = current_database()"
                        )
                    )
                return bool(waiting)

            await eventually(firing_waits, timeout=30, what="the tick transaction waits")
            held = (await store.get_schedule("each-second")).next_tick_at  # not moved yet
            await procs.kill("victim")
            await blocker.execute(text("ROLLBACK"))
        for i in range(2):
            await procs.start(f"p{i}")

        async def past_the_kill() -> bool:
            ticks = await _ticks(store)
            return len([t for t in ticks if t > held]) >= 3

        await eventually(past_the_kill, timeout=60, what="three ticks after the killed one")
    ticks = await _ticks(store)
    assert held in ticks  # the tick the killed worker was firing was fired by another
    assert len(set(ticks)) == len(ticks)  # none twice
    assert _consecutive(ticks)  # none lost
    report("schedule killed mid-tick", backend=backend, ticks=len(ticks), killed=len(procs.killed))


async def test_a_schedule_made_in_another_process_is_fired_without_waiting_for_a_pass(
    store: pgqrs.Store, db_url: str, backend: str, tmp_path: Path
) -> None:
    """PostgreSQL: ``create_schedule`` NOTIFYs the schedulers of other processes, so a worker
    process asleep until its next pass (a minute away) fires the new schedule's first tick
    at once. (SQLite has no cross-process wake-up: there it waits for the pass.)"""
    if backend != "postgresql":
        pytest.skip("a wake-up across processes is PostgreSQL's NOTIFY")
    await store.create_workflow("schedule")
    await store.create_schedule("warm-up", "schedule", every=1, catch_up="none")
    procs = Procs("schedule", db_url, tmp_path)
    async with procs.session():
        await procs.start("worker")
        # Its scheduler is passing (a tick fired); once 'warm-up' is gone and its next tick
        # has passed, the scheduler's pass finds nothing and sleeps its full minute.
        await eventually(lambda: _ticks(store), timeout=60, what="the warm-up's first tick")
        await store.delete_schedule("warm-up")
        last = max(await _ticks(store))

        async def a_pass_found_nothing() -> bool:
            async with store.engine.connect() as conn:
                now = await conn.scalar(text("SELECT now()"))
            return bool(now > last + timedelta(seconds=2))

        await eventually(a_pass_found_nothing, timeout=30, what="the warm-up's next tick past")
        made = datetime.now().astimezone()
        await store.create_schedule("fresh", "schedule", every=1, catch_up="none")

        async def fired() -> bool:
            runs = await store.list_runs(workflow="schedule", limit=10_000)
            return any(
                r.idempotency_key.startswith("schedule:fresh:") for r in runs if r.idempotency_key
            )

        # Well within the sleeping scheduler's minute: only the NOTIFY can have woken it.
        await eventually(fired, timeout=30, what="the new schedule's first tick")
        waited = (datetime.now().astimezone() - made).total_seconds()
    report("schedule made elsewhere", backend=backend, first_tick_after_s=waited)
