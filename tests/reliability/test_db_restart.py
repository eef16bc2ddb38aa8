"""Database restart (PostgreSQL): every connection of the workers is terminated by the server
(``pg_terminate_backend``) several times while they run; they log, reconnect and finish every
run. A trigger attempted while the database refuses connections raises ``DatabaseUnavailable``
and writes nothing. The machine's PostgreSQL server itself is never stopped."""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

import pgqrs_sqla as pgqrs
from tests._wait import eventually
from tests.conftest import _free_port as free_port

from ._support import report, run_statuses, table_counts

pytestmark = pytest.mark.reliability

TOTAL = 200
ROUNDS = 4


@pytest.fixture
async def admin(pg_server: Any) -> AsyncIterator[AsyncEngine]:
    """An autocommit connection pool to the server's maintenance database."""
    url = make_url(pg_server.async_url("postgres")).set(drivername="postgresql+asyncpg")
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        yield engine
    finally:
        await engine.dispose()


async def terminate_all(admin: AsyncEngine, database: str) -> int:
    """Terminate every session on ``database``; returns how many there were."""
    async with admin.connect() as conn:
        return len(
            (
                await conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :db AND pid <> pg_backend_pid()"
                    ),
                    {"db": database},
                )
            ).all()
        )


async def allow_connections(admin: AsyncEngine, database: str, allow: bool) -> None:
    async with admin.connect() as conn:
        await conn.execute(
            text(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS {str(allow).lower()}')
        )


async def handler(ctx: pgqrs.RunContext, params: Any) -> Any:
    async def work(i: int) -> int:
        await asyncio.sleep(random.uniform(0.03, 0.06))
        return i

    total = 0
    for i in range(3):
        total += await ctx.step(f"s{i}", functools.partial(work, i))
    return total


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", ["postgresql"])
async def test_workers_reconnect_and_triggers_fail_cleanly_during_an_outage(
    store: pgqrs.Store, db_url: str, admin: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pgqrs_sqla")
    database = make_url(db_url).database
    assert database is not None
    await store.create_workflow("restart", max_deliveries=1000)
    async with AsyncSession(store.engine) as session, session.begin():
        for i in range(TOTAL):
            await pgqrs.workflow("restart").trigger({"i": i}).execute(session)
    workers = [
        await pgqrs.consumer(f"r{n}", None, "restart")
        .handler(handler)
        .create(store, concurrency=4, visibility_timeout=2, poll_interval=0.1)
        for n in range(2)
    ]

    async def done(expected: int) -> bool:
        try:
            return (await run_statuses(store, "restart")).get("SUCCESS", 0) == expected
        except pgqrs.DatabaseUnavailable:  # this observer's connection was terminated too
            return False

    terminated: list[int] = []
    started = time.monotonic()
    for worker in workers:
        worker.start()
    try:
        # 1. All connections terminated, several times, while the workers drain the runs.
        for _ in range(ROUNDS):
            await asyncio.sleep(0.5)
            terminated.append(await terminate_all(admin, database))
        await eventually(
            lambda: done(TOTAL), timeout=60, what="every run SUCCESS after terminations"
        )
        drained = time.monotonic() - started

        # 2. An outage: the database refuses new connections. Triggers fail cleanly.
        before = await table_counts(store)
        errors: list[pgqrs.PgqrsError] = []
        await allow_connections(admin, database, False)
        try:
            outage_started = time.monotonic()
            terminated.append(await terminate_all(admin, database))
            with pytest.raises(pgqrs.DatabaseUnavailable) as via_store:
                await pgqrs.workflow("restart").trigger({"i": -1}).execute(store)
            errors.append(via_store.value)
            async with AsyncSession(store.engine) as session:
                with pytest.raises(pgqrs.DatabaseUnavailable) as via_session:
                    await pgqrs.workflow("restart").trigger({"i": -2}).execute(session)
            errors.append(via_session.value)
            nowhere = pgqrs.Store(
                create_async_engine(
                    make_url(db_url).set(drivername="postgresql+asyncpg", port=free_port())
                )
            )
            try:
                with pytest.raises(pgqrs.DatabaseUnavailable) as via_dead_port:
                    await pgqrs.workflow("restart").trigger({"i": -3}).execute(nowhere)
                errors.append(via_dead_port.value)
            finally:
                await nowhere.engine.dispose()
            await asyncio.sleep(1.0)  # the workers keep failing to claim for a while
        finally:
            await allow_connections(admin, database, True)
        outage = time.monotonic() - outage_started
        assert await table_counts(store) == before  # nothing written

        # 3. After the outage the same workers pick up new work.
        recovered_from = time.monotonic()
        for i in range(20):
            await pgqrs.workflow("restart").trigger({"i": TOTAL + i}).execute(store)
        await eventually(
            lambda: done(TOTAL + 20), timeout=30, what="runs triggered after the outage"
        )
        recovery = time.monotonic() - recovered_from
    finally:
        for worker in workers:
            await worker.stop(grace=5)

    statuses = await run_statuses(store, "restart")
    steps = await table_counts(store)
    warnings = Counter(
        r.getMessage().split(":")[0] for r in caplog.records if r.levelno >= logging.WARNING
    )
    report(
        "database restart",
        backend="postgresql",
        runs=TOTAL + 20,
        termination_rounds=ROUNDS,
        connections_terminated=sum(terminated),
        worker_errors_logged=sum(w.stats.errors for w in workers),
        drained_s=drained,
        outage_s=outage,
        drained_after_outage_s=recovery,
        lost=TOTAL + 20 - statuses.get("SUCCESS", 0),
    )
    assert statuses == {"SUCCESS": TOTAL + 20}
    assert steps["pgqrs_workflow_steps"] == 3 * (TOTAL + 20)
    assert all(terminated), "every round must have terminated live connections"
    assert sum(w.stats.errors for w in workers) > 0
    assert warnings, "the workers log what happened"
    for error in errors:
        assert "cannot reach the database" in str(error)
        assert error.__cause__ is not None  # the driver's error is chained


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", ["postgresql"])
async def test_a_worker_starting_on_terminated_connections_leaks_none(
    store: pgqrs.Store, db_url: str, admin: AsyncEngine
) -> None:
    """The worker's first act is to LISTEN on a pooled connection; if the server had
    terminated it, that connection goes back to the pool (a leak would surface here as the
    garbage collector's SAWarning, an error under ``filterwarnings = error``)."""
    database = make_url(db_url).database
    assert database is not None
    await store.create_workflow("restart")
    worker = await (
        pgqrs.consumer("r", None, "restart")
        .handler(handler)
        .create(store, own_pool=False, poll_interval=0.05)
    )
    assert await terminate_all(admin, database) > 0  # the pool now holds dead connections
    async with worker, await pgqrs.connect(db_url) as app:
        run_id = await pgqrs.workflow("restart").trigger({"i": 1}).execute(app)
        assert await app.wait_for_run(run_id, timeout=30) == 3
    gc.collect()
