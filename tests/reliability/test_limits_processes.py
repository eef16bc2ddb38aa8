"""Concurrency limits held by the database across worker *processes*, through a SIGKILL.

Four processes (``tests/worker_proc.py limits``, four runs each at most) serve one workflow
with ``concurrency=3`` and ``key_concurrency=1`` over eight keys. Each handler journals its
start and end (wall clock, one ``write(2)`` each); a handler runs inside its lease, so the
most handler intervals that overlap is at most what was leased at once. A process killed
mid-run ends its intervals at the kill (its lease is held longer, until it expires: counting
less, never more). On SQLite the processes share the database file.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import pytest

import pgqrs_sqla as pgqrs
from bench.scaleout import most_at_once
from pgqrs_sqla import RunStatus
from tests._wait import eventually

from ._support import Procs, report, run_statuses

pytestmark = pytest.mark.reliability

RUNS, KEYS, LIMIT = 40, 8, 3


async def test_limits_hold_across_processes_and_a_kill(
    store: pgqrs.Store, db_url: str, backend: str, tmp_path: Path
) -> None:
    await store.create_workflow("limits", concurrency=LIMIT, key_concurrency=1, max_deliveries=100)
    async with store._begin() as conn:
        for i in range(RUNS):
            key = f"k{i % KEYS}"
            await pgqrs.workflow("limits").trigger({"key": key}, concurrency_key=key).execute(conn)
    procs = Procs("limits", db_url, tmp_path)
    killed_at: dict[int, float] = {}
    async with procs.session():
        for k in range(4):
            await procs.start(f"p{k}")

        def mid_run() -> int | None:
            """A process with a run started and not ended, once a few runs have ended."""
            lines = procs.journal_lines()
            if sum(line["event"] == "end" for line in lines) < 5:
                return None
            open_ = {(x["pid"], x["run"]) for x in lines if x["event"] == "start"}
            open_ -= {(x["pid"], x["run"]) for x in lines if x["event"] == "end"}
            return next((pid for pid, _run in open_), None)

        pid = await eventually(mid_run, timeout=60, what="a run in flight")
        name = next(n for n, p in procs.live.items() if p.pid == pid)
        await procs.kill(name)
        killed_at[pid] = time.time()

        async def all_done() -> bool:
            return (await run_statuses(store, "limits")).get(RunStatus.SUCCESS.value) == RUNS

        await eventually(all_done, timeout=120, interval=0.2, what="every run ended")
    starts: dict[tuple[int, int], tuple[float, str]] = {}
    intervals: list[tuple[float, float, str]] = []
    for line in procs.journal_lines():
        if line["event"] == "start":
            starts[(line["pid"], line["run"])] = (line["t"], line["key"])
        else:
            began, key = starts.pop((line["pid"], line["run"]))
            intervals.append((began, line["t"], key))
    for (pid, _run), (began, key) in starts.items():  # cut short by the kill
        assert pid in killed_at
        intervals.append((began, killed_at[pid], key))
    by_key: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for began, ended, key in intervals:
        by_key[key].append((began, ended))
    overall = most_at_once([(a, b) for a, b, _ in intervals])
    per_key = max(most_at_once(spans) for spans in by_key.values())
    report(
        "limits",
        backend=backend,
        runs=RUNS,
        deliveries=len(intervals),
        most_at_once=overall,
        most_per_key=per_key,
    )
    assert overall == LIMIT  # held, and reached: enough work to break it
    assert per_key == 1
