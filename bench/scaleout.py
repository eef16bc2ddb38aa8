"""Scale-out with limits: worker *processes* draining one workflow, and how many ran at once.

``python -m bench --backend postgresql --only scaleout`` (issue 13, "Scale", last sentence):
a workflow with ``concurrency=20`` and ``key_concurrency=1``; 20,000 runs triggered over 100
keys (batches of 500, each one transaction, 4 at a time); then 8 worker processes
(``python -m bench.scaleout``), each a worker of concurrency 16, drain it. Each handler
journals its start and end, then the bench reads the journals back and computes, from the
handlers' intervals, the most runs of the workflow and of any one key that ran at once. A
handler runs inside its lease (it starts after the claim committed and ends before the
finish does), so the most intervals open at one instant is at most what was leased at once:
above a limit is a bug, never a measuring artefact. The same drain without limits follows,
for comparison. ``--runs``, ``--processes``, ``--concurrency`` scale it down.

The clock is ``time.time()`` (CLOCK_REALTIME), one clock for every process of the machine
(the processes and the bench share it; a step of the clock during a run would distort the
intervals, which no run here showed). Throughput is the runs over the time from the bench
telling the ready processes to start to the last handler's end.

Journals are files, one per process, one ``write(2)`` per line on an ``O_APPEND``
descriptor (as ``tests/worker_proc.py`` does): no table, so no load on the database measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

import pgqrs_sqla as pgqrs

from .harness import ROOT, Backend, Goal, Row

WORKFLOW = "scaleout"
TRIGGER_BATCH = 500


@dataclass(frozen=True)
class Shape:
    """One drain's size and its workers (``--runs``, ``--processes``, ``--concurrency``...)."""

    runs: int = 20_000
    processes: int = 8
    concurrency: int = 16
    keys: int = 100
    limit: int = 20
    key_limit: int = 1
    work_ms: float = 10.0  # each handler's asyncio.sleep
    pool_size: int = 5  # each worker's own pool (8 processes stay under max_connections=100)
    poll_interval: float = 1.0  # the worker's default


@dataclass(frozen=True)
class Drained:
    """What one drain measured."""

    seconds: float
    trigger_seconds: float
    deliveries: int
    most: int
    most_per_key: int

    def figures(self, runs: int) -> dict[str, float]:
        return {
            "rate": runs / self.seconds,
            "seconds": self.seconds,
            "trigger_rate": runs / self.trigger_seconds,
            "deliveries": float(self.deliveries),
            "most": float(self.most),
            "most_per_key": float(self.most_per_key),
        }


def most_at_once(intervals: Iterable[tuple[float, float]]) -> int:
    """The most intervals open at one instant (an end before a start at the same time)."""
    edges = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    open_, peak = 0, 0
    for _, step in edges:
        open_ += step
        peak = max(peak, open_)
    return peak


def overlaps(lines: Iterable[dict[str, Any]]) -> tuple[int, int, int]:
    """Journal lines → (deliveries, most at once, most at once of any one key)."""
    starts: dict[tuple[int, int], tuple[float, str]] = {}
    by_key: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for line in lines:
        if line["event"] == "start":
            starts[(line["pid"], line["run"])] = (line["t"], line["key"])
        else:
            began, key = starts.pop((line["pid"], line["run"]))
            by_key[key].append((began, line["t"]))
    if starts:
        raise RuntimeError(f"{len(starts)} handlers started and never ended")
    every = [span for spans in by_key.values() for span in spans]
    return len(every), most_at_once(every), max(most_at_once(s) for s in by_key.values())


async def trigger_all(store: pgqrs.Store, runs: int, keys: int) -> float:
    """Trigger ``runs`` runs over ``keys`` keys, 500 to a transaction, 4 at a time: seconds."""
    gate = asyncio.Semaphore(4)

    async def batch(first: int) -> None:
        async with gate, store._begin() as conn:
            for i in range(first, min(first + TRIGGER_BATCH, runs)):
                key = f"k{i % keys}"
                trigger = pgqrs.workflow(WORKFLOW).trigger({"key": key}, concurrency_key=key)
                await trigger.execute(conn)

    t0 = time.perf_counter()
    await asyncio.gather(*(batch(first) for first in range(0, runs, TRIGGER_BATCH)))
    return time.perf_counter() - t0


async def _finished(store: pgqrs.Store) -> int:
    r, w = store.tables.runs, store.tables.workflows
    stmt = (
        select(func.count())
        .select_from(r.join(w, w.c.id == r.c.workflow_id))
        .where(w.c.workflow_name == WORKFLOW, r.c.status == pgqrs.RunStatus.SUCCESS.value)
    )
    async with store._read() as conn:
        return int((await conn.execute(stmt)).scalar_one())


async def drain(
    url: str, store: pgqrs.Store, shape: Shape, journals: Path, *, limited: bool
) -> Drained:
    """Trigger ``shape.runs`` runs of a fresh workflow on ``store`` (limited or not), drain
    them with ``shape.processes`` worker processes, and read their journals back."""
    limits = {"concurrency": shape.limit, "key_concurrency": shape.key_limit} if limited else {}
    await store.create_workflow(WORKFLOW, **limits)  # type: ignore[arg-type]
    trigger_seconds = await trigger_all(store, shape.runs, shape.keys)
    options = [str(shape.concurrency), str(shape.work_ms), str(shape.pool_size)]
    procs = []
    for k in range(shape.processes):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.scaleout",
            url,
            f"w{k}",
            str(journals / f"w{k}.journal"),
            *options,
            str(shape.poll_interval),
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        procs.append(proc)
    try:
        for proc in procs:  # every worker registered before any claims
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 120)
            if line.strip() != b"ready":
                raise RuntimeError(f"worker process did not start: {line!r}")
        go = time.time()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
        deadline = time.monotonic() + 1800
        while (done := await _finished(store)) < shape.runs:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{done} of {shape.runs} runs ended in 30 minutes")
            await asyncio.sleep(0.25)
    finally:
        for proc in procs:
            if proc.stdin is not None and not proc.stdin.is_closing():
                proc.stdin.close()
        for proc in procs:
            await asyncio.wait_for(proc.communicate(), 120)
    if any(proc.returncode != 0 for proc in procs):
        raise RuntimeError(f"worker exits {[proc.returncode for proc in procs]}")
    lines = take_journals(journals)
    deliveries, most, most_per_key = overlaps(lines)
    last_end = max(line["t"] for line in lines)
    return Drained(last_end - go, trigger_seconds, deliveries, most, most_per_key)


def take_journals(journals: Path) -> list[dict[str, Any]]:
    """Every line of the journals in ``journals``, which are then deleted (the next drain's
    start empty)."""
    lines = []
    for path in sorted(journals.glob("*.journal")):
        lines += [json.loads(line) for line in path.read_text().splitlines()]
        path.unlink()
    return lines


async def measure(b: Backend, shape: Shape, *, limited: bool) -> dict[str, float]:
    """:func:`drain` on emptied tables of ``b``: its figures."""
    with tempfile.TemporaryDirectory(prefix="pgqrs-scaleout-") as journals:
        async with b.fresh_store(prune_interval=None) as store:
            drained = await drain(b.url, store, shape, Path(journals), limited=limited)
    return drained.figures(shape.runs)


def rows(shape: Shape, with_limits: dict[str, float], without: dict[str, float]) -> list[Row]:
    """The scale-out rows: throughput of each drain, and the most at once against the limits."""
    who = f"{shape.processes} processes x concurrency {shape.concurrency}"
    what = f"{shape.runs:,} runs of {shape.work_ms:g} ms over {shape.keys} keys, {who}"
    out = []
    for label, got in (
        (f"concurrency={shape.limit}, key_concurrency={shape.key_limit}", with_limits),
        ("no limits", without),
    ):
        out.append(
            Row(
                f"scale-out drain, {what}, {label}",
                got["rate"],
                "runs/s",
                "R1",
                note=f"{got['seconds']:.1f} s; {got['deliveries']:,.0f} deliveries; "
                f"triggered at {got['trigger_rate']:,.0f} runs/s; most at once "
                f"{got['most']:.0f}, per key {got['most_per_key']:.0f}",
            )
        )
    out.append(
        Row(
            f"scale-out, most runs at once of the workflow (limit {shape.limit})",
            with_limits["most"],
            "runs",
            goals=[Goal("abs", "<=", shape.limit)],
        )
    )
    out.append(
        Row(
            f"scale-out, most runs at once of any one key (limit {shape.key_limit})",
            with_limits["most_per_key"],
            "runs",
            goals=[Goal("abs", "<=", shape.key_limit)],
        )
    )
    return out


def verdict(shape: Shape, got: dict[str, float]) -> str:
    """The PASS/FAIL line: the limits were never exceeded."""
    held = got["most"] <= shape.limit and got["most_per_key"] <= shape.key_limit
    return (
        f"scale-out limits: {'PASS' if held else 'FAIL'}: never above {shape.limit} "
        f"(most {got['most']:.0f}) / never above {shape.key_limit} per key "
        f"(most {got['most_per_key']:.0f})"
    )


# ---------------------------------------------------------------- the worker process


class Journal:
    """One JSON line per handler start and end, each a single ``write(2)`` (O_APPEND)."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, **record: Any) -> None:
        record.update(pid=os.getpid(), t=time.time())
        os.write(self.fd, (json.dumps(record) + "\n").encode())


async def worker_main(args: argparse.Namespace) -> None:
    """Register a worker, say ``ready``, start on ``go``, stop when stdin closes."""
    journal = Journal(args.journal)
    work = args.work_ms / 1000

    async def handler(ctx: pgqrs.RunContext, params: dict[str, Any]) -> None:
        journal.write(run=ctx.run_id, key=params["key"], event="start")
        await asyncio.sleep(work)
        journal.write(run=ctx.run_id, key=params["key"], event="end")

    store = await pgqrs.connect(args.url, pool_size=1, prune_interval=None)
    try:
        worker = await (
            pgqrs.consumer(args.name, None, WORKFLOW)
            .handler(handler)
            .create(
                store,
                concurrency=args.concurrency,
                pool_size=args.pool_size,
                poll_interval=args.poll_interval,
            )
        )
        loop = asyncio.get_running_loop()
        print("ready", flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)  # "go"
        worker.start()
        await loop.run_in_executor(None, sys.stdin.read)  # until the bench closes our stdin
        await worker.stop(grace=10)
    finally:
        await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.scaleout")
    for name in ("url", "name", "journal"):
        parser.add_argument(name)
    parser.add_argument("concurrency", type=int)
    parser.add_argument("work_ms", type=float)
    parser.add_argument("pool_size", type=int)
    parser.add_argument("poll_interval", type=float)
    asyncio.run(worker_main(parser.parse_args()))
