"""Pruning under SIGKILL: a worker process killed while its background prune runs deletes
nothing that was to be kept, leaves no run without its message nor a message of a deleted
run, and the next prune completes. The worker runs ``tests/worker_proc.py prune`` (its
background prune every 50 ms, in batches of 50 runs per transaction, 20 batches a round)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

import pgqrs_sqla as pgqrs
from pgqrs_sqla import RunStatus
from tests._wait import eventually

from ._support import Procs, report

pytestmark = pytest.mark.reliability

OLD = 6000  # finished runs past their retention: 120 batches, 6 rounds of the worker's prune


async def _history(
    store: pgqrs.Store, workflow: str, n: int, status: RunStatus, age: timedelta
) -> list[int]:
    """``n`` runs of ``workflow`` that ended ``status`` ``age`` ago, with archived messages."""
    info = await store.create_workflow(workflow)
    m, r = store.tables.messages, store.tables.runs
    when = datetime.now(UTC) - age
    async with store.engine.begin() as conn:
        message_ids = (
            (
                await conn.execute(
                    m.insert().returning(m.c.id, sort_by_parameter_order=True),
                    [{"queue_id": info.queue_id, "payload": {}, "archived_at": when}] * n,
                )
            )
            .scalars()
            .all()
        )
        run_ids = (
            (
                await conn.execute(
                    r.insert().returning(r.c.id, sort_by_parameter_order=True),
                    [
                        {
                            "workflow_id": info.id,
                            "message_id": message_id,
                            "status": status.value,
                            "finished_at": when,
                        }
                        for message_id in message_ids
                    ],
                )
            )
            .scalars()
            .all()
        )
    return list(run_ids)


async def _runs(store: pgqrs.Store, *where: Any) -> int:
    r = store.tables.runs
    async with store.engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(r).where(*where)) or 0)


async def _orphans(store: pgqrs.Store) -> tuple[int, int]:
    """Runs whose message is gone (message_id set to NULL by a message deleted without its
    run), and archived messages of runs of the history no run points at any more."""
    r, m = store.tables.runs, store.tables.messages
    async with store.engine.connect() as conn:
        runs = await conn.scalar(
            select(func.count()).select_from(r).where(r.c.message_id.is_(None))
        )
        messages = await conn.scalar(
            select(func.count())
            .select_from(m)
            .where(
                m.c.archived_at.is_not(None),
                ~select(r.c.id).where(r.c.message_id == m.c.id).exists(),
            )
        )
    return int(runs or 0), int(messages or 0)


@pytest.mark.timeout(120)
async def test_a_worker_killed_mid_prune_deletes_nothing_it_should_keep(
    store: pgqrs.Store, db_url: str, backend: str, tmp_path: Path
) -> None:
    old = await _history(store, "old", OLD, RunStatus.SUCCESS, timedelta(days=8))
    errors = await _history(store, "failed", 50, RunStatus.ERROR, timedelta(days=8))  # 30 days
    recent = await _history(store, "recent", 50, RunStatus.SUCCESS, timedelta(days=1))
    await store.create_workflow("queued")
    await store.create_workflow("prune")  # what the worker serves
    queued = [await pgqrs.workflow("queued").trigger({"i": i}).execute(store) for i in range(20)]
    kept = set(errors + recent + queued)
    r = store.tables.runs

    procs = Procs("prune", db_url, tmp_path)
    async with procs.session():
        started = time.monotonic()
        await procs.start("a")

        async def pruning() -> bool:  # some batches committed, not all of them
            assert procs.live["a"].returncode is None, "the worker died on its own"
            left = await _runs(store, r.c.id.in_(old))
            return 0 < left < OLD

        await eventually(pruning, timeout=60, interval=0.005, what="the prune under way")
        await procs.kill("a")
        killed_after = time.monotonic() - started
        left_at_kill = await _runs(store, r.c.id.in_(old))

    # Nothing to be kept was deleted, and each batch went whole or not at all.
    assert await _runs(store, r.c.id.in_(kept)) == len(kept)
    assert await _orphans(store) == (0, 0)
    assert {(await store.get_run(i)).status for i in queued} == {RunStatus.QUEUED}
    # The next prune completes.
    result = await store.prune()
    assert result.runs == left_at_kill
    assert result.messages == left_at_kill
    assert await _runs(store, r.c.id.in_(old)) == 0
    assert await _runs(store) == len(kept)
    assert await _orphans(store) == (0, 0)
    report(
        "prune across a kill",
        backend=backend,
        old_runs=OLD,
        pruned_before_kill=OLD - left_at_kill,
        killed_after_s=killed_after,
    )
