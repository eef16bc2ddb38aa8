"""Kill storm: 4 worker processes drain a 5-step workflow while a driver SIGKILLs a random one
every 0.5-1 s and starts a fresh one in its place. Afterwards nothing is lost, nothing is
recorded twice, and the transactional step's side effect exists exactly once per run."""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import inspect, select, text
from sqlalchemy.ext.asyncio import AsyncSession

import pgqrs_sqla as pgqrs
from pgqrs_sqla.dialects import aware
from tests._rows import deliveries_by_run
from tests._wait import eventually

from ._support import Procs, report, run_statuses

pytestmark = pytest.mark.reliability

SLOTS = 4
STORM_SECONDS = 10.0  # kills stop after this, or when every run is done, whichever is first
DRAIN_SECONDS = 90.0


@pytest.mark.timeout(180)
async def test_kill_storm(store: pgqrs.Store, db_url: str, backend: str, tmp_path: Path) -> None:
    total = 300
    # Many kills may hit the same run: its deliveries must not run out (that would be a
    # dead letter, which is the right outcome for a poison message, not for this test).
    await store.create_workflow("storm", max_deliveries=1000)
    async with store._begin() as conn:
        await conn.execute(
            text("CREATE TABLE effects (run_id BIGINT NOT NULL, step VARCHAR(16) NOT NULL)")
        )
    async with AsyncSession(store.engine) as session, session.begin():
        run_ids = [
            await pgqrs.workflow("storm").trigger({"i": i}).execute(session) for i in range(total)
        ]

    procs = Procs("storm", db_url, tmp_path)

    async def finished() -> bool:
        return (await run_statuses(store, "storm")).get("SUCCESS", 0) == total

    async with procs.session() as codes:
        started = await procs.storm(SLOTS, STORM_SECONDS, (0.5, 1.0), finished)
        storm = time.monotonic() - started
        await eventually(finished, timeout=DRAIN_SECONDS, interval=0.2, what="every run SUCCESS")
        drained = time.monotonic() - started

    t = store.tables
    statuses = await run_statuses(store, "storm")
    async with store._read() as conn:
        steps = (
            await conn.execute(
                select(
                    t.steps.c.run_id,
                    t.steps.c.step_name,
                    t.steps.c.status,
                    t.steps.c.finished_at,
                    t.steps.c.attempts,
                )
            )
        ).all()
        effects = Counter((await conn.execute(text("SELECT run_id FROM effects"))).scalars().all())
        unique_keys = await conn.run_sync(
            lambda c: (
                [
                    tuple(u["column_names"])
                    for u in inspect(c).get_unique_constraints(t.steps.name, schema=t.steps.schema)
                ]
                + [
                    tuple(i["column_names"])
                    for i in inspect(c).get_indexes(t.steps.name, schema=t.steps.schema)
                    if i["unique"]
                ]
            )
        )
    deliveries = await deliveries_by_run(store)
    [stats] = await store.queue_stats("storm")

    per_run = Counter(row.run_id for row in steps)
    recorded_at: dict[tuple[int, str], datetime] = {
        (row.run_id, row.step_name): aware(row.finished_at)  # type: ignore[misc]
        for row in steps
    }
    bodies = procs.journal_lines()
    executions = Counter((b["run"], b["step"]) for b in bodies)
    # A step body that started after its step was recorded would mean a replay ran it again.
    rerun_after_record = [
        b for b in bodies if b["t"] > recorded_at[(b["run"], b["step"])].timestamp() + 0.05
    ]
    lease_lost = sum(s.get("lease_lost", 0) for s in procs.stats_lines())
    figures = dict(
        backend=backend,
        runs=total,
        processes=SLOTS,
        kills=len(procs.killed),
        restarts=procs.started - SLOTS,
        storm_s=storm,
        drained_s=drained,
        redelivered_runs=sum(1 for n in deliveries.values() if n > 1),
        max_deliveries_of_a_run=max(deliveries.values()),
        bodies_rerun_after_kill=sum(n - 1 for n in executions.values()),
        duplicate_steps=sum(1 for n in per_run.values() if n > 5),
        duplicate_effects=sum(1 for n in effects.values() if n > 1),
        lost_runs=total - statuses.get("SUCCESS", 0),
        lease_lost_in_survivors=lease_lost,
    )
    report("kill storm", **figures)

    assert set(codes.values()) == {0}, procs.log_tail()
    assert statuses == {"SUCCESS": total}
    # Every step recorded exactly once per run (the (run_id, step_name) unique constraint
    # makes a second row impossible; the count proves none is missing).
    assert ("run_id", "step_name") in unique_keys
    assert per_run == dict.fromkeys(run_ids, 5)
    assert {row.status for row in steps} == {"SUCCESS"}
    # A step's attempts count every delivery that ran its body (a killed one too; never
    # fewer than the bodies the journal saw start, steps here running one after another).
    recorded_attempts = {(row.run_id, row.step_name): row.attempts for row in steps}
    assert [k for k, n in executions.items() if recorded_attempts[k] < n] == []
    # The transactional step's side effect: exactly once per run, never twice.
    assert effects == dict.fromkeys(run_ids, 1)
    assert rerun_after_record == []
    assert {run for run, _ in executions} == set(run_ids)  # the journal step ran for every run
    assert (stats.ready, stats.leased, stats.delayed, stats.dead) == (0, 0, 0, 0)
    assert stats.archived == total
    assert len(procs.killed) >= 5, "the storm must actually kill workers"
    assert figures["redelivered_runs"], "some kill must have hit a run in flight"
