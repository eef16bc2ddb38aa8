"""The worker *process* of the crash and reliability tests (run by the tests, killed by them).

    python worker_proc.py storm URL NAME JOURNAL STATS   # drain the 5-step 'storm' workflow
    python worker_proc.py plain URL NAME JOURNAL STATS   # 4 tasks on the plain queue 'contend'
    python worker_proc.py long  URL NAME JOURNAL STATS   # the 'long' workflow, one endless step
    python worker_proc.py waits URL NAME JOURNAL STATS   # the 'waits' workflow: steps and waits
    python worker_proc.py prune URL NAME JOURNAL STATS   # serve 'prune', pruning every 50 ms
    python worker_proc.py schedule URL NAME JOURNAL STATS  # serve 'schedule': journal each tick
    python worker_proc.py limits URL NAME JOURNAL STATS  # the limited 'limits' workflow
    python worker_proc.py pipeline URL NAME JOURNAL STATS --run-id ID
        [--crash-after STEP] [--crash-inside transform_data|save_results] [--vt SECONDS]

``storm``, ``plain``, ``long`` and ``waits`` run until SIGTERM (graceful: they stop their workers and
append one JSON line of counters to STATS) or SIGKILL (the point of the suite: then nothing
is written). ``pipeline`` runs the 3-step ``pipeline`` workflow until run ID ends;
``--crash-after STEP`` SIGKILLs the process right after STEP is recorded, ``--crash-inside
save_results`` inside that transactional step, after its writes but before its commit, and
``--crash-inside transform_data`` inside that plain step's body, after its journal line.

JOURNAL gets one JSON line per step body / message handling, with the pid and the wall-clock
time, written with a single ``write(2)`` on an ``O_APPEND`` descriptor: atomic between
processes, and in the page cache (so it survives a SIGKILL) before the next statement runs.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import functools
import json
import os
import random
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

import pgqrs_sqla as pgqrs
from bench.scaleout import Journal
from pgqrs_sqla._retention import Retention

STORM_VT = 2.0  # short leases, so killed work comes back quickly
CONTEND_VT = 2.0
LONG_VT = 1.0
WAITS_VT = 2.0
LIMITS_VT = 2.0


def storm_handler(journal: Journal) -> Callable[[pgqrs.RunContext, Any], Awaitable[Any]]:
    """Five steps; s3 is transactional and writes a side effect into the app table `effects`;
    s4 appends to the journal file; every non-transactional body journals when it starts."""

    async def handler(ctx: pgqrs.RunContext, params: dict[str, Any]) -> dict[str, Any]:
        async def work(step: str) -> int:
            journal.write(run=ctx.run_id, step=step, attempt=ctx.attempt)
            await asyncio.sleep(random.uniform(0.02, 0.04))
            return int(params["i"])

        async def effect(session: AsyncSession) -> str:
            await session.execute(
                text("INSERT INTO effects (run_id, step) VALUES (:r, 's3')"), {"r": ctx.run_id}
            )
            await asyncio.sleep(random.uniform(0.01, 0.03))  # a kill may land in here
            return "written"

        a = await ctx.step("s1", functools.partial(work, "s1"))
        b = await ctx.step("s2", functools.partial(work, "s2"))
        written = await ctx.step("s3", effect, transactional=True)
        c = await ctx.step("s4", functools.partial(work, "s4"))
        d = await ctx.step("s5", functools.partial(work, "s5"))
        return {"sum": a + b + c + d, "effect": written}

    return handler


def long_handler(journal: Journal) -> Callable[[pgqrs.RunContext, Any], Awaitable[Any]]:
    async def handler(ctx: pgqrs.RunContext, params: Any) -> Any:
        async def endless() -> str:
            journal.write(run=ctx.run_id, event="start", attempt=ctx.attempt)
            await asyncio.sleep(3600)  # until the test kills us
            return "never"

        return await ctx.step("long", endless)

    return handler


def waits_handler(journal: Journal) -> Callable[[pgqrs.RunContext, Any], Awaitable[Any]]:
    """The run's ``plan`` param, in order: ``["step", name]`` a transactional step (one row
    ``(run_id, name)`` in the app table ``effects``, journaled as its body starts),
    ``["sleep", name, seconds]`` ``ctx.sleep``, ``["event", name]`` ``ctx.wait_for_event``,
    ``["children", name, n, plan]`` ``n`` children of this workflow with ``plan``, then
    ``ctx.wait_for_runs``. Returns each event's payload (each fan-in's statuses) by name."""

    async def handler(ctx: pgqrs.RunContext, params: dict[str, Any]) -> dict[str, Any]:
        async def effect(name: str, session: AsyncSession) -> str:
            journal.write(run=ctx.run_id, step=name, attempt=ctx.attempt)
            await session.execute(
                text("INSERT INTO effects (run_id, step) VALUES (:r, :s)"),
                {"r": ctx.run_id, "s": name},
            )
            await asyncio.sleep(random.uniform(0.01, 0.03))  # a kill may land in here
            return name

        got: dict[str, Any] = {}
        for op, name, *arg in params["plan"]:
            if op == "step":
                await ctx.step(name, functools.partial(effect, name), transactional=True)
            elif op == "sleep":
                await ctx.sleep(name, arg[0])
            elif op == "children":  # start arg[1]'s plan as arg[0] children, wait for all
                kids = [
                    await ctx.start_child(f"{name}-{i}", "waits", {"plan": arg[1]})
                    for i in range(arg[0])
                ]
                got[name] = [row["status"] for row in await ctx.wait_for_runs(name, kids)]
            else:
                got[name] = await ctx.wait_for_event(name)
        return got

    return handler


def limits_handler(journal: Journal) -> Callable[[pgqrs.RunContext, Any], Awaitable[Any]]:
    """Journal the run's start and end (with its key) around a short wait: the limits test
    computes from them how many ran at once."""

    async def handler(ctx: pgqrs.RunContext, params: dict[str, Any]) -> None:
        journal.write(run=ctx.run_id, key=params["key"], event="start")
        await asyncio.sleep(random.uniform(0.05, 0.15))
        journal.write(run=ctx.run_id, key=params["key"], event="end")

    return handler


async def prune_handler(ctx: pgqrs.RunContext, params: Any) -> Any:
    return params


async def _noop(message: pgqrs.Message) -> None:  # plain mode drives the low-level API
    raise AssertionError("not used")


async def contend(
    store: pgqrs.Store, name: str, journal: Journal, stop: asyncio.Event
) -> dict[str, int]:
    """One of this process's 4 tasks: claim batches from 'contend' with the low-level API and
    acknowledge each message. A message marked slow outlives its lease on its first delivery:
    the handler waits until another worker has claimed it, then its `archive` must raise
    `LeaseLost`."""
    worker = await (
        pgqrs.consumer(name, None, "contend")
        .handler(_noop)
        .create(store, visibility_timeout=CONTEND_VT, own_pool=False)
    )
    m = store.tables.messages
    counts = {"acked": 0, "lease_lost": 0}
    slow_tasks: set[asyncio.Task[None]] = set()

    async def handle(msg: pgqrs.Message) -> None:
        if msg.payload["slow"] and msg.read_ct == 1:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # until the lease has been taken over
                async with store._read() as conn:
                    token = (
                        await conn.execute(select(m.c.read_ct).where(m.c.id == msg.id))
                    ).scalar_one()
                if token > msg.read_ct:
                    break
                await asyncio.sleep(0.05)
        try:
            await worker.archive(msg)
            outcome = "acked"
        except pgqrs.LeaseLost:
            outcome = "lease_lost"
        counts[outcome] += 1
        journal.write(id=msg.id, token=msg.read_ct, worker=name, outcome=outcome)

    while not stop.is_set():
        try:
            batch = await worker.dequeue(10)
        except pgqrs.DatabaseUnavailable:
            await asyncio.sleep(0.1)
            continue
        if not batch:
            await asyncio.sleep(0.02)
            continue
        for msg in batch:
            if msg.payload["slow"] and msg.read_ct == 1:
                task = asyncio.create_task(handle(msg))  # do not hold up the others
                slow_tasks.add(task)
                task.add_done_callback(slow_tasks.discard)
            else:
                await handle(msg)
    if slow_tasks:
        await asyncio.wait(slow_tasks)
    await worker.stop(grace=1)
    return counts


def schedule_handler(journal: Journal) -> Callable[[pgqrs.RunContext, Any], Awaitable[Any]]:
    """Journal the run and the tick that triggered it."""

    async def handler(ctx: pgqrs.RunContext, params: Any) -> Any:
        tick = ctx.scheduled_at
        journal.write(run=ctx.run_id, tick=None if tick is None else tick.isoformat())
        return None

    return handler


def dump_tasks() -> None:
    """Write every asyncio task of this loop, with its stack, to stderr."""
    for task in asyncio.all_tasks():
        print(f"TASK {task!r}", file=sys.stderr)
        task.print_stack(file=sys.stderr)
    sys.stderr.flush()


async def main(mode: str, url: str, name: str, journal_path: str) -> dict[str, Any]:
    """Run until SIGTERM; return this process's counters."""
    journal = Journal(journal_path)
    # ``prune``: the worker's background prune runs at once, and again every 50 ms, in
    # batches of 50 runs (not 500), so a test can kill it while it prunes.
    prune_interval = 0.05 if mode == "prune" else None
    if mode == "prune":
        Retention._round_batch = 50
    # A test that finds this process hung sends SIGUSR1 before SIGKILL: every thread's stack
    # then lands in the process's log, which the failing test prints.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    store = await pgqrs.connect(url, pool_size=6, prune_interval=prune_interval)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)

    # A test whose SIGTERM this process outlives sends SIGUSR2: each asyncio task's stack
    # then lands in the log (the threads' come with SIGUSR1, above).
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR2, dump_tasks)
    stats: dict[str, Any] = {"name": name, "pid": os.getpid()}
    try:
        if mode == "plain":
            print("ready", flush=True)
            results = await asyncio.gather(
                *(contend(store, f"{name}-t{k}", journal, stop) for k in range(4))
            )
            stats["acked"] = sum(r["acked"] for r in results)
            stats["lease_lost"] = sum(r["lease_lost"] for r in results)
        else:
            handler, vt, concurrency = {
                "storm": (storm_handler(journal), STORM_VT, 2),
                "long": (long_handler(journal), LONG_VT, 1),
                "waits": (waits_handler(journal), WAITS_VT, 4),
                "prune": (prune_handler, WAITS_VT, 1),
                "schedule": (schedule_handler(journal), WAITS_VT, 2),
                "limits": (limits_handler(journal), LIMITS_VT, 4),
            }[mode]
            worker = await (
                pgqrs.consumer(name, None, mode)
                .handler(handler)
                .create(
                    store,
                    concurrency=concurrency,
                    visibility_timeout=vt,
                    poll_interval=0.05,
                    heartbeat_interval=0.05 if mode == "prune" else None,
                )
            )
            worker.start()
            print("ready", flush=True)
            await stop.wait()
            await worker.stop(grace=5)
            s = worker.stats
            stats.update(
                claimed=s.claimed, completed=s.completed, errors=s.errors, lease_lost=s.lease_lost
            )
    finally:
        await store.close()
    return stats


def pipeline_handler(
    journal: Journal, args: argparse.Namespace
) -> Callable[[pgqrs.RunContext, Any], Awaitable[Any]]:
    """fetch_data, transform_data, save_results (transactional: a row in the app table
    ``ledger``); each body journals its step, and the process dies where ``args`` say."""

    def crash_point(step: str) -> None:
        if args.crash_after == step:
            os.kill(os.getpid(), signal.SIGKILL)

    async def handler(ctx: pgqrs.RunContext, params: dict[str, Any]) -> dict[str, Any]:
        async def fetch() -> list[int]:
            journal.write(run=ctx.run_id, step="fetch_data")
            return list(range(params["n"]))

        data = await ctx.step("fetch_data", fetch)
        crash_point("fetch_data")

        async def transform() -> list[int]:
            journal.write(run=ctx.run_id, step="transform_data")
            if args.crash_inside == "transform_data":
                os.kill(os.getpid(), signal.SIGKILL)
            return [x * 10 for x in data]

        transformed = await ctx.step("transform_data", transform)
        crash_point("transform_data")

        async def save(session: AsyncSession) -> int:
            await session.execute(
                text("INSERT INTO ledger (run_id, total) VALUES (:r, :t)"),
                {"r": ctx.run_id, "t": sum(transformed)},
            )
            journal.write(run=ctx.run_id, step="save_results")
            if args.crash_inside == "save_results":
                os.kill(os.getpid(), signal.SIGKILL)
            return len(transformed)

        saved = await ctx.step("save_results", save, transactional=True)
        crash_point("save_results")
        return {"processed_count": saved}

    return handler


async def pipeline(args: argparse.Namespace) -> dict[str, Any]:
    """Run the ``pipeline`` workflow until run ``args.run_id`` ends; return the counters."""
    store = await pgqrs.connect(args.url)
    try:
        worker = await (
            pgqrs.consumer(args.name, None, "pipeline")
            .handler(pipeline_handler(Journal(args.journal), args))
            .create(store, visibility_timeout=args.vt, poll_interval=0.05)
        )
        async with worker:
            await store.wait_for_status(
                args.run_id, pgqrs.RunStatus.SUCCESS, pgqrs.RunStatus.ERROR, timeout=60
            )
        s = worker.stats
        return {"name": args.name, "pid": os.getpid(), "claimed": s.claimed}
    finally:
        await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "mode",
        choices=["storm", "plain", "long", "waits", "prune", "schedule", "limits", "pipeline"],
    )
    for name in ("url", "name", "journal", "stats"):
        parser.add_argument(name)
    parser.add_argument("--run-id", type=int, help="pipeline: the run to see to its end")
    parser.add_argument("--crash-after", help="pipeline: SIGKILL right after this step")
    parser.add_argument(
        "--crash-inside", help="pipeline: SIGKILL inside transform_data or save_results"
    )
    parser.add_argument("--vt", type=float, default=1.0, help="pipeline: the lease, seconds")
    args = parser.parse_args()
    if args.mode == "pipeline":
        stats = asyncio.run(pipeline(args))
    else:
        stats = asyncio.run(main(args.mode, args.url, args.name, args.journal))
    with open(args.stats, "a") as f:
        f.write(json.dumps(stats) + "\n")
