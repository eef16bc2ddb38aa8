"""The measurements of durable waits: what a timer costs beside a step, and an event's round
trip from ``send_event`` to the waiting handler, beside the trigger's pickup in the same run.

Like :mod:`bench.cases`, each works on a fresh store and returns its figures as a dict.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from sqlalchemy.ext.asyncio import async_sessionmaker

import pgqrs_sqla as pgqrs

from .cases import _until_polling, noop
from .harness import ROOT, Backend, Counts, percentile

PER_RUN = 20  # steps and timers per run


async def timers(b: Backend, c: Counts) -> dict[str, float]:
    """Each run does 20 no-op steps and 20 ``ctx.sleep(name, 0)``, the block that goes first
    alternating from run to run; each block is timed inside the handler. One worker."""
    step_ms: list[float] = []
    sleep_ms: list[float] = []

    async def handler(ctx: pgqrs.RunContext, params: Any) -> None:
        order = ("step", "sleep") if params["i"] % 2 == 0 else ("sleep", "step")
        for kind in order:
            t0 = time.perf_counter()
            for i in range(PER_RUN):
                if kind == "step":
                    await ctx.step(f"s{i}", noop)
                else:
                    await ctx.sleep(f"z{i}", 0)
            per = (time.perf_counter() - t0) / PER_RUN * 1000
            (step_ms if kind == "step" else sleep_ms).append(per)

    async with b.fresh_store() as store:
        await store.create_workflow("timers")
        for i in range(c.timer_runs):
            await pgqrs.workflow("timers").trigger({"i": i}).execute(store)
        worker = await pgqrs.consumer("timers", None, "timers").handler(handler).create(store)
        await worker.run_until_idle(timeout=600)
        if worker.stats.claimed != c.timer_runs:  # a zero sleep must never park its run
            raise RuntimeError(f"timers: {worker.stats.claimed} deliveries, not {c.timer_runs}")
    if len(sleep_ms) != c.timer_runs:
        raise RuntimeError(f"timers: {len(sleep_ms)} of {c.timer_runs} runs completed")
    step, sleep = percentile(step_ms, 50), percentile(sleep_ms, 50)
    return {"step_ms": step, "sleep_ms": sleep, "ratio": sleep / step}


# ---------------------------------------------------------------- event round trip


class _Producer:
    """``python -m bench.producer URL waits``: triggers runs and sends events from another
    process, so only NOTIFY can wake this one's worker."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> _Producer:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.producer",
            self.url,
            "waits",
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        ready = await asyncio.wait_for(self.proc.stdout.readline(), 30)
        if ready.strip() != b"ready":
            raise RuntimeError(f"producer did not start: {ready!r}")
        return self

    async def ask(self, line: str) -> list[str]:
        assert self.proc is not None and self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(f"{line}\n".encode())
        await self.proc.stdin.drain()
        return (await asyncio.wait_for(self.proc.stdout.readline(), 30)).decode().split()

    async def __aexit__(self, *exc: object) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 30)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


async def event_round_trip(b: Backend, c: Counts, other_process: bool) -> dict[str, float]:
    """Per sample: a run is triggered (``pickup``: from just before the commit to the
    handler's first line), parks in ``wait_for_event``, then gets its event (``event``: from
    just before ``send_event``'s commit to the line after the wait, in the run's second
    delivery: claim, replay, consume; ``rewoken``: to that delivery's first line). An idle worker with a 5 s poll interval, so a missed
    wake-up shows. ``other_process``: both commits come from ``bench/producer.py`` (only
    NOTIFY wakes the worker); else from an ``AsyncSession`` of the worker's process."""
    entered: asyncio.Queue[float] = asyncio.Queue()
    woke: asyncio.Queue[tuple[float, float]] = asyncio.Queue()
    seen: set[int] = set()

    async def handler(ctx: pgqrs.RunContext, params: Any) -> None:
        t = time.perf_counter()
        if ctx.run_id not in seen:
            seen.add(ctx.run_id)
            entered.put_nowait(t)
        await ctx.wait_for_event("go")
        woke.put_nowait((t, time.perf_counter()))  # this delivery's start, the wait's return

    pickup: list[float] = []
    event: list[float] = []
    rewoken: list[float] = []  # send -> the handler's first line again
    async with b.fresh_store() as store:
        await store.create_workflow("waits")
        worker = (
            await pgqrs.consumer("idle", None, "waits")
            .handler(handler)
            .create(store, poll_interval=5.0)
        )
        sessions = async_sessionmaker(store.engine, expire_on_commit=False)
        producer: _Producer | None = None

        async def trigger(i: int) -> tuple[int, float]:
            if producer is not None:
                sent_id, sent_at = await producer.ask(str(i))
                return int(sent_id), float(sent_at)
            async with sessions() as session:
                await session.begin()
                run_id = await pgqrs.workflow("waits").trigger({"i": i}).execute(session)
                t0 = time.perf_counter()
                await session.commit()
            return run_id, t0

        async def send(run_id: int, i: int) -> float:
            if producer is not None:
                (sent_at,) = await producer.ask(f"event {run_id} {i}")
                return float(sent_at)
            async with sessions() as session:
                await session.begin()
                await store.send_event(run_id, "go", i, target=session)
                t0 = time.perf_counter()
                await session.commit()
            return t0

        async with worker:
            if other_process:
                producer = await _Producer(b.url).__aenter__()
            try:
                await _until_polling(worker)
                for i in range(c.latency):
                    run_id, t0 = await trigger(i)
                    pickup.append(await asyncio.wait_for(entered.get(), 30) - t0)
                    await store.wait_for_status(run_id, pgqrs.RunStatus.PAUSED, timeout=30)
                    await asyncio.sleep(0.01)  # let the worker settle back into its idle wait
                    t1 = await send(run_id, i)
                    again, returned = await asyncio.wait_for(woke.get(), 30)
                    event.append(returned - t1)
                    rewoken.append(again - t1)
                    await store.wait_for_run(run_id, timeout=30)
                    await asyncio.sleep(0.01)
            finally:
                if producer is not None:
                    await producer.__aexit__()
    return {
        "event_p50": percentile(event, 50) * 1000,
        "event_p90": percentile(event, 90) * 1000,
        "event_p99": percentile(event, 99) * 1000,
        "rewoken_p50": percentile(rewoken, 50) * 1000,
        "pickup_p50": percentile(pickup, 50) * 1000,
        "pickup_p90": percentile(pickup, 90) * 1000,
    }
