"""Database faults under a running worker (issue #10): statement and lock timeouts, a storm of
cancellations, a read-only database, a busy SQLite file. After each episode the worker drains
new work and ``health()`` is healthy again; each episode is logged once. A fault that cannot
heal (the tables dropped) ends the worker loudly, with ``health().error`` saying why."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import event, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

import pgqrs_sqla as pgqrs
from tests.conftest import PgServer
from tests.reliability._support import report

pytestmark = pytest.mark.reliability

Wait = Callable[..., Awaitable[Any]]


async def handler(ctx: pgqrs.RunContext, params: Any) -> Any:
    return params


async def start_worker(store: pgqrs.Store, **options: Any) -> pgqrs.Worker:
    await store.create_workflow("wf")
    worker = (
        await pgqrs.consumer("faulty", None, "wf")
        .handler(handler)
        .create(store, poll_interval=0.05, heartbeat_interval=0.2, **options)
    )
    worker.start()
    return worker


async def drains(app: pgqrs.Store, worker: pgqrs.Worker, wait_until: Wait, tag: str) -> float:
    """A run triggered now succeeds, and the worker reports healthy again; returns the
    seconds that took (after a fault: how long the worker took to be back at work)."""
    started = time.monotonic()
    run_id = await pgqrs.workflow("wf").trigger(tag).execute(app)
    assert await app.wait_for_run(run_id, timeout=60) == tag

    async def healthy() -> bool:
        return worker.health().healthy

    await wait_until(healthy, timeout=60)
    return time.monotonic() - started


def episodes(caplog: pytest.LogCaptureFixture, duty: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.levelno == logging.WARNING and f"{duty} failing" in r.getMessage()
    ]


async def fault_is(worker: pgqrs.Worker, name: str, wait_until: Wait) -> None:
    async def seen() -> bool:
        return name in (worker.health().fault or "")

    await wait_until(seen, timeout=60)
    assert worker.health().running and not worker.health().healthy


@pytest.fixture
async def admin(db_url: str, backend: str) -> AsyncIterator[AsyncEngine]:
    """An autocommit engine on the test's PostgreSQL database (the other sessions)."""
    if backend != "postgresql":
        pytest.skip("PostgreSQL fault")
    engine = create_async_engine(
        make_url(db_url).set(drivername="postgresql+asyncpg"), isolation_level="AUTOCOMMIT"
    )
    try:
        yield engine
    finally:
        await engine.dispose()


async def worker_backends(admin: AsyncEngine, sql: str) -> int:
    """Run ``sql`` (``pg_cancel_backend`` / ``pg_terminate_backend``) on every other session
    of this database; returns how many it reached."""
    async with admin.connect() as conn:
        return len(
            (
                await conn.execute(
                    text(
                        f"SELECT {sql}(pid) FROM pg_stat_activity WHERE datname = "
                        "current_database() AND pid <> pg_backend_pid()"
                    )
                )
            ).all()
        )


@pytest.mark.parametrize(
    ("setting", "value", "error"),
    [("statement_timeout", "1500", "StatementTimeout"), ("lock_timeout", "200", "LockTimeout")],
)
async def test_a_locked_table_past_the_timeout_is_ridden_out(
    db_url: str,
    store: pgqrs.Store,
    admin: AsyncEngine,
    wait_until: Wait,
    caplog: pytest.LogCaptureFixture,
    setting: str,
    value: str,
    error: str,
) -> None:
    """The issue's reproduction: the worker's engine sets ``statement_timeout`` (or
    ``lock_timeout``) while another session holds ACCESS EXCLUSIVE on the messages table."""
    caplog.set_level(logging.INFO, logger="pgqrs_sqla")
    slow = await pgqrs.connect(db_url, connect_args={"server_settings": {setting: value}})
    try:
        worker = await start_worker(slow)
        await drains(store, worker, wait_until, "before")
        async with admin.connect() as holder:
            await holder.execute(text("BEGIN"))
            await holder.execute(text("LOCK TABLE pgqrs_messages IN ACCESS EXCLUSIVE MODE"))
            await fault_is(worker, error, wait_until)
            await holder.execute(text("ROLLBACK"))
        back = await drains(store, worker, wait_until, "after")
        report(
            f"worker fault {setting}",
            backend="postgresql",
            claim_errors_ridden_out=worker.stats.errors,
            warnings=len(episodes(caplog, "claims")),
            back_at_work_s=back,
        )
        assert len(episodes(caplog, "claims")) == 1
        assert error in episodes(caplog, "claims")[0].getMessage()
        assert any("claims works again" in r.getMessage() for r in caplog.records)
        await worker.stop(grace=5)
        assert worker.health().status == "stopped"
    finally:
        await slow.close()


async def test_a_storm_of_cancellations_is_ridden_out(
    store: pgqrs.Store, admin: AsyncEngine, wait_until: Wait
) -> None:
    worker = await start_worker(store)
    await drains(store, worker, wait_until, "before")
    errors = worker.stats.errors

    async def cancelled_one() -> bool:
        # Only statements under way are cancelled: keep cancelling until one was hit.
        await worker_backends(admin, "pg_cancel_backend")
        return worker.stats.errors > errors

    await wait_until(cancelled_one, timeout=120, interval=0)
    assert worker.health().running
    back = await drains(store, worker, wait_until, "after")
    report(
        "worker fault cancel storm",
        backend="postgresql",
        statements_cancelled=worker.stats.errors - errors,
        back_at_work_s=back,
    )
    await worker.stop(grace=5)


async def test_a_read_only_database_is_ridden_out(
    db_url: str, pg_server: PgServer, admin: AsyncEngine, wait_until: Wait
) -> None:
    """As after a failover to a standby: the worker's backends reconnect read-only."""
    database = make_url(db_url).database
    worker_store = await pgqrs.connect(db_url)
    try:
        worker = await start_worker(worker_store)
        await drains(worker_store, worker, wait_until, "before")
        pg_server.admin(f"ALTER DATABASE {database} SET default_transaction_read_only = on")
        try:
            await worker_backends(admin, "pg_terminate_backend")
            await fault_is(worker, "ReadOnlyDatabase", wait_until)
        finally:
            pg_server.admin(f"ALTER DATABASE {database} RESET default_transaction_read_only")
        await worker_backends(admin, "pg_terminate_backend")
        async with await pgqrs.connect(db_url) as app:
            back = await drains(app, worker, wait_until, "after")
        report(
            "worker fault read-only database",
            backend="postgresql",
            errors_ridden_out=worker.stats.errors,
            back_at_work_s=back,
        )
        await worker.stop(grace=5)
    finally:
        await worker_store.close()


async def test_a_busy_sqlite_file_is_ridden_out(
    busy_sqlite: tuple[pgqrs.Store, sqlite3.Connection],
    wait_until: Wait,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Another connection holds ``BEGIN EXCLUSIVE`` longer than the worker's busy timeout."""
    caplog.set_level(logging.INFO, logger="pgqrs_sqla")
    app, holder = busy_sqlite
    # On this engine, whose connections wait 100 ms: a pool of the worker's own would
    # have the store's 30 s busy timeout, and the test would wait that out.
    worker = await start_worker(app, own_pool=False)
    assert worker.store.engine is app.engine
    await drains(app, worker, wait_until, "before")
    # The holder takes SQLite's lock while no write of this process is under way: the
    # worker's claims queue behind the store's in-process writer lock meanwhile. Raced
    # against its claims every 50 ms, the holder starved on CI's loaded machine (5 s, then
    # even 60 s of busy timeout).
    async with app._writer():
        holder.execute("BEGIN EXCLUSIVE")
    try:
        await fault_is(worker, "DatabaseBusy", wait_until)
        # The fault may be the heartbeat's: hold on until the claims have met it too.
        await wait_until(lambda: episodes(caplog, "claims"), timeout=60)
    finally:
        holder.execute("ROLLBACK")
    back = await drains(app, worker, wait_until, "after")
    report(
        "worker fault busy SQLite file",
        backend="sqlite",
        claim_errors_ridden_out=worker.stats.errors,
        warnings=len(episodes(caplog, "claims")),
        back_at_work_s=back,
    )
    assert len(episodes(caplog, "claims")) == 1
    await worker.stop(grace=5)


@pytest.fixture
async def busy_sqlite(
    db_url: str, backend: str
) -> AsyncIterator[tuple[pgqrs.Store, sqlite3.Connection]]:
    """SQLite only: a :func:`short_busy_sqlite` store, and a plain connection to the same
    file to take its write lock with (``BEGIN EXCLUSIVE``)."""
    if backend != "sqlite":
        pytest.skip("SQLite fault")
    store = short_busy_sqlite(db_url)
    # The holder waits as long as it must for the lock: the worker polls every 50 ms, and on a
    # loaded machine its claims held the lock through sqlite3's default 5 s (a CI failure).
    holder = sqlite3.connect(make_url(db_url).database or "", isolation_level=None, timeout=60)
    try:
        yield store, holder
    finally:
        holder.close()
        await store.engine.dispose()  # ours: Store(engine) never disposes an engine it was given


def short_busy_sqlite(db_url: str) -> pgqrs.Store:
    """A store whose connections give up on SQLite's write lock after 100 ms."""
    engine = create_async_engine(make_url(db_url).set(drivername="sqlite+aiosqlite"))
    store = pgqrs.Store(engine)  # first: its connect listener sets its own busy timeout

    @event.listens_for(engine.sync_engine, "connect")
    def short_busy_timeout(dbapi_connection: Any, record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout = 100")  # after the store's own PRAGMAs
        cursor.close()

    return store


async def leaseholder(store: pgqrs.Store) -> tuple[pgqrs.Worker, pgqrs.Message]:
    """A worker (never started: driven by hand) holding the lease of a dequeued message."""

    async def noop(message: pgqrs.Message) -> None:
        return None

    await store.create_queue("q")
    worker = await pgqrs.consumer("holder", None, "q").handler(noop).create(store, own_pool=False)
    await store.queue("q").enqueue({"n": 1})
    [msg] = await worker.dequeue(1)
    return worker, msg


async def lease_and_row(store: pgqrs.Store, worker: pgqrs.Worker, msg: pgqrs.Message) -> Any:
    m, w = store.tables.messages, store.tables.workers
    async with store._read() as conn:
        owner = (
            await conn.execute(select(m.c.consumer_worker_id).where(m.c.id == msg.id))
        ).scalar_one()
        status = (await conn.execute(select(w.c.status).where(w.c.id == worker.id))).scalar_one()
    return owner, status


def deregister_warnings(caplog: pytest.LogCaptureFixture, what: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and what in r.getMessage()
    ]


async def test_stopping_while_sqlite_is_busy_retries_until_the_lock_is_released(
    busy_sqlite: tuple[pgqrs.Store, sqlite3.Connection],
    wait_until: Wait,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The file is locked (``BEGIN EXCLUSIVE``) longer than the busy timeout but within the
    deregistering budget: stop() retries, and once the lock goes the lease is given back and
    the row says stopped."""
    caplog.set_level(logging.INFO, logger="pgqrs_sqla")
    store, holder = busy_sqlite
    worker, msg = await leaseholder(store)
    holder.execute("BEGIN EXCLUSIVE")
    stopping = asyncio.create_task(worker.stop(grace=5))
    try:

        async def retried() -> bool:
            return bool(deregister_warnings(caplog, "deregistering failed (DatabaseBusy"))

        await wait_until(retried, timeout=30)
        assert not stopping.done()
    finally:
        holder.execute("ROLLBACK")
    await asyncio.wait_for(stopping, timeout=60)  # raises nothing
    assert await lease_and_row(store, worker, msg) == (None, "stopped")
    assert deregister_warnings(caplog, "could not deregister") == []
    # Given back, not failed: another worker claims it at once.
    other = await pgqrs.consumer("next", None, "q").handler(handler).create(store, own_pool=False)
    [again] = await other.dequeue(1)
    assert (again.id, again.failed_ct) == (msg.id, 0)
    await other.stop(grace=5)


async def test_stopping_while_sqlite_stays_busy_past_the_budget_logs_and_returns(
    busy_sqlite: tuple[pgqrs.Store, sqlite3.Connection],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The lock outlasts the budget: stop() still returns without raising, says so at
    WARNING, and leaves the lease to expire on its own."""
    from pgqrs_sqla import _registration

    monkeypatch.setattr(_registration, "_DEREGISTER_BUDGET", 1.0)
    caplog.set_level(logging.INFO, logger="pgqrs_sqla")
    store, holder = busy_sqlite
    worker, msg = await leaseholder(store)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        await asyncio.wait_for(worker.stop(grace=5), timeout=60)  # raises nothing
    finally:
        holder.execute("ROLLBACK")
    [gave_up] = deregister_warnings(caplog, "could not deregister cleanly")
    assert "DatabaseBusy" in gave_up and "expire" in gave_up
    assert deregister_warnings(caplog, "deregistering failed (DatabaseBusy")  # it retried
    assert await lease_and_row(store, worker, msg) == (worker.id, "ready")


async def test_dropped_tables_end_the_worker_loudly(
    store: pgqrs.Store, wait_until: Wait, caplog: pytest.LogCaptureFixture
) -> None:
    worker = await start_worker(store)
    await drains(store, worker, wait_until, "before")
    async with store.engine.begin() as conn:
        await conn.run_sync(store.models.metadata.drop_all)

    async def stopped() -> bool:
        return not worker.health().running

    await wait_until(stopped, timeout=60)
    health = worker.health()
    assert health.error is not None and "SchemaMissing" in health.error
    assert not health.healthy
    assert any(
        r.levelno == logging.ERROR and "SchemaMissing" in r.getMessage() for r in caplog.records
    )
    with pytest.raises(pgqrs.SchemaMissing):
        await worker.stop(grace=5)


async def test_the_thread_runner_surfaces_what_ended_the_worker(
    db_url: str, wait_until: Wait
) -> None:
    from pgqrs_sqla.contrib.threaded import ThreadedWorker

    app = await pgqrs.connect(db_url)
    try:
        await app.create_workflow("wf")

        @contextlib.asynccontextmanager
        async def make() -> AsyncIterator[pgqrs.Worker]:
            async with await pgqrs.connect(db_url) as store:
                yield (
                    await pgqrs.consumer("t", None, "wf")
                    .handler(handler)
                    .create(store, poll_interval=0.05)
                )

        runner = ThreadedWorker(make)
        await asyncio.to_thread(runner.start, 60)
        async with app.engine.begin() as conn:
            await conn.run_sync(app.models.metadata.drop_all)

        async def ended() -> bool:
            return runner.health().error is not None

        await wait_until(ended, timeout=60)
        assert "SchemaMissing" in (runner.health().error or "")
        with pytest.raises(pgqrs.SchemaMissing):
            await asyncio.to_thread(runner.stop, 5)
    finally:
        await app.close()
