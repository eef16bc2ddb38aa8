"""Scale: what a claim and a trigger cost against the history in the tables, and pruning under load.

``python -m bench --only scale --sizes 0,10k,1M,5M`` (issue 13, "cost must not grow with
history"). At each size the tables are emptied and filled (:mod:`bench.fill`: that many
finished runs with their steps and archived messages, as many archived plain messages, and
:data:`READY` runs and plain messages ready), then, each sample timed alone:

* trigger: ``workflow(...).trigger(...).execute(store)``, the store's own transaction;
* claim: the worker's own claim path (:func:`bench.load.claim_round`) of 1 and of
  :data:`BATCH` (the default batch of a worker of concurrency 16: ``batch_size`` defaults
  to ``concurrency``), of runs and of plain messages; what it claims then runs and finishes.

Each p50 is reported against t1 (one raw insert-commit of this run) and against the same
figure on empty tables (goal: at most 1.5 times). ``--prune-size`` (PostgreSQL): that many finished runs
past retention, ``store.prune()`` while another process triggers and claims
(:mod:`bench.load`): the prune's time in total and per batch, and the others' p50/p99 before
and during it.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from . import fill, load
from .harness import Backend, Goal, Row, percentile

READY = 10_000
BATCH = 16
DAY = 86400.0
Measure = Callable[[str, Callable[[], Awaitable[dict[str, float]]]], Awaitable[dict[str, float]]]


def parse_sizes(text: str) -> list[int]:
    """``"0,10k,1M,5M"`` → ``[0, 10000, 1000000, 5000000]``."""
    sizes = []
    for item in text.split(","):
        item = item.strip()
        scale = {"k": 1_000, "m": 1_000_000}.get(item[-1:].lower(), 1)
        digits = item[:-1] if scale > 1 else item
        try:
            sizes.append(int(float(digits) * scale))
        except ValueError:
            raise SystemExit(f"--sizes {text!r}: expected numbers like 0,10k,1M,5M") from None
    return sizes


def size_label(n: int) -> str:
    if n >= 1_000_000 and n % 100_000 == 0:
        return f"{n / 1_000_000:g} M"
    if n >= 1_000 and n % 100 == 0:
        return f"{n / 1_000:g} k"
    return str(n)


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def at_size(b: Backend, n: int, samples: int) -> dict[str, float]:
    """Fill ``n`` finished runs (and messages), then time triggers and claims: p50 ms each."""
    async with b.fresh_store(prune_interval=None) as store:
        await fill.prepare(store)
        filled = await fill.fill(store, finished=n, ready=READY)
        _progress(
            f"  {b.kind}: {size_label(n)}: filled {filled.rows:,} rows in "
            f"{filled.insert_seconds:.1f} s + {filled.analyze_seconds:.1f} s analyze"
        )
        figures = {"fill_s": filled.seconds, "rows": float(filled.rows)}
        # A stopped worker's row deleted (as retention and a worker's registration do): the
        # messages it delivered are set NULL by the foreign key, which no index serves.
        t0 = time.perf_counter()
        if await store.prune_workers(older_than=0, limit=1) != 1:
            raise RuntimeError("no stopped worker row to delete")
        figures["worker_row"] = (time.perf_counter() - t0) * 1000
        for i in range(20):  # warm up: connections, prepared statements
            await load.trigger(store, -i)
        figures["trigger"] = percentile([await load.trigger(store, i) for i in range(samples)], 50)
        for queue, kind in ((fill.WORKFLOW, "run"), (fill.PLAIN, "msg")):
            worker = await load.claimer(store, f"scale-{kind}", queue, BATCH)
            for batch in (1, BATCH):
                times = []
                for i in range(samples + 5):
                    ms, claimed = await load.claim_round(worker, batch)
                    if claimed != batch:
                        raise RuntimeError(f"claim of {batch} {kind}s took {claimed}")
                    if i >= 5:
                        times.append(ms)
                figures[f"claim_{kind}_{batch}"] = percentile(times, 50)
    return figures


CLAIMS = (
    ("claim_run_1", "claim 1 run (claim + start)"),
    (f"claim_run_{BATCH}", f"claim {BATCH} runs (claim + start)"),
    ("claim_msg_1", "claim 1 plain message"),
    (f"claim_msg_{BATCH}", f"claim {BATCH} plain messages"),
    ("trigger", "trigger, the store's own transaction"),
    ("worker_row", "delete 1 stopped worker row (prune_workers; 1 sample)"),
)


async def rows(b: Backend, sizes: list[int], samples: int, measure: Measure) -> list[Row]:
    """One row per size and figure, against t1 and the empty tables' figure."""
    results: dict[int, dict[str, float]] = {}
    for n in sorted(sizes):
        results[n] = await measure(
            f"scale {size_label(n)}",
            lambda n=n: at_size(b, n, samples),  # type: ignore[misc]
        )
    base = results.get(0)
    out = []
    for key, what in CLAIMS:
        for n, figures in results.items():
            goals = [] if base is None or n == 0 else [Goal("base", "<=", 1.5, base[key], "empty")]
            note = "" if base is None or n == 0 else f"{figures[key] / base[key]:.2f}× empty"
            if key == "trigger":
                note += (
                    f"{'; ' if note else ''}fill {figures['rows']:,.0f} rows in "
                    f"{figures['fill_s']:.0f} s"
                )
            out.append(
                Row(
                    f"{what} p50, {size_label(n)} finished runs + as many messages",
                    figures[key],
                    "ms",
                    "R1",
                    time=True,
                    goals=goals,
                    note=note,
                )
            )
    return out


# ---------------------------------------------------------------- pruning under load


async def prune_under_load(b: Backend, n: int, every_ms: float = 5.0) -> dict[str, float]:
    """``n`` finished runs past retention; ``store.prune()`` while another process triggers
    and claims. Returns the prune's figures and the others' before and during it."""
    async with b.fresh_store(prune_interval=None) as store:
        await fill.prepare(store)
        # The workers stopped recently: their rows stay (see the scale rows for their cost).
        filled = await fill.fill(
            store, finished=n, ready=READY, age=31 * DAY, span=DAY, workers_stopped=3600.0
        )
        _progress(f"  {b.kind}: prune: filled {filled.rows:,} rows in {filled.seconds:.1f} s")
        batches: list[float] = []
        real_batch = store._prune_batch

        async def timed_batch(conn: Any, size: int) -> Any:
            t0 = time.perf_counter()
            try:
                return await real_batch(conn, size)
            finally:
                batches.append((time.perf_counter() - t0) * 1000)

        store._prune_batch = timed_batch  # type: ignore[method-assign,assignment]
        procs = await load.start_loads(b.url, 1, every_ms)
        try:
            await asyncio.sleep(8)  # the load, before
            began = time.perf_counter()
            pruned = await store.prune()
            ended = time.perf_counter()
            await asyncio.sleep(2)
        finally:
            samples = await load.stop_loads(procs)
    if pruned.runs != n:
        raise RuntimeError(f"prune removed {pruned.runs} of {n} runs")
    figures = {
        "total_s": ended - began,
        "batches": float(len(batches)),
        "batch_p50": percentile(batches, 50),
        "batch_p99": percentile(batches, 99),
        "batch_max": max(batches),
        "batch_mean": statistics.mean(batches),
        "runs": float(pruned.runs),
        "messages": float(pruned.messages),
        "workers": float(pruned.workers),
    }
    for kind in ("trigger", "claim"):
        before = [ms for k, at, ms in samples if k == kind and at + ms / 1000 < began]
        during = [ms for k, at, ms in samples if k == kind and began <= at and at < ended]
        for when, values in (("before", before), ("during", during)):
            figures[f"{kind}_{when}_n"] = float(len(values))
            figures[f"{kind}_{when}_p50"] = percentile(values, 50) if values else float("nan")
            figures[f"{kind}_{when}_p99"] = percentile(values, 99) if values else float("nan")
            figures[f"{kind}_{when}_max"] = max(values) if values else float("nan")
    return figures


def prune_rows(n: int, p: dict[str, float]) -> list[Row]:
    """The prune's rows: its time, its batches, and the others' latency before and during."""
    out = [
        Row(
            f"prune {size_label(n)} finished runs (+ their {p['messages']:,.0f} messages, steps, "
            f"{p['workers']:,.0f} worker rows) while another process triggers and claims",
            p["total_s"],
            "s",
            note=f"{p['batches']:,.0f} batches, {p['runs'] / p['total_s']:,.0f} runs/s",
        ),
        Row(
            "prune, one batch of ≤ 500 runs (its transaction's statements)",
            p["batch_p50"],
            "ms",
            "R1",
            time=True,
            note=f"p99 {p['batch_p99']:.1f} ms, max {p['batch_max']:.1f} ms, "
            f"mean {p['batch_mean']:.1f} ms",
        ),
    ]
    for kind, what in (("trigger", "trigger"), ("claim", "claim 1 run")):
        before = p[f"{kind}_before_p50"]
        goal = [Goal("base", "<=", 1.5, before, "before")]
        out.append(
            Row(
                f"{what} p50 during the prune (before it: p50 {before:.2f} ms, "
                f"p99 {p[f'{kind}_before_p99']:.2f} ms)",
                p[f"{kind}_during_p50"],
                "ms",
                "R1",
                time=True,
                goals=goal,
                note=f"p99 {p[f'{kind}_during_p99']:.2f} ms, max {p[f'{kind}_during_max']:.1f} ms, "
                f"{p[f'{kind}_during_n']:,.0f} samples",
            )
        )
    return out
