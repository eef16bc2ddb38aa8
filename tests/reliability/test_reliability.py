"""The reliability suite: real crashes, restarts, contention, long steps and bad input.

Each test is bounded in time and prints its figures (run with ``-s`` to see them); the
numbers of the last full run are in docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import async_sessionmaker

import pgqrs_sqla as pgqrs

pytestmark = pytest.mark.reliability
PROC = Path(__file__).with_name("worker_proc.py")


async def spawn(mode: str, url: str, name: str, journal: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, str(PROC), mode, url, name, str(journal), stdout=asyncio.subprocess.PIPE
    )


def lines(journal: Path) -> list[dict[str, Any]]:
    return (
        [json.loads(line) for line in journal.read_text().splitlines()] if journal.exists() else []
    )


async def statuses(store: pgqrs.Store) -> Counter[str]:
    r = store.tables.runs
    async with store.read() as conn:
        return Counter(
            dict((await conn.execute(select(r.c.status, func.count()).group_by(r.c.status))).all())
        )


async def wait_all(store: pgqrs.Store, total: int, timeout: float) -> Counter[str]:
    deadline = time.monotonic() + timeout
    counts: Counter[str] = Counter()
    while True:
        try:
            counts = await statuses(store)
        except pgqrs.DatabaseUnavailable:
            pass  # our own pooled connection was terminated too: the next one is fresh
        if counts.get("SUCCESS", 0) == total or time.monotonic() > deadline:
            return counts
        await asyncio.sleep(0.2)


async def scalar(store: pgqrs.Store, sql: str) -> Any:
    async with store.read() as conn:
        return (await conn.execute(text(sql))).scalar()


@pytest.mark.timeout(300)
async def test_kill_storm(store: pgqrs.Store, db_url: str, backend: str, tmp_path: Path) -> None:
    total = 300 if backend == "postgresql" else 150  # SQLite: one writer at a time
    storm_seconds = 12.0
    await store.create_workflow("storm", max_deliveries=50)  # many kills may hit one run
    async with store.begin() as conn:
        await conn.execute(
            text("CREATE TABLE effects (run_id BIGINT NOT NULL, step VARCHAR(8) NOT NULL)")
        )
    for i in range(total):
        await pgqrs.workflow("storm").trigger({"i": i}).execute(store)
    journal = tmp_path / "journal"
    generation = {slot: 0 for slot in range(4)}
    procs = {slot: await spawn("storm", db_url, f"w{slot}-0", journal) for slot in range(4)}
    kills = 0
    started = time.monotonic()
    try:
        while time.monotonic() - started < storm_seconds:
            await asyncio.sleep(random.uniform(0.5, 1.0))
            slot = random.randrange(4)
            procs[slot].send_signal(signal.SIGKILL)
            await procs[slot].wait()
            kills += 1
            generation[slot] += 1
            procs[slot] = await spawn("storm", db_url, f"w{slot}-{generation[slot]}", journal)
        counts = await wait_all(store, total, timeout=150)
    finally:
        for proc in procs.values():
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            await asyncio.wait_for(proc.wait(), 60)
    elapsed = time.monotonic() - started

    steps = await scalar(
        store, "SELECT count(*) FROM pgqrs_workflow_steps WHERE status = 'SUCCESS'"
    )
    per_run = await scalar(
        store,
        "SELECT count(*) FROM (SELECT run_id FROM pgqrs_workflow_steps GROUP BY run_id HAVING count(*) <> 5) x",
    )
    effects = await scalar(store, "SELECT count(*) FROM effects")
    duplicate_effects = await scalar(
        store,
        "SELECT count(*) FROM (SELECT run_id FROM effects GROUP BY run_id HAVING count(*) > 1) x",
    )
    bodies = Counter((e["run"], e["step"]) for e in lines(journal))
    reexecuted = sum(n - 1 for n in bodies.values())
    [stats] = await store.queue_stats("storm")
    print(
        f"\nkill storm [{backend}]: {total} runs x 5 steps, 4 processes, {kills} kills, "
        f"{kills} restarts in {storm_seconds:.0f} s; done in {elapsed:.1f} s; runs {dict(counts)}; "
        f"step records {steps}; duplicate effects {duplicate_effects}; "
        f"non-transactional bodies re-run after a kill {reexecuted}"
    )
    assert counts == Counter({"SUCCESS": total})  # none lost, none failed
    assert steps == 5 * total
    assert per_run == 0  # every step recorded exactly once per run
    assert effects == total  # the transactional step's side effect: exactly once per run
    assert duplicate_effects == 0
    assert {run for run, _ in bodies} == set(range(1, total + 1))
    assert (stats.ready, stats.leased, stats.delayed) == (0, 0, 0)
    assert kills >= 8


@pytest.mark.timeout(180)
async def test_database_connections_terminated_while_workers_run(
    store: pgqrs.Store, db_url: str, backend: str, pg_server: Any
) -> None:
    if backend != "postgresql":
        pytest.skip("terminating server connections is a PostgreSQL scenario")
    database = make_url(db_url).database
    total = 60

    async def handler(ctx: pgqrs.RunContext, params: Any) -> Any:
        for i in range(3):
            await ctx.step(f"s{i}", lambda i=i: asyncio.sleep(0.02, result=i))
        return params["i"]

    await store.create_workflow("outage", max_deliveries=50)
    for i in range(total):
        await pgqrs.workflow("outage").trigger({"i": i}).execute(store)
    workers = [
        await pgqrs.consumer(f"o{n}", None, "outage")
        .handler(handler)
        .create(
            store, concurrency=2, visibility_timeout=1, heartbeat_interval=0.3, poll_interval=0.1
        )
        for n in range(2)
    ]
    terminate = (
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        f"WHERE datname = '{database}' AND pid <> pg_backend_pid()"
    )
    for worker in workers:
        worker.start()
    try:
        for _ in range(3):
            await asyncio.sleep(0.4)
            await asyncio.to_thread(pg_server.admin, terminate)
        counts = await wait_all(store, total, timeout=90)
    finally:
        for worker in workers:
            await worker.stop(grace=5)
    print(f"\ndatabase restarts [postgresql]: 3 x all connections terminated; runs {dict(counts)}")
    assert counts == Counter({"SUCCESS": total})

    # A trigger during an outage: a clear error, nothing written.
    before = await pgqrs.connect(db_url)
    runs_before = await scalar(before, "SELECT count(*) FROM pgqrs_workflow_runs")
    await asyncio.to_thread(
        pg_server.admin, f"ALTER DATABASE {database} WITH ALLOW_CONNECTIONS false", terminate
    )
    try:
        with pytest.raises(pgqrs.DatabaseUnavailable):
            await pgqrs.workflow("outage").trigger({"i": -1}).execute(before)
    finally:
        await asyncio.to_thread(
            pg_server.admin, f"ALTER DATABASE {database} WITH ALLOW_CONNECTIONS true"
        )
    assert await scalar(before, "SELECT count(*) FROM pgqrs_workflow_runs") == runs_before
    await before.close()


@pytest.mark.timeout(180)
async def test_contention_two_processes_eight_tasks(
    store: pgqrs.Store, db_url: str, backend: str, tmp_path: Path
) -> None:
    total = 5000 if backend == "postgresql" else 2000
    await store.create_queue("contend", max_deliveries=50)
    payloads = [{"n": i, "slow": i % 100 == 0} for i in range(total)]
    for start in range(0, total, 500):
        await store.queue("contend").enqueue_batch(payloads[start : start + 500])
    journal = tmp_path / "journal"
    procs = [await spawn("plain", db_url, f"p{n}", journal) for n in range(2)]
    started = time.monotonic()
    try:
        deadline = started + 150
        while True:
            [stats] = await store.queue_stats("contend")
            if stats.archived == total or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        outputs = [
            json.loads((await asyncio.wait_for(proc.communicate(), 60))[0]) for proc in procs
        ]
    handled = lines(journal)
    per_message = Counter(h["id"] for h in handled)
    tokens = Counter((h["id"], h["token"]) for h in handled)
    lease_lost = sum(o["lease_lost"] for o in outputs)
    print(
        f"\ncontention [{backend}]: {total} messages, 2 processes x 4 tasks, drained in "
        f"{time.monotonic() - started:.1f} s; handlings {len(handled)}; re-handled after a lost lease "
        f"{len(handled) - total}; lease-lost acks {lease_lost}"
    )
    assert (stats.archived, stats.ready, stats.leased, stats.dead) == (total, 0, 0, 0)
    assert len(per_message) == total
    assert max(tokens.values()) == 1  # never two handlings under one lease
    assert lease_lost > 0  # the lease-lost path was exercised
    assert len(handled) - total == lease_lost  # every re-handling follows a lost lease


async def started_in(journal: Path, run_id: int) -> None:
    deadline = time.monotonic() + 30
    while not any(e["run"] == run_id and e["event"] == "start" for e in lines(journal)):
        assert time.monotonic() < deadline, "the worker process did not start the step"
        await asyncio.sleep(0.05)


@pytest.mark.timeout(120)
async def test_long_step_is_not_stolen_and_is_taken_over_after_a_kill(
    store: pgqrs.Store, db_url: str, tmp_path: Path
) -> None:
    await store.create_workflow("long")
    journal = tmp_path / "journal"

    async def thief_handler(ctx: pgqrs.RunContext, params: Any) -> Any:
        return await ctx.step("long", lambda: "stolen")

    # 1. A live worker extends its lease: a 3 s step with a 1 s lease is not stolen.
    first = await pgqrs.workflow("long").trigger().execute(store)
    owner = await spawn("long", db_url, "owner", journal)
    await started_in(journal, first)
    thief = (
        await pgqrs.consumer("thief", None, "long")
        .handler(thief_handler)
        .create(store, poll_interval=0.05)
    )
    try:
        async with thief:
            assert await store.wait_for_run(first, timeout=30) == "done"
    finally:
        owner.send_signal(signal.SIGTERM)
        await asyncio.wait_for(owner.wait(), 30)
    assert [e["event"] for e in lines(journal)] == ["start", "end"]

    # 2. A killed worker's run is taken over promptly (within a few leases).
    second = await pgqrs.workflow("long").trigger().execute(store)
    victim = await spawn("long", db_url, "victim", journal)
    await started_in(journal, second)
    victim.send_signal(signal.SIGKILL)
    await victim.wait()
    killed_at = time.monotonic()
    rescuer = (
        await pgqrs.consumer("rescuer", None, "long")
        .handler(thief_handler)
        .create(store, poll_interval=0.05)
    )
    async with rescuer:
        assert await store.wait_for_run(second, timeout=30) == "stolen"
    takeover = time.monotonic() - killed_at
    print(
        f"\nlong steps: a 3 s step under a 1 s lease kept by its live worker; taken over {takeover:.1f} s after SIGKILL"
    )
    assert takeover < 10


async def test_bad_input_sweep(store: pgqrs.Store) -> None:
    await store.create_workflow("wf")
    await store.create_queue("q")
    run_id = await pgqrs.workflow("wf").trigger({"ok": 1}).execute(store)
    t = store.tables

    async def counts() -> list[int]:
        async with store.read() as conn:
            return [
                (await conn.execute(select(func.count()).select_from(table))).scalar_one()
                for table in (t.queues, t.messages, t.workers, t.workflows, t.runs, t.steps)
            ]

    before = await counts()
    sessions = async_sessionmaker(store.engine)
    async with sessions() as session, session.begin():
        attempts: list[tuple[type[pgqrs.PgqrsError], Any]] = [
            (
                pgqrs.PayloadError,
                lambda: pgqrs.workflow("wf").trigger({"x": {1, 2}}).execute(session),
            ),
            (
                pgqrs.PayloadError,
                lambda: (
                    pgqrs.workflow("wf", max_payload_bytes=10).trigger("x" * 50).execute(session)
                ),
            ),
            (pgqrs.PayloadError, lambda: store.queue("q").enqueue(object(), target=session)),
            (pgqrs.InvalidName, lambda: pgqrs.workflow("bad name").trigger({}).execute(session)),
            (pgqrs.InvalidName, lambda: store.queue("").enqueue(1, target=session)),
            (pgqrs.WorkflowNotFound, lambda: pgqrs.workflow("nope").trigger({}).execute(session)),
            (pgqrs.QueueNotFound, lambda: store.queue("nope").enqueue(1, target=session)),
            (
                pgqrs.RunNotFound,
                lambda: store.update_step(10**9, "s", pgqrs.StepStatus.SUCCESS, 1, target=session),
            ),
            (pgqrs.RunNotFound, lambda: store.resume_run(10**9, target=session)),
            (
                pgqrs.ValidationError,
                lambda: store.update_step(run_id, "s", "DONE", 1, target=session),
            ),
            (
                pgqrs.ValidationError,
                lambda: store.update_step(run_id, "s", pgqrs.StepStatus.RUNNING, 1, target=session),
            ),
            (
                pgqrs.PayloadError,
                lambda: store.update_step(
                    run_id, "s", pgqrs.StepStatus.SUCCESS, {1}, target=session
                ),
            ),
            (pgqrs.ValidationError, lambda: store.get_run("1", target=session)),  # type: ignore[arg-type]
        ]
        for error, call in attempts:
            with pytest.raises(error):
                await call()
        await session.execute(text("SELECT 1"))  # the caller's transaction is still usable
    assert await counts() == before
    with pytest.raises(pgqrs.HandlerError):
        pgqrs.consumer("w", None, "wf").handler(lambda ctx, params: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(pgqrs.InvalidName):
        pgqrs.consumer("bad name", None, "wf")
    with pytest.raises(pgqrs.NotFound):
        await store.dead_letters("nope")

    async def reuse(ctx: pgqrs.RunContext, params: Any) -> Any:
        await ctx.step("a", lambda: 1)
        await ctx.step("a", lambda: 2)

    worker = await pgqrs.consumer("w", None, "wf").handler(reuse).create(store, poll_interval=0.05)
    async with worker:
        with pytest.raises(pgqrs.RunFailed) as failed:
            await store.wait_for_run(run_id, timeout=10)
    assert failed.value.error["type"] == "pgqrs_sqla.errors.StepNameReused"
    assert [s.name for s in (await store.get_run(run_id)).steps] == ["a"]
