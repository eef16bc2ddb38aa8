"""The durable-workflows guide's data pipeline, with `import pgqrs_sqla as pgqrs`.

Run a worker for it:  python examples/data_pipeline/pipeline.py DATABASE_URL RUN_ID
                      [--crash-after STEP | --crash-in STEP]

Every step body prints what it does, so you can see which steps *executed* in this process;
a step recorded by an earlier (crashed) worker is replayed from the database silently.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
from typing import Any

import pgqrs_sqla as pgqrs
from pgqrs_sqla import TransientError

CRASH_AFTER: str | None = None
CRASH_IN: str | None = None


def is_transient(error: Exception) -> bool:
    return isinstance(error, ConnectionError)


async def fetch_from_api(url: str) -> list[int]:
    await asyncio.sleep(0.05)  # stands in for an HTTP call
    if random.random() < 0.1:
        raise ConnectionError("upstream hiccup")
    return list(range(1, 11))


def transform_logic(data: list[int]) -> list[int]:
    return [x * x for x in data]


async def save_to_db(rows: list[int]) -> None:
    await asyncio.sleep(0.01)


def report(step: str, text: str) -> None:
    print(f"    [pid {os.getpid()}] {step}: {text}", flush=True)


def maybe_crash(step: str) -> None:
    """Simulate a crash (SIGKILL) right after ``step`` is recorded (``--crash-after``)."""
    if step == CRASH_AFTER:
        report(step, "recorded; now simulating a crash (SIGKILL)")
        os.kill(os.getpid(), signal.SIGKILL)


def maybe_crash_inside(step: str) -> None:
    """Simulate a crash (SIGKILL) in the middle of ``step``'s body (``--crash-in``)."""
    if step == CRASH_IN:
        report(step, "half done; now simulating a crash (SIGKILL)")
        os.kill(os.getpid(), signal.SIGKILL)


# The workflow handler, as in the guide.
async def data_pipeline_handler(ctx: pgqrs.RunContext, params: dict[str, Any]) -> dict[str, Any]:
    # Step 1: Fetch data
    async def fetch() -> list[int]:
        report("fetch_data", f"executing (fetching {params['url']})")
        try:
            return await fetch_from_api(params["url"])
        except Exception as e:
            if is_transient(e):
                raise TransientError(retry_after=1) from e  # retry in a second
            raise

    data = await ctx.step("fetch_data", fetch)
    maybe_crash("fetch_data")

    # Step 2: Transform data
    async def transform() -> list[int]:
        report("transform_data", f"executing (processing {len(data)} records)")
        maybe_crash_inside("transform_data")
        return transform_logic(data)

    transformed = await ctx.step("transform_data", transform)
    maybe_crash("transform_data")

    # Step 3: Save results
    async def save() -> None:
        report("save_results", f"executing (saving {len(transformed)} records)")
        await save_to_db(transformed)

    await ctx.step("save_results", save)
    return {"processed_count": len(transformed)}


async def run_worker(url: str, name: str, run_id: int) -> None:
    store = await pgqrs.connect(url)
    try:
        await store.create_workflow("data_pipeline")
        worker = await (
            pgqrs.consumer(name, 8080, "data_pipeline")
            .handler(data_pipeline_handler)
            .create(store, visibility_timeout=2, poll_interval=0.1)
        )
        async with worker:
            await store.wait_for_status(run_id, pgqrs.RunStatus.SUCCESS, pgqrs.RunStatus.ERROR)
    finally:
        await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("run_id", type=int)
    parser.add_argument("--name", default=f"worker-{os.getpid()}")
    parser.add_argument("--crash-after")
    parser.add_argument("--crash-in")
    args = parser.parse_args()
    CRASH_AFTER, CRASH_IN = args.crash_after, args.crash_in
    asyncio.run(run_worker(args.url, args.name, args.run_id))
