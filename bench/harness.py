"""The bench's plumbing: counts, scratch databases, the physical reference, goals and the table.

The *physical reference* is what the raw driver does with no library in between: one
single-row ``INSERT`` committed on its own, per second —

* PostgreSQL: asyncpg on an autocommit connection (one round trip, one WAL flush per row);
* SQLite: aiosqlite in autocommit mode with WAL and ``synchronous=NORMAL`` (as our engine
  sets it up), so a commit is a WAL append without ``fsync``;

with 1 connection, and with 4 connections driven by 4 concurrent tasks in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import platform
import sqlite3
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiosqlite
import asyncpg
import sqlalchemy
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import pgqrs_sqla as pgqrs

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Counts:
    """How much work each measurement does (``--count name=N`` overrides one)."""

    raw: int = 2000  # raw inserts per reference measurement
    enqueue: int = 2000  # single enqueues
    batch: int = 20_000  # messages enqueued in batches of 100
    drain: int = 10_000  # messages drained per drain measurement
    trigger: int = 1000  # triggers in the caller's transaction
    step_runs: int = 25  # runs of the 20-step workflow
    e2e: int = 2000  # runs of the 3-step workflow
    latency: int = 200  # enqueue -> start samples (and event round trips)
    timer_runs: int = 25  # runs of 20 steps + 20 zero sleeps
    scale: int = 300  # samples per scale figure (claims of 16 take 16 of the 10 k ready each)

    @classmethod
    def quick(cls) -> Counts:
        return cls(
            raw=200,
            enqueue=200,
            batch=1000,
            drain=500,
            trigger=100,
            step_runs=3,
            e2e=100,
            latency=20,
            timer_runs=4,
            scale=30,
        )

    def override(self, items: list[str]) -> Counts:
        names = {f.name for f in dataclasses.fields(self)}
        changes = {}
        for item in items:
            name, _, value = item.partition("=")
            if name not in names or not value.isdigit() or int(value) < 1:
                raise SystemExit(
                    f"--count {item!r}: expected NAME=N with NAME one of {sorted(names)}"
                )
            changes[name] = int(value)
        return dataclasses.replace(self, **changes)


# ---------------------------------------------------------------- the app's own table


class AppBase(DeclarativeBase):
    """The host app's declarative base: the trigger benchmark writes one of its rows per
    transaction, beside the run."""


class Order(AppBase):
    __tablename__ = "bench_orders"

    id: Mapped[int] = mapped_column(primary_key=True)
    item: Mapped[str]


# ---------------------------------------------------------------- scratch databases


class Backend:
    """A scratch database for one backend (created here, dropped at the end)."""

    def __init__(self, kind: Literal["sqlite", "postgresql"], pg_url: str) -> None:
        self.kind = kind
        self.pg_url = pg_url
        self.url = ""
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._dbname = ""

    @property
    def postgres(self) -> bool:
        return self.kind == "postgresql"

    async def __aenter__(self) -> Backend:
        if self.postgres:
            self._dbname = f"pgqrs_bench_{uuid.uuid4().hex[:8]}"
            admin = await asyncpg.connect(self.pg_url)
            try:
                await admin.execute(f"CREATE DATABASE {self._dbname}")
            finally:
                await admin.close()
            self.url = self.pg_url.rsplit("/", 1)[0] + "/" + self._dbname
        else:
            self._tmp = tempfile.TemporaryDirectory(prefix="pgqrs-bench-")
            self.url = f"sqlite:///{self._tmp.name}/bench.db"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
        if self._dbname:
            admin = await asyncpg.connect(self.pg_url)
            try:
                await admin.execute(f"DROP DATABASE IF EXISTS {self._dbname} WITH (FORCE)")
            finally:
                await admin.close()

    @contextlib.asynccontextmanager
    async def fresh_store(self, **options: Any) -> AsyncIterator[pgqrs.Store]:
        """A store on emptied tables (pgqrs's and the app's dropped and re-created)."""
        store = await pgqrs.connect(self.url, pool_size=8, **options)
        try:
            async with store.engine.begin() as conn:
                await conn.run_sync(store.models.metadata.drop_all)
                await conn.run_sync(AppBase.metadata.drop_all)
                await conn.run_sync(AppBase.metadata.create_all)
            await store.install()
            yield store
        finally:
            await store.close()

    async def describe(self) -> dict[str, str]:
        """Server version and the settings that decide what a commit costs."""
        if not self.postgres:
            return {
                "server": f"SQLite {sqlite3.sqlite_version}",
                "settings": "journal_mode=WAL, synchronous=NORMAL (no fsync per commit)",
            }
        conn = await asyncpg.connect(self.url)
        try:
            version = await conn.fetchval("SHOW server_version")
            settings = await conn.fetch(
                "SELECT name, setting FROM pg_settings WHERE name IN "
                "('fsync', 'synchronous_commit', 'wal_sync_method', 'shared_buffers', "
                "'max_connections') ORDER BY name"
            )
        finally:
            await conn.close()
        return {
            "server": f"PostgreSQL {version.split()[0]}",
            "settings": ", ".join(f"{r['name']}={r['setting']}" for r in settings),
        }

    # ------------------------------------------------------------ the physical reference

    async def raw_insert_rate(self, n: int, connections: int) -> float:
        """Single-row INSERT, each its own committed transaction, by the raw driver; rows/s."""
        per_conn = max(1, n // connections)
        if self.postgres:
            conns = [await asyncpg.connect(self.url) for _ in range(connections)]
            try:
                await conns[0].execute(
                    "DROP TABLE IF EXISTS raw_ref;"
                    "CREATE TABLE raw_ref (id bigserial PRIMARY KEY, payload jsonb)"
                )

                async def pg_work(c: Any, count: int) -> None:
                    for _ in range(count):
                        await c.execute("INSERT INTO raw_ref (payload) VALUES ($1)", '{"n": 1}')

                await asyncio.gather(*(pg_work(c, 20) for c in conns))  # prepare, warm up
                start = time.perf_counter()
                await asyncio.gather(*(pg_work(c, per_conn) for c in conns))
                elapsed = time.perf_counter() - start
            finally:
                for c in conns:
                    await c.close()
        else:
            path = self.url.removeprefix("sqlite:///")
            dbs = [await aiosqlite.connect(path, isolation_level=None) for _ in range(connections)]
            try:
                for db in dbs:
                    await db.execute("PRAGMA busy_timeout = 30000")
                    await db.execute("PRAGMA journal_mode = WAL")
                    await db.execute("PRAGMA synchronous = NORMAL")
                await dbs[0].execute("DROP TABLE IF EXISTS raw_ref")
                await dbs[0].execute("CREATE TABLE raw_ref (id INTEGER PRIMARY KEY, payload TEXT)")

                async def lite_work(db: Any, count: int) -> None:
                    for _ in range(count):
                        await db.execute("INSERT INTO raw_ref (payload) VALUES (?)", ('{"n": 1}',))

                await asyncio.gather(*(lite_work(db, 20) for db in dbs))
                start = time.perf_counter()
                await asyncio.gather(*(lite_work(db, per_conn) for db in dbs))
                elapsed = time.perf_counter() - start
            finally:
                for db in dbs:
                    await db.close()
        return per_conn * connections / elapsed


# ---------------------------------------------------------------- statistics


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    ordered = sorted(values)
    rank = max(1, round(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


async def median_of(repeat: int, fn: Callable[[], Awaitable[dict[str, float]]]) -> dict[str, float]:
    """Run ``fn`` ``repeat`` times; the median of each figure it returns."""
    results = [await fn() for _ in range(repeat)]
    return {key: statistics.median(r[key] for r in results) for key in results[0]}


# ---------------------------------------------------------------- goals and rows


@dataclass(frozen=True)
class Goal:
    """``ratio``: against the row's reference (a rate ratio, or for a time row how many raw
    insert-commits it costs); ``abs``: the value itself, in the row's unit; ``base``: the
    value over another figure of the same run, ``base`` (named ``base_name``)."""

    on: Literal["ratio", "abs", "base"]
    op: Literal[">=", "<=", "<"]
    target: float
    base: float | None = None
    base_name: str = ""

    def met(self, value: float, ratio: float | None) -> bool:
        if self.on == "base":
            x: float | None = None if not self.base else value / self.base
        else:
            x = ratio if self.on == "ratio" else value
        if x is None:
            return False
        if self.op == ">=":
            return x >= self.target
        if self.op == "<=":
            return x <= self.target
        return x < self.target

    def text(self, unit: str, ref: str | None) -> str:
        op = {">=": "≥", "<=": "≤", "<": "<"}[self.op]
        if self.on == "ratio":
            return f"{op} {self.target:g}× {ref}"
        if self.on == "base":
            return f"{op} {self.target:g}× {self.base_name}"
        return f"{op} {self.target:,.0f} {unit}"


@dataclass
class Row:
    """One line of the table. A ``time`` row's ratio is its value in units of one raw
    insert-commit on the reference (``t1`` = 1/R1); a rate row's is value / reference."""

    name: str
    value: float
    unit: str
    ref: Literal["R1", "R4"] | None = None
    time: bool = False
    goals: list[Goal] = field(default_factory=list)
    note: str = ""

    def ratio(self, refs: dict[str, float]) -> float | None:
        if self.ref is None:
            return None
        rate = refs[self.ref]
        if self.time:  # value in ms; one raw insert-commit takes 1000 / rate ms
            return self.value / (1000.0 / rate)
        return self.value / rate


def ref_label(row: Row) -> str | None:
    if row.ref is None:
        return None
    return ("t" + row.ref[1]) if row.time else row.ref


def fmt(value: float, unit: str) -> str:
    if unit == "ms":
        return f"{value:,.2f} ms"
    return f"{value:,.0f} {unit}" if value >= 100 else f"{value:,.1f} {unit}"


def render(kind: str, info: dict[str, str], rows: list[Row], refs: dict[str, float]) -> str:
    lines = [
        f"\n### {kind}: {info['server']}\n",
        f"{info['settings']}\n",
        "| measurement | value | vs raw | goal | result |",
        "|---|---:|---:|---|---|",
    ]
    for row in rows:
        ratio = row.ratio(refs)
        label = ref_label(row)
        ratio_s = f"{ratio:.2f}× {label}" if ratio is not None else ""
        goal_s = "; ".join(g.text(row.unit, label) for g in row.goals)
        verdict = " ".join("PASS" if g.met(row.value, ratio) else "MISS" for g in row.goals)
        note = f" — {row.note}" if row.note else ""
        lines.append(
            f"| {row.name}{note} | {fmt(row.value, row.unit)} | {ratio_s} | {goal_s} | {verdict} |"
        )
    lines.append(
        "\nR1, R4: raw driver INSERT+COMMIT rate with 1 and 4 connections (this run, this database);"
        " t1: the time of one such insert-commit on 1 connection (a time row's ratio is its cost"
        " in t1 units)."
    )
    return "\n".join(lines)


def versions(repeat: int, counts: Counts) -> list[str]:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
    except OSError:
        commit = ""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        f"pgqrs-sqla {getattr(pgqrs, '__version__', '?')}{f' ({commit})' if commit else ''}, "
        f"Python {platform.python_version()}, SQLAlchemy {sqlalchemy.__version__}, "
        f"asyncpg {asyncpg.__version__}, aiosqlite {aiosqlite.__version__}, "
        f"SQLite library {sqlite3.sqlite_version}",
        f"{os.cpu_count()} CPUs ({platform.machine()}, {platform.system()} {platform.release()}), "
        f"load average at start {load}",
        f"medians of {repeat} repetition(s); counts: "
        + ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(counts).items()),
    ]
