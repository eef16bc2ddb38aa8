"""The guide's crash-recovery story, visible in a few seconds (`make demo`).

1. create the workflow and trigger a run;
2. start worker-1 (a real process): it records `fetch_data`, then is killed (SIGKILL) in the
   middle of `transform_data`;
3. start worker-2: the dead worker's lease expires, worker-2 claims the run, *replays*
   `fetch_data` from the database without running it, runs `transform_data` again (its
   body never got recorded: at-least-once) and executes the rest. The steps table says
   so: `transform_data` has `attempts=2`, the others 1.

SQLite by default; set DATABASE_URL=postgresql://user@host/db to use PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tempfile
from pathlib import Path

import pgqrs_sqla as pgqrs

HERE = Path(__file__).resolve().parent


async def start_worker(
    url: str, run_id: int, name: str, executed: dict[str, list[str]], *extra: str
) -> int:
    """Run a worker process, echo what it prints, and note which step bodies it executed
    (each body prints ``<step>: executing``; a replayed step prints nothing)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HERE / "pipeline.py"),
        url,
        str(run_id),
        "--name",
        name,
        *extra,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    async for raw in proc.stdout:
        line = raw.decode().rstrip()
        print(line, flush=True)
        step, _, rest = line.partition("] ")[2].partition(": ")
        if rest.startswith("executing"):
            executed.setdefault(step, []).append(name)
    return await proc.wait()


async def main() -> None:
    # SQLite's file lives in a folder removed when the demo ends, however it ends.
    with tempfile.TemporaryDirectory(prefix="pgqrs-demo-") as scratch:
        await demo(os.environ.get("DATABASE_URL") or f"sqlite:///{scratch}/pipeline.db")


async def demo(url: str) -> None:
    store = await pgqrs.connect(url)
    try:
        await store.install()
        await store.create_workflow("data_pipeline")
        run_id = (
            await pgqrs.workflow("data_pipeline")
            .trigger({"url": "https://example.com/data"})
            .execute(store)
        )
        print(f"triggered run {run_id} on {store}")

        executed: dict[str, list[str]] = {}
        print("\nworker-1 starts (it will be killed in the middle of transform_data):")
        code = await start_worker(url, run_id, "worker-1", executed, "--crash-in", "transform_data")
        print(f"worker-1 died (exit {code}{', SIGKILL' if code == -signal.SIGKILL else ''})")
        run = await store.get_run(run_id)
        print(f"run {run_id} is {run.status.value}; recorded: {[s.name for s in run.steps]}")

        print("\nworker-2 starts (the dead worker's lease expires after 2 s, then it takes over):")
        await start_worker(url, run_id, "worker-2", executed)
        output = await store.wait_for_run(run_id, timeout=30)

        run = await store.get_run(run_id)
        print(f"\nrun {run_id}: {run.status.value} -> {output}")
        print("what worker-2 did with each step (from its output and the steps table):")
        for step in run.steps:
            ran = executed.get(step.name, [])
            if "worker-2" in ran:
                before = ", ".join(w for w in dict.fromkeys(ran) if w != "worker-2")
                what = "executed" + (f" (again: {before} was killed inside it)" if before else "")
            else:
                by = ", ".join(dict.fromkeys(ran)) or "nobody"  # a transient retry runs twice
                what = f"replayed from the database (executed by {by})"
            print(f"  {step.name:<15} {step.status.value:<8} attempts={step.attempts}  {what}")
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(main())
