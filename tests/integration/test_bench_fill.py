"""The scale benchmark's bulk history is made of rows the real code accepts (so the bench cannot rot).

``bench.fill`` writes runs, steps and messages with ``INSERT … SELECT``, not through the
library: here, on both backends, the real code reads them, prunes exactly the expired ones,
and a worker claims and finishes the ready ones, beside a run triggered after the fill.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

import pgqrs_sqla as pgqrs
from bench import fill
from pgqrs_sqla import RunStatus

DAY = 86400.0


async def _count(store: pgqrs.Store, table: Any) -> int:
    async with store.engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(table)) or 0)


async def test_filled_history_is_read_pruned_and_claimed_by_the_real_code(
    store: pgqrs.Store,
) -> None:
    await fill.prepare(store)
    old = await fill.fill(store, finished=100, ready=0, age=40 * DAY, span=DAY)
    recent = await fill.fill(store, finished=10, ready=5, age=3600.0, span=600.0)
    assert (old.rows, recent.rows) == (
        fill.HISTORIC_WORKERS + 100 * (3 + fill.STEPS),
        fill.HISTORIC_WORKERS + 10 * (3 + fill.STEPS) + 5 * 3,
    )
    t = store.tables

    # Read as recorded runs: a success with its output and steps, a failure with its error.
    ok, failed = await store.get_run(1), await store.get_run(10)
    assert (ok.status, ok.output, [s.name for s in ok.steps]) == (
        RunStatus.SUCCESS,
        {"ok": 1},
        ["s0", "s1"],
    )
    assert failed.status is RunStatus.ERROR
    assert failed.error["message"] == "bulk history"
    assert [s.status.value for s in failed.steps] == ["SUCCESS", "ERROR"]

    # The old history (ended 40 days ago: past both retentions) goes, the recent stays.
    expected = pgqrs.PruneResult(runs=100, messages=200, workers=fill.HISTORIC_WORKERS)
    assert await store.prune(dry_run=True) == pgqrs.PruneResult(
        runs=100, messages=200, workers=fill.HISTORIC_WORKERS, dry_run=True
    )
    assert await store.prune() == expected
    assert await _count(store, t.runs) == 10 + 5
    assert await _count(store, t.steps) == 10 * fill.STEPS
    assert await _count(store, t.messages) == 2 * 10 + 2 * 5
    assert await store.prune() == pgqrs.PruneResult(runs=0, messages=0, workers=0)

    # The ready work is claimed and finished by real workers, with a run triggered after the
    # fill (its ids follow the filled ones).
    later = await pgqrs.workflow(fill.WORKFLOW).trigger({"order": "later"}).execute(store)

    async def handler(ctx: pgqrs.RunContext, params: Any) -> Any:
        return await ctx.step("s0", lambda: _echo(params))

    runs = await pgqrs.consumer("w", None, fill.WORKFLOW).handler(handler).create(store)
    await runs.run_until_idle(timeout=60)
    plain_seen: list[Any] = []

    async def on_message(message: pgqrs.Message) -> None:
        plain_seen.append(message.payload)

    plain = await pgqrs.consumer("p", None, fill.PLAIN).handler(on_message).create(store)
    await plain.run_until_idle(timeout=60)
    assert runs.stats.completed == 6
    assert sorted(p["i"] for p in plain_seen) == [1, 2, 3, 4, 5]
    assert (await store.get_run(later)).output == {"order": "later"}


async def _echo(value: Any) -> Any:
    return value
