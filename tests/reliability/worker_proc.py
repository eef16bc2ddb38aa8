"""A worker process for the reliability suite.

    python worker_proc.py storm URL NAME JOURNAL     # the 5-step 'storm' workflow
    python worker_proc.py plain URL NAME JOURNAL     # 4 tasks on plain queue 'contend'
    python worker_proc.py long URL NAME JOURNAL      # the 'long' workflow: one 3 s step

Each handling appends a line to JOURNAL (flushed, fsynced) so the test can count what ran.
The process runs until SIGTERM (graceful) or SIGKILL (the point of the suite).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

import pgqrs_sqla as pgqrs


def journal(path: str, record: dict[str, Any], *, durable: bool = True) -> None:
    """Append a record; ``durable`` fsyncs it (needed where the process is SIGKILLed)."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        if durable:
            os.fsync(f.fileno())


def storm_handler(path: str) -> Any:
    async def handler(ctx: pgqrs.RunContext, params: dict[str, Any]) -> Any:
        total = 0
        for i in range(5):
            if i == 2:

                async def effect(session: AsyncSession, i: int = i) -> int:
                    await session.execute(
                        text("INSERT INTO effects (run_id, step) VALUES (:r, :s)"),
                        {"r": ctx.run_id, "s": f"s{i}"},
                    )
                    await asyncio.sleep(random.uniform(0, 0.01))
                    return i

                total += await ctx.step(f"s{i}", effect, transactional=True)
            else:

                async def plain(i: int = i) -> int:
                    await asyncio.sleep(random.uniform(0, 0.01))
                    journal(path, {"run": ctx.run_id, "step": f"s{i}"})
                    return i

                total += await ctx.step(f"s{i}", plain)
        return total

    return handler


def plain_handler(path: str) -> Any:
    async def handler(message: pgqrs.Message) -> None:
        # not fsynced: this mode ends with SIGTERM, and an fsync per message would dominate
        journal(
            path, {"id": message.id, "token": message.read_ct, "pid": os.getpid()}, durable=False
        )
        if message.payload["slow"] and message.read_ct == 1:
            await asyncio.sleep(2.2)  # outlives its 2 s lease: someone else takes it

    return handler


def long_handler(path: str) -> Any:
    async def handler(ctx: pgqrs.RunContext, params: Any) -> Any:
        async def long_step() -> str:
            journal(path, {"run": ctx.run_id, "event": "start", "pid": os.getpid()})
            await asyncio.sleep(3.0)
            journal(path, {"run": ctx.run_id, "event": "end", "pid": os.getpid()})
            return "done"

        return await ctx.step("long", long_step)

    return handler


async def main(mode: str, url: str, name: str, path: str) -> None:
    store = await pgqrs.connect(url)
    if mode == "storm":
        builder = pgqrs.consumer(name, None, "storm").handler(storm_handler(path))
        options: dict[str, Any] = {
            "visibility_timeout": 1.0,
            "heartbeat_interval": 0.3,
            "concurrency": 2,
        }
    elif mode == "plain":
        builder = pgqrs.consumer(name, None, "contend").handler(plain_handler(path))
        # Leases are not extended in time on purpose (heartbeat 30 s > lease 0.4 s).
        options = {
            "visibility_timeout": 0.4,
            "heartbeat_interval": 30,
            "concurrency": 4,
            "batch_size": 10,
        }
    else:
        builder = pgqrs.consumer(name, None, "long").handler(long_handler(path))
        options = {"visibility_timeout": 1.0, "heartbeat_interval": 0.2}
    worker = await builder.create(store, poll_interval=0.05, **options)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, lambda: asyncio.ensure_future(worker.stop(grace=5)))
    worker.start()
    assert worker._task is not None
    await worker._task
    sys.stdout.write(
        json.dumps({"lease_lost": worker.stats.lease_lost, "completed": worker.stats.completed})
        + "\n"
    )
    await store.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
