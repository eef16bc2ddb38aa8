"""The durable-workflows guide's pipeline in one process: `.venv/bin/python examples/quickstart.py`.

SQLite by default; set DATABASE_URL=postgresql://user@host/db to run it on PostgreSQL. It
triggers a run, lets a worker execute it (one transient failure retried, one pause resumed by
an "external" approval), and prints each step as recorded in the database.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from typing import Any

import pgqrs_sqla as pgqrs
from pgqrs_sqla import Step, StepStatus, TransientError

attempts = {"fetch_data": 0}


async def data_pipeline_handler(ctx: pgqrs.RunContext, params: dict[str, Any]) -> dict[str, Any]:
    async def fetch() -> list[int]:
        attempts["fetch_data"] += 1
        if attempts["fetch_data"] == 1:
            raise TransientError("upstream timed out", retry_after=0.2)  # retried shortly
        return list(range(10))

    data = await ctx.step("fetch_data", fetch)

    async def transform() -> list[int]:
        return [x * x for x in data]

    transformed = await ctx.step("transform_data", transform)
    # Wait for a human: the run pauses and the worker moves on.
    approval = await ctx.step("wait_for_approval", lambda: Step.pause(3600))

    async def save() -> int:
        return sum(transformed)

    total = await ctx.step("save_results", save)
    return {"processed_count": len(transformed), "total": total, "approved_by": approval["by"]}


async def main() -> None:
    url = os.environ.get("DATABASE_URL") or f"sqlite:///{tempfile.mkdtemp()}/demo.db"
    store = await pgqrs.connect(url)
    try:
        await store.install()
        await store.create_workflow("data_pipeline")
        worker = await (
            pgqrs.consumer("demo-worker", 8080, "data_pipeline")
            .handler(data_pipeline_handler)
            .create(store, poll_interval=0.1)
        )
        async with worker:  # runs the worker as a task in this loop
            run_id = (
                await pgqrs.workflow("data_pipeline")
                .trigger({"url": "https://example.com/data"})
                .execute(store)
            )
            print(f"triggered run {run_id} on {store}")
            await store.wait_for_status(run_id, pgqrs.RunStatus.PAUSED, timeout=30)
            print("run paused at wait_for_approval; approving it from 'a webhook'")
            await store.update_step(
                run_id, "wait_for_approval", StepStatus.SUCCESS, {"by": "alice"}
            )
            await store.resume_run(run_id)
            output = await store.wait_for_run(run_id, timeout=30)
        run = await store.get_run(run_id)
        print(f"run {run.id}: {run.status.value} -> {output}")
        for step in run.steps:
            print(
                f"  {step.name:<18} {step.status.value:<8} attempts={step.attempts} output={step.output!r:.40}"
            )
    finally:
        await store.close()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main())
