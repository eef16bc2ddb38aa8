"""Triggers and claims that keep flowing, timed one by one: in-process, or as a child process.

:func:`claim_round` is the worker's own claim path (``Delivery.claim_round``: the claim
statement, on PostgreSQL with the runs' start in it, on SQLite with the start after it; the
runs then execute and finish for real); :func:`trigger` is ``trigger().execute(store)``,
the store's own transaction. :mod:`bench.scale` times them at each history size, and runs
``python -m bench.load URL`` beside ``store.prune()``: it triggers and claims in two loops,
one every ``--every`` ms each, until its stdin closes, then prints one JSON list of
``[kind, perf_counter at the start, milliseconds]`` (``time.perf_counter`` is
CLOCK_MONOTONIC, shared by the processes of one machine).

For a scale-out run, :func:`start_loads` starts N of these processes on one database and
:func:`stop_loads` collects their samples; throughput is the samples' count over the window.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import pgqrs_sqla as pgqrs

from .fill import WORKFLOW
from .harness import ROOT

Sample = tuple[str, float, float]


async def noop_run(ctx: pgqrs.RunContext, params: Any) -> None:
    return None


async def noop_message(message: pgqrs.Message) -> None:
    return None


async def claimer(store: pgqrs.Store, name: str, queue: str, concurrency: int) -> pgqrs.Worker:
    """A registered worker of ``queue`` (never started: :func:`claim_round` drives it)."""
    handler: Any = noop_run if queue == WORKFLOW else noop_message
    return (
        await pgqrs.consumer(name, None, queue)
        .handler(handler)
        .create(store, concurrency=concurrency, own_pool=False)
    )


async def claim_round(worker: pgqrs.Worker, batch: int) -> tuple[float, int]:
    """One claim of up to ``batch`` by the worker's own path; its milliseconds and count.

    The claimed runs (messages) then run their no-op handler and finish, untimed.
    """
    delivery = worker._delivery
    t0 = time.perf_counter()
    claimed = await delivery.claim_round(worker.bindings, batch, batch)
    elapsed = (time.perf_counter() - t0) * 1000
    tasks = {flight.task for flight in worker._inflight.values()}
    if tasks:
        await asyncio.gather(*tasks)
    return elapsed, claimed


async def trigger(store: pgqrs.Store, i: int) -> float:
    """One ``trigger().execute(store)``; its milliseconds."""
    t0 = time.perf_counter()
    await pgqrs.workflow(WORKFLOW).trigger({"order": i}).execute(store)
    return (time.perf_counter() - t0) * 1000


async def flow(url: str, every: float, stop: asyncio.Event) -> list[Sample]:
    """Trigger and claim (batch 1), each once per ``every`` seconds, until ``stop``."""
    store = await pgqrs.connect(url, pool_size=4, prune_interval=None)
    samples: list[Sample] = []
    try:
        worker = await claimer(store, f"load-{time.time_ns()}", WORKFLOW, 1)

        async def triggers() -> None:
            i = 0
            while not stop.is_set():
                at = time.perf_counter()
                samples.append(("trigger", at, await trigger(store, i)))
                i += 1
                await asyncio.sleep(max(0.0, every - (time.perf_counter() - at)))

        async def claims() -> None:
            while not stop.is_set():
                at = time.perf_counter()
                ms, claimed = await claim_round(worker, 1)
                if claimed:
                    samples.append(("claim", at, ms))
                await asyncio.sleep(max(0.0, every - (time.perf_counter() - at)))

        await asyncio.gather(triggers(), claims())
    finally:
        await store.close()
    return samples


async def start_loads(
    url: str, processes: int, every_ms: float
) -> list[asyncio.subprocess.Process]:
    """Start ``processes`` load processes on ``url``; returns once each said it is ready."""
    procs = []
    for _ in range(processes):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.load",
            url,
            str(every_ms),
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        procs.append(proc)
    for proc in procs:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        if line.strip() != b"ready":
            raise RuntimeError(f"load process did not start: {line!r}")
    return procs


async def stop_loads(procs: list[asyncio.subprocess.Process]) -> list[Sample]:
    """Stop the load processes (their stdin closed); every sample they took."""
    samples: list[Sample] = []
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.close()
    for proc in procs:
        out, _ = await asyncio.wait_for(proc.communicate(), 120)
        if proc.returncode != 0:
            raise RuntimeError(f"load process failed (exit {proc.returncode})")
        samples += [(kind, at, ms) for kind, at, ms in json.loads(out)]
    return samples


async def main(url: str, every_ms: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    running = asyncio.create_task(flow(url, every_ms / 1000, stop))
    print("ready", flush=True)
    await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes our stdin
    stop.set()
    print(json.dumps(await running), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2])))
