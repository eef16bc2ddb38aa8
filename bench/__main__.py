"""pgqrs-sqla benchmarks: ``python -m bench`` (or ``make bench``).

Every figure is printed beside the *physical reference* measured in the same run on the same
database — the raw driver's single-row ``INSERT … COMMIT`` per second with 1 and with 4
connections (R1, R4) — and as a ratio to it, with the goal it is held to. Figures are
medians of ``--repeat`` repetitions (default 3); the reference is measured ``--repeat``
times before and ``--repeat`` times after the rest, and its median is used.

    python -m bench                                   # both backends, full counts
    python -m bench --backend sqlite --quick          # a smoke run (small counts, 1 repetition)
    python -m bench --backend postgresql --only drain,latency --count drain=20000
    python -m bench --database-url postgresql://user@host:5432/postgres

On PostgreSQL the bench creates a scratch database next to the one in ``--database-url``
(default postgresql://postgres@127.0.0.1:5432/postgres) and drops it at the end.
Measurements for --only: enqueue, drain, trigger, step, e2e, latency, timer, event, limits;
and ``scale`` (not in the default run: it fills the tables with millions of rows):

    python -m bench --backend postgresql --only scale --sizes 0,10k,1M,5M --prune-size 1M
    python -m bench --backend sqlite --only scale --sizes 0,10k --prune-size 0

and ``scaleout`` (not in the default run either: worker processes draining 20,000 runs with
and without limits, and the most that ran at once; ``--runs``, ``--processes`` scale it down):

    python -m bench --backend postgresql --only scaleout
    python -m bench --backend postgresql --only scaleout --runs 2000 --processes 4
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Literal

from . import cases, scale, scaleout, waits
from .harness import DEFAULT_PG, Backend, Counts, Goal, Row, median_of, render, versions

MEASUREMENTS = (
    "enqueue",
    "drain",
    "trigger",
    "step",
    "e2e",
    "latency",
    "timer",
    "event",
    "limits",
)
#: selectable with --only, not run by default
HEAVY = ("scale", "scaleout")
Kind = Literal["sqlite", "postgresql"]


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def run_backend(kind: Kind, args: argparse.Namespace, c: Counts) -> str:
    """Measure everything asked for on one backend; return its table."""
    only = set(args.only)
    r = args.repeat
    rows: list[Row] = []
    verdicts: list[str] = []
    began = time.perf_counter()

    async def measure(
        label: str, fn: Callable[[], Awaitable[dict[str, float]]], repeat: int | None = None
    ) -> dict[str, float]:
        t0 = time.perf_counter()
        result = await median_of(repeat or r, fn)
        shown = ", ".join(f"{k} {v:,.2f}" for k, v in result.items())
        progress(f"  {kind}: {label}: {shown}  ({time.perf_counter() - t0:.1f} s)")
        return result

    async with Backend(kind, args.database_url) as b:
        info = await b.describe()
        progress(f"{kind}: {info['server']}")
        raw: dict[str, list[float]] = {"R1": [], "R4": []}

        async def reference() -> None:
            for key, conns in (("R1", 1), ("R4", 4)):
                for _ in range(r):
                    raw[key].append(await b.raw_insert_rate(c.raw, conns))
            progress(f"  {kind}: raw reference: R1 {raw['R1'][-r:]}, R4 {raw['R4'][-r:]}")

        await reference()

        if "enqueue" in only:
            e = await measure("enqueue", lambda: cases.enqueue(b, c))
            rows.append(
                Row(
                    "enqueue, one transaction each",
                    e["single"],
                    "msgs/s",
                    "R1",
                    goals=[Goal("ratio", ">=", 0.7)],
                )
            )
            rows.append(
                Row(
                    "enqueue_batch of 100",
                    e["batch"],
                    "msgs/s",
                    "R1",
                    goals=[Goal("ratio", ">=", 10)],
                )
            )
        if "drain" in only:
            d = await measure("drain, default worker", lambda: cases.drain_default(b, c))
            rows.append(
                Row(
                    f"drain {c.drain:,} no-op msgs, 1 worker as the guide creates it (no options)",
                    d["rate"],
                    "msgs/s",
                    "R1",
                    goals=[Goal("ratio", ">=", 2.0)],
                )
            )
            for consumers in (1, 4):
                for size in (1, 10, 50):
                    d = await measure(
                        f"drain {consumers}x{size}",
                        lambda n=consumers, s=size: cases.drain(b, c, n, s),  # type: ignore[misc]
                    )
                    goals = []
                    if (consumers, size) == (1, 1):
                        goals = [Goal("ratio", ">=", 0.25)]
                    elif (consumers, size) == (4, 50):
                        goals = [Goal("ratio", ">=", 4.0)]
                        if b.postgres:
                            goals.insert(0, Goal("abs", ">=", 12_000))
                    rows.append(
                        Row(
                            f"drain {c.drain:,} no-op msgs, {consumers} consumer{'s' if consumers > 1 else ''}, batch {size}",
                            d["rate"],
                            "msgs/s",
                            "R1" if consumers == 1 else "R4",
                            goals=goals,
                        )
                    )
        if "trigger" in only:
            t = await measure("trigger", lambda: cases.trigger(b, c))
            rows.append(
                Row(
                    "trigger in the caller's transaction (begin, add app row, trigger, commit)",
                    t["rate"],
                    "runs/s",
                    "R1",
                    goals=[Goal("ratio", ">=", 0.22)],
                    note=f"p50 {t['p50']:.2f} ms, p99 {t['p99']:.2f} ms",
                )
            )
            rows.append(
                Row(
                    "trigger, the store's own transaction (`execute(store)`)",
                    t["own"],
                    "runs/s",
                    "R1",
                    goals=[Goal("ratio", ">=", 0.35)],
                )
            )
            rows.append(
                Row(
                    "trigger_many of 100 in the caller's transaction (begin, add app row, 100 runs, commit)",
                    t["many"],
                    "runs/s",
                    "R1",
                    goals=[Goal("ratio", ">=", 8)],
                )
            )
        if "step" in only:
            s = await measure("steps", lambda: cases.steps(b, c))
            rows.append(
                Row(
                    "step checkpoint, 20-step workflow of no-op steps, 1 worker (in the handler)",
                    s["ms_per_step"],
                    "ms",
                    "R1",
                    time=True,
                    goals=[Goal("ratio", "<=", 2.0)],
                    note=f"{1000 / s['ms_per_step']:,.0f} steps/s",
                )
            )
            rows.append(
                Row(
                    "20-step workflow, whole drain (claim and finish included)",
                    s["rate"],
                    "steps/s",
                    "R1",
                    note=f"{1000 / s['rate']:.2f} ms per step",
                )
            )
        if "e2e" in only:
            for conc, n_steps, goal in ((None, 0, 0.5), (None, 3, 0.12), (4, 3, 0.3)):
                e2e = await measure(
                    f"e2e {n_steps} steps, concurrency {conc or 'default'}",
                    lambda n=conc, k=n_steps: cases.end_to_end(b, c, n, k),  # type: ignore[misc]
                )
                who = "1 default worker (no options)" if conc is None else f"{conc} worker tasks"
                rows.append(
                    Row(
                        f"{c.e2e:,} runs of a {n_steps}-step workflow, {who}",
                        e2e["rate"],
                        "runs/s",
                        "R1" if conc is None else "R4",
                        goals=[Goal("ratio", ">=", goal)],
                    )
                )
        if "limits" in only:
            for label, limits in (
                ("no limit", {}),
                ("concurrency=10", {"concurrency": 10}),
                ("key_concurrency=1 over 100 keys", {"key_concurrency": 1}),
            ):
                got = await measure(
                    f"limits {label}",
                    lambda o=limits: cases.limited(b, c, **o),  # type: ignore[misc]
                )
                rows.append(
                    Row(
                        f"{c.e2e:,} no-op runs, 1 worker x 10, {label}",
                        got["rate"],
                        "runs/s",
                        "R1",
                    )
                )
        if "latency" in only:
            if b.postgres:
                lat = await measure("latency (NOTIFY)", lambda: cases.latency_other_process(b, c))
                rows.append(
                    Row(
                        "enqueue→start p50, trigger from another process (NOTIFY)",
                        lat["p50"],
                        "ms",
                        "R1",
                        time=True,
                        goals=[Goal("abs", "<", 10)],
                        note=f"p99 {lat['p99']:.2f} ms",
                    )
                )
            lat = await measure("latency (same process)", lambda: cases.latency_same_process(b, c))
            rows.append(
                Row(
                    "enqueue→start p50, trigger in the worker's process (in-process wake-up)",
                    lat["p50"],
                    "ms",
                    "R1",
                    time=True,
                    note=f"p99 {lat['p99']:.2f} ms",
                )
            )
        if "timer" in only:
            tm = await measure("timer", lambda: waits.timers(b, c))
            rows.append(
                Row(
                    "timer ctx.sleep(name, 0), 20 per run beside 20 no-op steps (in the handler)",
                    tm["sleep_ms"],
                    "ms",
                    "R1",
                    time=True,
                    goals=[Goal("base", "<=", 1.25, tm["step_ms"], "step")],
                    note=f"{tm['ratio']:.2f}× a step checkpoint of the same runs "
                    f"({tm['step_ms']:.2f} ms)",
                )
            )
        if "event" in only:
            variants = [("another process (NOTIFY)", True)] if b.postgres else []
            variants.append(("the worker's process", False))
            for where, other in variants:
                ev = await measure(
                    f"event round trip ({where})",
                    lambda o=other: waits.event_round_trip(b, c, o),  # type: ignore[misc]
                )
                rows.append(
                    Row(
                        f"event round trip p50, send_event from {where} → wait_for_event returns",
                        ev["event_p50"],
                        "ms",
                        "R1",
                        time=True,
                        goals=[Goal("abs", "<", 10)] if b.postgres else [],
                        note=f"p90 {ev['event_p90']:.2f} ms, p99 {ev['event_p99']:.2f} ms; "
                        f"handler entered again at p50 {ev['rewoken_p50']:.2f} ms",
                    )
                )
                rows.append(
                    Row(
                        f"trigger→start p50 in the same runs, trigger from {where}",
                        ev["pickup_p50"],
                        "ms",
                        "R1",
                        time=True,
                        note=f"p90 {ev['pickup_p90']:.2f} ms",
                    )
                )

        if "scale" in only:  # once each: a fill of millions of rows is not repeated
            rows += await scale.rows(b, args.sizes, c.scale, functools.partial(measure, repeat=1))
            if args.prune_size:
                p = await measure(
                    f"prune {scale.size_label(args.prune_size)} under load",
                    lambda: scale.prune_under_load(b, args.prune_size),
                    repeat=1,
                )
                rows += scale.prune_rows(args.prune_size, p)

        if "scaleout" in only:  # once each: minutes of worker processes
            shape = args.shape
            drains = {}
            for limited in (True, False):
                drains[limited] = await measure(
                    f"scale-out {'with' if limited else 'without'} limits",
                    lambda x=limited: scaleout.measure(b, shape, limited=x),  # type: ignore[misc]
                    repeat=1,
                )
            rows += scaleout.rows(shape, drains[True], drains[False])
            verdicts.append(scaleout.verdict(shape, drains[True]))

        await reference()
    refs = {key: statistics.median(values) for key, values in raw.items()}
    spread = {key: f"{min(v):,.0f}–{max(v):,.0f}" for key, v in raw.items()}
    rows[:0] = [
        Row(
            "raw INSERT+COMMIT, 1 connection (R1)",
            refs["R1"],
            "rows/s",
            note=f"range {spread['R1']}; t1 = {1000 / refs['R1']:.3f} ms",
        ),
        Row(
            "raw INSERT+COMMIT, 4 connections (R4)",
            refs["R4"],
            "rows/s",
            note=f"range {spread['R4']}",
        ),
    ]
    progress(f"{kind}: done in {time.perf_counter() - began:.0f} s")
    return "\n\n".join([render(kind, info, rows, refs), *verdicts])


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("PGQRS_BENCH_DATABASE_URL", DEFAULT_PG),
        help="PostgreSQL server to use (a scratch database is created next to this one)",
    )
    parser.add_argument("--quick", action="store_true", help="small counts, one repetition")
    parser.add_argument("--repeat", type=int, default=None, help="repetitions (default 3)")
    parser.add_argument(
        "--only",
        default=",".join(MEASUREMENTS),
        help="comma list of: "
        + ", ".join(MEASUREMENTS + HEAVY)
        + " (default: all but scale and scaleout; the raw reference always runs)",
    )
    parser.add_argument(
        "--count",
        action="append",
        default=[],
        metavar="NAME=N",
        help="override one count: raw, enqueue, batch, drain, trigger, step_runs, e2e, latency, "
        "timer_runs, scale (samples per scale figure)",
    )
    parser.add_argument(
        "--sizes",
        default="0,10k,1M,5M",
        help="scale: finished runs (and as many archived messages) in the tables, e.g. 0,10k,1M",
    )
    parser.add_argument(
        "--prune-size",
        default="1M",
        help="scale: finished runs past retention that store.prune() deletes under load (0: skip)",
    )
    small = scaleout.Shape(runs=200, processes=2, concurrency=4)
    parser.add_argument(
        "--runs",
        type=int,
        help=f"scaleout: runs drained (default {scaleout.Shape.runs:,}; --quick {small.runs})",
    )
    parser.add_argument(
        "--processes",
        type=int,
        help=f"scaleout: worker processes (default "
        f"{scaleout.Shape.processes}; --quick {small.processes})",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        help=f"scaleout: each worker's concurrency (default "
        f"{scaleout.Shape.concurrency}; --quick {small.concurrency})",
    )
    parser.add_argument(
        "--work-ms",
        type=float,
        default=scaleout.Shape.work_ms,
        help="scaleout: each handler's sleep, in ms",
    )
    args = parser.parse_args(argv)
    base = small if args.quick else scaleout.Shape()
    changes = {
        name: value
        for name, value in (
            ("runs", args.runs),
            ("processes", args.processes),
            ("concurrency", args.concurrency),
        )
        if value is not None
    }
    if any(value < 1 for value in changes.values()):
        parser.error("--runs, --processes and --concurrency must be >= 1")
    args.shape = dataclasses.replace(base, work_ms=args.work_ms, **changes)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    known = MEASUREMENTS + HEAVY
    unknown = set(args.only) - set(known)
    if unknown:
        parser.error(f"--only: unknown {sorted(unknown)}; choose from {', '.join(known)}")
    args.sizes = scale.parse_sizes(args.sizes)
    (args.prune_size,) = scale.parse_sizes(args.prune_size)
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    return args


async def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    counts = (Counts.quick() if args.quick else Counts()).override(args.count)
    print("## pgqrs-sqla benchmarks\n")
    for line in versions(args.repeat, counts):
        print(f"- {line}")
    kinds: list[Kind] = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    began = time.perf_counter()
    for kind in kinds:
        print(await run_backend(kind, args, counts), flush=True)
    print(f"\nTotal time {time.perf_counter() - began:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
