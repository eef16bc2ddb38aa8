"""pgqrs-sqla benchmarks: `python -m bench` (or `make bench`).

Every figure is printed beside the *physical reference* measured in the same run on the same
database — the raw driver's single-row ``INSERT … COMMIT`` per second with 1 and with 4
connections — and as a ratio to it. Medians of ``--repeat`` repetitions (default 3).

    python -m bench                       # both backends
    python -m bench --backend sqlite --quick
    python -m bench --only raw,step --database-url postgresql://postgres@127.0.0.1/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiosqlite
import asyncpg
import sqlalchemy
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker

import pgqrs_sqla as pgqrs

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass
class Counts:
    raw: int = 2000
    enqueue: int = 2000
    batch: int = 20_000
    drain: int = 10_000
    trigger: int = 1000
    steps_runs: int = 25
    e2e: int = 2000
    latency: int = 200

    @classmethod
    def quick(cls) -> Counts:
        return cls(
            raw=200,
            enqueue=200,
            batch=1000,
            drain=500,
            trigger=100,
            steps_runs=3,
            e2e=100,
            latency=20,
        )


@dataclass
class Row:
    name: str
    value: float
    unit: str
    reference: str | None = None  # key of the physical reference to compare with
    goal: float | None = None  # goal as a ratio to the reference (or absolute if no ref)
    note: str = ""
    extra: dict[str, float] = field(default_factory=dict)


class Backend:
    """A scratch database for one backend: a raw-driver insert and a pgqrs store."""

    def __init__(self, kind: str, pg_url: str) -> None:
        self.kind = kind
        self.pg_url = pg_url
        self.url = ""
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._dbname = ""

    async def __aenter__(self) -> Backend:
        if self.kind == "sqlite":
            self._tmp = tempfile.TemporaryDirectory(prefix="pgqrs-bench-")
            self.url = f"sqlite:///{self._tmp.name}/bench.db"
        else:
            self._dbname = f"pgqrs_bench_{uuid.uuid4().hex[:8]}"
            admin = await asyncpg.connect(self.pg_url)
            await admin.execute(f"CREATE DATABASE {self._dbname}")
            await admin.close()
            self.url = self.pg_url.rsplit("/", 1)[0] + "/" + self._dbname
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
        if self._dbname:
            admin = await asyncpg.connect(self.pg_url)
            await admin.execute(f"DROP DATABASE IF EXISTS {self._dbname} WITH (FORCE)")
            await admin.close()

    @contextlib.asynccontextmanager
    async def fresh_store(self, **options: Any) -> AsyncIterator[pgqrs.Store]:
        """A store on emptied tables (dropped and re-installed)."""
        store = await pgqrs.connect(self.url, pool_size=8, **options)
        async with store.engine.begin() as conn:
            await conn.run_sync(store.models.metadata.drop_all)
        await store.install()
        try:
            yield store
        finally:
            await store.close()

    async def raw_insert_rate(self, n: int, connections: int) -> float:
        """The physical reference: single-row INSERT, each its own committed transaction."""
        payload = '{"n": 1}'
        if self.kind == "postgresql":
            conns = [await asyncpg.connect(self.url) for _ in range(connections)]
            await conns[0].execute(
                "DROP TABLE IF EXISTS raw_ref; CREATE TABLE raw_ref (id bigserial primary key, payload jsonb)"
            )

            async def work(c: Any) -> None:
                for _ in range(n // connections):
                    await c.execute("INSERT INTO raw_ref (payload) VALUES ($1)", payload)

            start = time.perf_counter()
            await asyncio.gather(*(work(c) for c in conns))
            elapsed = time.perf_counter() - start
            for c in conns:
                await c.close()
        else:
            path = self.url.removeprefix("sqlite:///")
            dbs = [await aiosqlite.connect(path, isolation_level=None) for _ in range(connections)]
            for db in dbs:
                await db.execute("PRAGMA journal_mode=WAL")
                await db.execute("PRAGMA synchronous=NORMAL")
                await db.execute("PRAGMA busy_timeout=30000")
            await dbs[0].execute("DROP TABLE IF EXISTS raw_ref")
            await dbs[0].execute("CREATE TABLE raw_ref (id INTEGER PRIMARY KEY, payload TEXT)")

            async def swork(db: Any) -> None:
                for _ in range(n // connections):
                    await db.execute("INSERT INTO raw_ref (payload) VALUES (?)", (payload,))

            start = time.perf_counter()
            await asyncio.gather(*(swork(db) for db in dbs))
            elapsed = time.perf_counter() - start
            for db in dbs:
                await db.close()
        return (n // connections) * connections / elapsed


async def noop_message(message: pgqrs.Message) -> None:
    return None


async def noop() -> None:
    return None


async def three_steps(ctx: pgqrs.RunContext, params: Any) -> Any:
    for i in range(3):
        await ctx.step(f"s{i}", noop)
    return None


async def twenty_steps(ctx: pgqrs.RunContext, params: Any) -> Any:
    for i in range(20):
        await ctx.step(f"s{i}", noop)
    return None


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def bench_enqueue(b: Backend, c: Counts) -> dict[str, float]:
    async with b.fresh_store() as store:
        await store.create_queue("q")
        queue = store.queue("q")
        start = time.perf_counter()
        for i in range(c.enqueue):
            await queue.enqueue({"i": i})
        single = c.enqueue / (time.perf_counter() - start)
        start = time.perf_counter()
        for s in range(0, c.batch, 100):
            await queue.enqueue_batch([{"i": i} for i in range(s, s + 100)])
        batch = c.batch / (time.perf_counter() - start)
    return {"single": single, "batch": batch}


async def bench_drain(b: Backend, c: Counts, consumers: int, batch: int) -> float:
    async with b.fresh_store() as store:
        await store.create_queue("q")
        for s in range(0, c.drain, 500):
            await store.queue("q").enqueue_batch([None] * min(500, c.drain - s))
        workers = [
            await pgqrs.consumer(f"d{i}", None, "q")
            .handler(noop_message)
            .create(store, concurrency=batch, batch_size=batch, poll_interval=0.05, own_pool=False)
            for i in range(consumers)
        ]
        start = time.perf_counter()
        await asyncio.gather(*(w.run_until_idle(timeout=600) for w in workers))
        return c.drain / (time.perf_counter() - start)


async def bench_trigger(b: Backend, c: Counts) -> dict[str, float]:
    async with b.fresh_store() as store:
        await store.create_workflow("wf")
        async with store.engine.begin() as conn:
            await conn.execute(
                text("CREATE TABLE app_rows (id INTEGER PRIMARY KEY, run_id BIGINT)")
            )
        sessions = async_sessionmaker(store.engine)
        latencies = []
        start = time.perf_counter()
        for i in range(c.trigger):
            t0 = time.perf_counter()
            async with sessions() as session, session.begin():
                await session.execute(text("INSERT INTO app_rows (id) VALUES (:i)"), {"i": i})
                await pgqrs.workflow("wf").trigger({"i": i}).execute(session)
            latencies.append(time.perf_counter() - t0)
        rate = c.trigger / (time.perf_counter() - start)
    return {"rate": rate, "p50": pct(latencies, 50) * 1000, "p99": pct(latencies, 99) * 1000}


async def bench_steps(b: Backend, c: Counts) -> float:
    async with b.fresh_store() as store:
        await store.create_workflow("twenty")
        for _ in range(c.steps_runs):
            await pgqrs.workflow("twenty").trigger().execute(store)
        worker = (
            await pgqrs.consumer("s", None, "twenty")
            .handler(twenty_steps)
            .create(store, poll_interval=0.05)
        )
        start = time.perf_counter()
        await worker.run_until_idle(timeout=600)
        return c.steps_runs * 20 / (time.perf_counter() - start)


async def bench_e2e(b: Backend, c: Counts, concurrency: int) -> float:
    async with b.fresh_store() as store:
        await store.create_workflow("three")
        for _ in range(c.e2e):
            await pgqrs.workflow("three").trigger().execute(store)
        worker = (
            await pgqrs.consumer("e", None, "three")
            .handler(three_steps)
            .create(store, concurrency=concurrency, poll_interval=0.05, pool_size=concurrency + 2)
        )
        start = time.perf_counter()
        await worker.run_until_idle(timeout=600)
        return c.e2e / (time.perf_counter() - start)


async def bench_latency(b: Backend, c: Counts) -> dict[str, float]:
    """Trigger commit -> handler start, with an idle worker waiting (long poll interval, so
    only the wake-up path counts)."""
    async with b.fresh_store() as store:
        await store.create_workflow("ping")
        started: asyncio.Queue[float] = asyncio.Queue()

        async def handler(ctx: pgqrs.RunContext, params: Any) -> None:
            started.put_nowait(time.perf_counter())

        worker = (
            await pgqrs.consumer("l", None, "ping").handler(handler).create(store, poll_interval=5)
        )
        samples = []
        async with worker:
            await asyncio.sleep(0.3)
            for _ in range(c.latency):
                t0 = time.perf_counter()
                await pgqrs.workflow("ping").trigger().execute(store)
                samples.append(await asyncio.wait_for(started.get(), 10) - t0)
                await asyncio.sleep(0.005)  # let the worker go idle again
    return {"p50": pct(samples, 50) * 1000, "p99": pct(samples, 99) * 1000}


async def median(repeat: int, fn: Callable[[], Awaitable[Any]]) -> Any:
    results = [await fn() for _ in range(repeat)]
    if isinstance(results[0], dict):
        return {k: statistics.median(r[k] for r in results) for k in results[0]}
    return statistics.median(results)


async def run_backend(
    kind: str, args: argparse.Namespace, c: Counts
) -> tuple[list[Row], dict[str, Any]]:
    only = set(args.only.split(",")) if args.only else None

    def want(name: str) -> bool:
        return only is None or name in only

    rows: list[Row] = []
    info: dict[str, Any] = {}
    r = args.repeat
    async with Backend(kind, args.database_url) as b:
        if kind == "postgresql":
            conn = await asyncpg.connect(b.url)
            info["server"] = await conn.fetchval("SHOW server_version")
            await conn.close()
        else:
            info["server"] = f"SQLite {sqlite_version()}"
        ref = {
            "raw1": await median(r, lambda: b.raw_insert_rate(c.raw, 1)),
            "raw4": await median(r, lambda: b.raw_insert_rate(c.raw, 4)),
        }
        rows.append(
            Row("raw INSERT+COMMIT, 1 connection", ref["raw1"], "rows/s", note="physical reference")
        )
        rows.append(
            Row(
                "raw INSERT+COMMIT, 4 connections", ref["raw4"], "rows/s", note="physical reference"
            )
        )
        info["ref"] = ref
        if want("enqueue"):
            e = await median(r, lambda: bench_enqueue(b, c))
            rows.append(Row("enqueue, one transaction each", e["single"], "msgs/s", "raw1", 0.8))
            rows.append(Row("enqueue_batch of 100", e["batch"], "msgs/s", "raw1"))
        if want("drain"):
            for consumers in (1, 4):
                for size in (1, 10, 50):
                    rate = await median(r, lambda n=consumers, s=size: bench_drain(b, c, n, s))
                    goal = None
                    if (consumers, size) == (1, 1):
                        goal = 0.25
                    elif (consumers, size) == (4, 50):
                        goal = 4.0
                    rows.append(
                        Row(
                            f"drain {c.drain} no-op msgs, {consumers} worker(s), batch {size}",
                            rate,
                            "msgs/s",
                            "raw1" if consumers == 1 else "raw4",
                            goal,
                        )
                    )
        if want("trigger"):
            t = await median(r, lambda: bench_trigger(b, c))
            rows.append(
                Row(
                    "trigger in the caller's transaction",
                    t["rate"],
                    "runs/s",
                    "raw1",
                    0.7,
                    note=f"p50 {t['p50']:.2f} ms, p99 {t['p99']:.2f} ms",
                )
            )
        if want("step"):
            steps = await median(r, lambda: bench_steps(b, c))
            rows.append(
                Row(
                    "20-step workflow, step checkpoints",
                    steps,
                    "steps/s",
                    "raw1",
                    0.5,
                    note=f"{1000 / steps:.2f} ms per step",
                )
            )
        if want("e2e"):
            for conc, refkey in ((1, "raw1"), (4, "raw4")):
                rate = await median(r, lambda n=conc: bench_e2e(b, c, n))
                rows.append(
                    Row(
                        f"{c.e2e} runs of a 3-step workflow, {conc} worker task(s)",
                        rate,
                        "runs/s",
                        refkey,
                        0.2,
                    )
                )
        if want("latency"):
            lat = await median(r, lambda: bench_latency(b, c))
            rows.append(
                Row(
                    "enqueue -> start latency p50",
                    lat["p50"],
                    "ms",
                    None,
                    10.0 if kind == "postgresql" else None,
                    note=f"p99 {lat['p99']:.2f} ms",
                )
            )
    return rows, info


def sqlite_version() -> str:
    import sqlite3

    return sqlite3.sqlite_version


def render(kind: str, rows: list[Row], info: dict[str, Any]) -> str:
    ref = info["ref"]
    lines = [
        f"\n### {kind} ({info['server']})\n",
        "| measurement | value | ratio to raw | goal | |",
        "|---|---:|---:|---:|---|",
    ]
    for row in rows:
        ratio = row.value / ref[row.reference] if row.reference else None
        if row.goal is None:
            goal, verdict = "", ""
        elif row.reference:
            goal, verdict = (
                f"≥ {row.goal:g}×",
                "PASS" if ratio is not None and ratio >= row.goal else "MISS",
            )
        else:
            goal, verdict = f"< {row.goal:g} {row.unit}", "PASS" if row.value < row.goal else "MISS"
        ratio_s = f"{ratio:.2f}×" if ratio is not None else ""
        note = f" ({row.note})" if row.note else ""
        lines.append(
            f"| {row.name}{note} | {row.value:,.1f} {row.unit} | {ratio_s} | {goal} | {verdict} |"
        )
    return "\n".join(lines)


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument(
        "--database-url", default=os.environ.get("PGQRS_BENCH_DATABASE_URL", DEFAULT_PG)
    )
    parser.add_argument("--quick", action="store_true", help="small counts, one repetition")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", help="comma list of: enqueue,drain,trigger,step,e2e,latency")
    args = parser.parse_args(argv)
    counts = Counts.quick() if args.quick else Counts()
    if args.quick:
        args.repeat = 1
    print("# pgqrs-sqla benchmarks")
    print(
        f"python {platform.python_version()}, SQLAlchemy {sqlalchemy.__version__}, asyncpg {asyncpg.__version__}, "
        f"aiosqlite {aiosqlite.__version__}, {os.cpu_count()} CPUs, {platform.machine()}; "
        f"medians of {args.repeat}; counts {counts}"
    )
    kinds = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    for kind in kinds:
        rows, info = await run_backend(kind, args, counts)
        print(render(kind, rows, info), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
