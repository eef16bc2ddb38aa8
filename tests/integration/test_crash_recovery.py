"""Crash recovery with real processes: a worker is SIGKILLed mid-run; another finishes it,
replaying recorded steps from the database without running their bodies again."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

import pgqrs_sqla as pgqrs

PROC = Path(__file__).parents[1] / "worker_proc.py"


async def run_worker(url: str, run_id: int, journal: Path, name: str, *extra: str) -> int:
    stats = journal.with_suffix(".stats")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(PROC), "pipeline", url, name, str(journal), str(stats),
        "--run-id", str(run_id), *extra,
    )  # fmt: skip
    return await asyncio.wait_for(proc.wait(), 90)


def executed(journal: Path) -> list[str]:
    """The step bodies that ran, in order (each journals its step as it runs)."""
    lines = journal.read_text().splitlines() if journal.exists() else []
    return [json.loads(line)["step"] for line in lines]


@pytest.fixture
async def pipeline(store: pgqrs.Store) -> pgqrs.Store:
    await store.create_workflow("pipeline")
    async with store._begin() as conn:
        await conn.execute(
            text("CREATE TABLE ledger (run_id BIGINT NOT NULL, total BIGINT NOT NULL)")
        )
    return store


async def ledger(store: pgqrs.Store) -> list[tuple[int, int]]:
    async with store._begin() as conn:
        return [
            tuple(r) for r in (await conn.execute(text("SELECT run_id, total FROM ledger"))).all()
        ]  # type: ignore[misc]


async def killed(store: pgqrs.Store, db_url: str, journal: Path, n: int, *crash: str) -> int:
    """Trigger a pipeline run over ``n`` items and run worker w1 on it, which is SIGKILLed
    where ``crash`` says; the run's id."""
    run_id = await pgqrs.workflow("pipeline").trigger({"n": n}).execute(store)
    assert await run_worker(db_url, run_id, journal, "w1", *crash) == -signal.SIGKILL
    return run_id


async def finished(store: pgqrs.Store, db_url: str, journal: Path, run_id: int) -> Any:
    """Run worker w2 until run ``run_id`` ends (the dead worker's lease expires after 1s, so
    w2 claims it); the run's output."""
    assert await run_worker(db_url, run_id, journal, "w2") == 0
    return await store.wait_for_run(run_id, timeout=5)


async def attempts(store: pgqrs.Store, run_id: int) -> list[tuple[str, int]]:
    """Each recorded step of the run and its ``attempts``."""
    return [(s.name, s.attempts) for s in (await store.get_run(run_id)).steps]


async def test_killed_after_first_step_resumes_without_rerunning_it(
    pipeline: pgqrs.Store, db_url: str, tmp_path: Path
) -> None:
    journal = tmp_path / "journal"
    run_id = await killed(pipeline, db_url, journal, 4, "--crash-after", "fetch_data")
    run = await pipeline.get_run(run_id)
    assert run.status is pgqrs.RunStatus.RUNNING
    assert [(s.name, s.status) for s in run.steps] == [("fetch_data", pgqrs.StepStatus.SUCCESS)]

    assert await finished(pipeline, db_url, journal, run_id) == {"processed_count": 4}
    assert executed(journal) == ["fetch_data", "transform_data", "save_results"]
    assert await ledger(pipeline) == [(run_id, 60)]
    # w1 died after recording fetch_data and before transform_data's body began: nothing
    # tells that apart from a death inside the body (no write marks a body's start), so
    # the delivery is counted for transform_data - the approximation docs/workflows.md names.
    assert await attempts(pipeline, run_id) == [
        ("fetch_data", 1),
        ("transform_data", 2),
        ("save_results", 1),
    ]


async def test_crash_inside_a_transactional_step_leaves_neither_writes_nor_record(
    pipeline: pgqrs.Store, db_url: str, tmp_path: Path
) -> None:
    journal = tmp_path / "journal"
    run_id = await killed(pipeline, db_url, journal, 3, "--crash-inside", "save_results")
    assert executed(journal) == ["fetch_data", "transform_data", "save_results"]
    assert await ledger(pipeline) == []  # the step's writes died with its transaction
    run = await pipeline.get_run(run_id)
    assert "save_results" not in {s.name for s in run.steps}

    assert await finished(pipeline, db_url, journal, run_id) == {"processed_count": 3}
    # fetch/transform replayed from the record; save ran again and its writes landed once.
    assert executed(journal) == ["fetch_data", "transform_data", "save_results", "save_results"]
    assert await ledger(pipeline) == [(run_id, 30)]
    # What StepInfo.attempts counts (docs/workflows.md): the deliveries that ran the body,
    # the one that died in it too; the message counts that delivery as failed.
    assert await attempts(pipeline, run_id) == [
        ("fetch_data", 1),
        ("transform_data", 1),
        ("save_results", 2),
    ]
    assert await failed_ct(pipeline, run_id) == 1
    assert executed(journal).count("save_results") == 2


async def test_a_step_killed_mid_body_counts_both_attempts(
    pipeline: pgqrs.Store, db_url: str, tmp_path: Path
) -> None:
    journal = tmp_path / "journal"
    run_id = await killed(pipeline, db_url, journal, 2, "--crash-inside", "transform_data")
    assert await attempts(pipeline, run_id) == [("fetch_data", 1)]

    assert await finished(pipeline, db_url, journal, run_id) == {"processed_count": 2}
    assert executed(journal) == ["fetch_data", "transform_data", "transform_data", "save_results"]
    # The body that died with w1 is counted for its step, and only for it.
    assert await attempts(pipeline, run_id) == [
        ("fetch_data", 1),
        ("transform_data", 2),
        ("save_results", 1),
    ]
    assert await failed_ct(pipeline, run_id) == 1


async def failed_ct(store: pgqrs.Store, run_id: int) -> int:
    """How many deliveries of the run's message failed."""
    message_id = (await store.get_run(run_id)).message_id
    m = store.tables.messages
    async with store._read() as conn:
        return int(
            (await conn.execute(select(m.c.failed_ct).where(m.c.id == message_id))).scalar_one()
        )
