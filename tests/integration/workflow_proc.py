"""A worker process for crash tests: runs the `pipeline` workflow until one run ends.

    python workflow_proc.py URL RUN_ID --name NAME --journal FILE [--crash-after STEP]
        [--crash-inside STEP] [--vt SECONDS]

Every step body appends a line to the journal file (flushed and fsynced) before returning, so
the test can count how often each body really ran. ``--crash-after STEP`` SIGKILLs this process
right after STEP is recorded; ``--crash-inside save_results`` SIGKILLs it inside the
transactional step, after its writes but before its commit; ``--crash-inside transform_data``
inside that plain step's body, after its journal line.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

import pgqrs_sqla as pgqrs


def journal(path: str, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def make_handler(args: argparse.Namespace) -> Any:
    def crash_point(step: str) -> None:
        if args.crash_after == step:
            os.kill(os.getpid(), signal.SIGKILL)

    async def handler(ctx: pgqrs.RunContext, params: dict[str, Any]) -> dict[str, Any]:
        async def fetch() -> list[int]:
            journal(args.journal, "fetch_data")
            return list(range(params["n"]))

        data = await ctx.step("fetch_data", fetch)
        crash_point("fetch_data")

        async def transform() -> list[int]:
            journal(args.journal, "transform_data")
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
            journal(args.journal, "save_results")
            if args.crash_inside == "save_results":
                os.kill(os.getpid(), signal.SIGKILL)
            return len(transformed)

        saved = await ctx.step("save_results", save, transactional=True)
        crash_point("save_results")
        return {"processed_count": saved}

    return handler


async def main(args: argparse.Namespace) -> None:
    store = await pgqrs.connect(args.url)
    try:
        worker = await (
            pgqrs.consumer(args.name, None, "pipeline")
            .handler(make_handler(args))
            .create(store, visibility_timeout=args.vt, poll_interval=0.05)
        )
        async with worker:
            await store.wait_for_status(
                args.run_id, pgqrs.RunStatus.SUCCESS, pgqrs.RunStatus.ERROR, timeout=60
            )
    finally:
        await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("run_id", type=int)
    parser.add_argument("--name", required=True)
    parser.add_argument("--journal", required=True)
    parser.add_argument("--crash-after")
    parser.add_argument("--crash-inside")
    parser.add_argument("--vt", type=float, default=1.0)
    asyncio.run(main(parser.parse_args()))
