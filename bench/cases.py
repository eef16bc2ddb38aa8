"""The measurements. Each takes a :class:`~bench.harness.Backend` and the counts, works on a
fresh store (empty tables), and returns its figures as a dict (the caller takes medians).

What runs the messages: real :class:`pgqrs_sqla.Worker` objects (``consumer(...).create``)
driven by ``run_until_idle`` — the same code path as a deployed worker, not a hand-written
dequeue/archive loop.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from sqlalchemy.ext.asyncio import async_sessionmaker

import pgqrs_sqla as pgqrs

from .harness import ROOT, Backend, Counts, Order, percentile

# ---------------------------------------------------------------- handlers


async def noop() -> None:
    return None


async def noop_message(message: pgqrs.Message) -> None:
    return None


# ---------------------------------------------------------------- queue


async def enqueue(b: Backend, c: Counts) -> dict[str, float]:
    """``store.queue(name).enqueue`` one at a time (each its own transaction), then
    ``enqueue_batch`` of 100."""
    async with b.fresh_store() as store:
        await store.create_queue("q")
        queue = store.queue("q")
        for i in range(20):  # warm up: connections opened, statements prepared
            await queue.enqueue({"i": i})
        start = time.perf_counter()
        for i in range(c.enqueue):
            await queue.enqueue({"i": i})
        single = c.enqueue / (time.perf_counter() - start)
        batches = max(1, c.batch // 100)
        start = time.perf_counter()
        for s in range(batches):
            await queue.enqueue_batch([{"i": i} for i in range(s * 100, s * 100 + 100)])
        batch = batches * 100 / (time.perf_counter() - start)
    return {"single": single, "batch": batch}


async def drain(b: Backend, c: Counts, consumers: int, batch: int) -> dict[str, float]:
    """``consumers`` Worker objects (concurrency = batch_size = ``batch``, one shared pool)
    drain ``c.drain`` no-op messages with ``run_until_idle``."""
    async with b.fresh_store() as store:
        await store.create_queue("q")
        for s in range(0, c.drain, 500):
            await store.queue("q").enqueue_batch([None] * min(500, c.drain - s))
        workers = [
            await pgqrs.consumer(f"drain-{i}", None, "q")
            .handler(noop_message)
            .create(store, concurrency=batch, batch_size=batch, own_pool=False)
            for i in range(consumers)
        ]
        start = time.perf_counter()
        await asyncio.gather(*(w.run_until_idle(timeout=600) for w in workers))
        elapsed = time.perf_counter() - start
        done = sum(w.stats.completed for w in workers)
        if done != c.drain:
            raise RuntimeError(f"drain: {done} of {c.drain} messages acknowledged")
    return {"rate": c.drain / elapsed}


async def drain_default(b: Backend, c: Counts) -> dict[str, float]:
    """One worker *as the guide creates it* — ``consumer(...).handler(fn).create(store)``, no
    options — drains ``c.drain`` no-op messages with ``run_until_idle``."""
    async with b.fresh_store() as store:
        await store.create_queue("q")
        for s in range(0, c.drain, 500):
            await store.queue("q").enqueue_batch([None] * min(500, c.drain - s))
        worker = await pgqrs.consumer("drain", None, "q").handler(noop_message).create(store)
        start = time.perf_counter()
        await worker.run_until_idle(timeout=600)
        elapsed = time.perf_counter() - start
        if worker.stats.completed != c.drain:
            raise RuntimeError(f"drain: {worker.stats.completed} of {c.drain} acknowledged")
    return {"rate": c.drain / elapsed}


# ---------------------------------------------------------------- workflows


async def trigger(b: Backend, c: Counts) -> dict[str, float]:
    """The app's transaction: ``AsyncSession``, begin, add an app row, trigger, commit."""
    async with b.fresh_store() as store:
        await store.create_workflow("wf")
        sessions = async_sessionmaker(store.engine, expire_on_commit=False)
        latencies: list[float] = []

        async def one(i: int) -> None:
            async with sessions() as session, session.begin():
                session.add(Order(item=f"item-{i}"))
                await pgqrs.workflow("wf").trigger({"order": i}).execute(session)

        for i in range(20):
            await one(i)
        start = time.perf_counter()
        for i in range(c.trigger):
            t0 = time.perf_counter()
            await one(i)
            latencies.append(time.perf_counter() - t0)
        rate = c.trigger / (time.perf_counter() - start)
        ref = pgqrs.workflow("wf")
        start = time.perf_counter()
        for i in range(c.trigger):
            await ref.trigger({"order": i}).execute(store)
        own = c.trigger / (time.perf_counter() - start)
        # trigger_many of 100 in the caller's transaction (begin, one app row, 100 runs, commit)
        batches = max(1, c.trigger // 100)
        start = time.perf_counter()
        for s in range(batches if hasattr(ref, "trigger_many") else 0):  # (older commits)
            async with sessions() as session, session.begin():
                session.add(Order(item=f"batch-{s}"))
                params = [{"order": i} for i in range(s * 100, s * 100 + 100)]
                await ref.trigger_many(params).execute(session)
        many = (
            batches * 100 / (time.perf_counter() - start) if hasattr(ref, "trigger_many") else 0.0
        )
    return {
        "rate": rate,
        "own": own,
        "many": many,
        "p50": percentile(latencies, 50) * 1000,
        "p99": percentile(latencies, 99) * 1000,
    }


async def steps(b: Backend, c: Counts) -> dict[str, float]:
    """A 20-step workflow of no-op steps, one worker (concurrency 1). ``ms_per_step`` is
    timed inside the handler (first step to last: the checkpoints alone); ``rate`` is
    steps/s over the whole drain (claiming and finishing each run included)."""
    per_step: list[float] = []

    async def twenty(ctx: pgqrs.RunContext, params: Any) -> None:
        t0 = time.perf_counter()
        for i in range(20):
            await ctx.step(f"s{i}", noop)
        per_step.append((time.perf_counter() - t0) / 20)

    async with b.fresh_store() as store:
        await store.create_workflow("twenty")
        for _ in range(c.step_runs):
            await pgqrs.workflow("twenty").trigger().execute(store)
        worker = await pgqrs.consumer("steps", None, "twenty").handler(twenty).create(store)
        start = time.perf_counter()
        await worker.run_until_idle(timeout=600)
        elapsed = time.perf_counter() - start
    if len(per_step) != c.step_runs:
        raise RuntimeError(f"steps: {len(per_step)} of {c.step_runs} runs completed")
    return {
        "ms_per_step": percentile(per_step, 50) * 1000,
        "rate": c.step_runs * 20 / elapsed,
    }


async def end_to_end(
    b: Backend, c: Counts, concurrency: int | None, steps: int = 3
) -> dict[str, float]:
    """``c.e2e`` runs of a ``steps``-step workflow, queued first, then drained by one worker
    running ``concurrency`` runs at once (its default pool of its own); None: the worker as
    the guide creates it, no options."""

    async def handler(ctx: pgqrs.RunContext, params: Any) -> None:
        for i in range(steps):
            await ctx.step(f"s{i}", noop)

    async with b.fresh_store() as store:
        await store.create_workflow("three")
        for s in range(0, c.e2e, 200):
            async with store._begin() as conn:
                for _ in range(min(200, c.e2e - s)):
                    await pgqrs.workflow("three").trigger().execute(conn)
        options = {} if concurrency is None else {"concurrency": concurrency}
        rate = await _drain_runs(store, "three", handler, c.e2e, **options)
    return {"rate": rate}


async def _drain_runs(
    store: pgqrs.Store, workflow: str, handler: Any, runs: int, **options: Any
) -> float:
    """One worker (``options``) drains the ``runs`` queued runs of ``workflow``: runs/s."""
    worker = (
        await pgqrs.consumer(workflow, None, workflow).handler(handler).create(store, **options)
    )
    start = time.perf_counter()
    await worker.run_until_idle(timeout=600)
    elapsed = time.perf_counter() - start
    if worker.stats.completed != runs:
        raise RuntimeError(f"{workflow}: {worker.stats.completed} of {runs} runs completed")
    return runs / elapsed


async def limited(b: Backend, c: Counts, **limits: Any) -> dict[str, float]:
    """``c.e2e`` no-op runs over 100 keys drained by one worker running 10 at once, with
    ``limits`` on the workflow (none: the unlimited claim). A limit of 10 is the worker's own
    concurrency: it never holds a run back, so the difference is what the limited claim's
    transaction costs."""
    async with b.fresh_store() as store:
        await store.create_workflow("limited", **limits)
        for s in range(0, c.e2e, 200):
            async with store._begin() as conn:
                for i in range(s, min(s + 200, c.e2e)):
                    key = f"k{i % 100}"
                    await pgqrs.workflow("limited").trigger(concurrency_key=key).execute(conn)

        async def quick(ctx: pgqrs.RunContext, params: Any) -> None:
            return None

        rate = await _drain_runs(store, "limited", quick, c.e2e, concurrency=10, batch_size=10)
    return {"rate": rate}


# ---------------------------------------------------------------- enqueue -> start latency


async def _idle_worker(store: pgqrs.Store, started: asyncio.Queue[float]) -> pgqrs.Worker:
    async def handler(ctx: pgqrs.RunContext, params: Any) -> None:
        started.put_nowait(time.perf_counter())

    # A long poll interval: a missed wake-up would show as seconds, not milliseconds.
    return (
        await pgqrs.consumer("idle", None, "ping").handler(handler).create(store, poll_interval=5.0)
    )


async def _until_polling(worker: pgqrs.Worker) -> None:
    deadline = time.monotonic() + 10
    while worker.status is not pgqrs.WorkerStatus.POLLING:
        if time.monotonic() > deadline:
            raise RuntimeError("the worker did not start polling")
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # past its first (empty) claim, into the idle wait


async def latency_same_process(b: Backend, c: Counts) -> dict[str, float]:
    """The app triggers in its own ``AsyncSession`` in the worker's process; from just before
    the commit to the handler's first line. (SQLite: the in-process wake-up; PostgreSQL: the
    in-process wake-up races the NOTIFY, and the first to arrive wins.)"""
    samples: list[float] = []
    async with b.fresh_store() as store:
        await store.create_workflow("ping")
        started: asyncio.Queue[float] = asyncio.Queue()
        worker = await _idle_worker(store, started)
        sessions = async_sessionmaker(store.engine, expire_on_commit=False)
        async with worker:
            await _until_polling(worker)
            for i in range(c.latency):
                async with sessions() as session:
                    await session.begin()
                    run_id = await pgqrs.workflow("ping").trigger({"i": i}).execute(session)
                    t0 = time.perf_counter()
                    await session.commit()
                samples.append(await asyncio.wait_for(started.get(), 30) - t0)
                await store.wait_for_run(run_id, timeout=30)
                await asyncio.sleep(0.01)  # let the worker settle back into its idle wait
    return _latency_figures(samples)


async def latency_other_process(b: Backend, c: Counts) -> dict[str, float]:
    """PostgreSQL: another process (``python -m bench.producer``) triggers and commits; only
    ``NOTIFY`` can wake the worker. ``time.perf_counter`` is CLOCK_MONOTONIC, shared by both
    processes."""
    samples: list[float] = []
    async with b.fresh_store() as store:
        await store.create_workflow("ping")
        started: asyncio.Queue[float] = asyncio.Queue()
        worker = await _idle_worker(store, started)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.producer",
            b.url,
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdin is not None and proc.stdout is not None
        try:
            ready = await asyncio.wait_for(proc.stdout.readline(), 30)
            if ready.strip() != b"ready":
                raise RuntimeError(f"producer did not start: {ready!r}")
            async with worker:
                await _until_polling(worker)
                for i in range(c.latency):
                    proc.stdin.write(f"{i}\n".encode())
                    await proc.stdin.drain()
                    handler_at = await asyncio.wait_for(started.get(), 30)
                    run_id, t0 = (await asyncio.wait_for(proc.stdout.readline(), 30)).split()
                    samples.append(handler_at - float(t0))
                    await store.wait_for_run(int(run_id), timeout=30)
                    await asyncio.sleep(0.01)
        finally:
            proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()
    return _latency_figures(samples)


def _latency_figures(samples: list[float]) -> dict[str, float]:
    return {"p50": percentile(samples, 50) * 1000, "p99": percentile(samples, 99) * 1000}
