"""Wake-ups: LISTEN on either PostgreSQL driver, which path a worker uses (said at start),
and a listener that outlives the loss of its connection."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

import pgqrs_sqla as pgqrs
from tests._wakeups import DRIVERS, enqueue_elsewhere, with_driver, woken_consumer


def messages(caplog: pytest.LogCaptureFixture, level: int, part: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level and part in r.getMessage()]


@pytest.mark.parametrize("driver", DRIVERS)
async def test_notify_from_another_process_wakes_a_worker_on_either_driver(
    backend: str, db_url: str, driver: str, wait_until: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A 30 s poll, a 10 s bound: only the NOTIFY, heard on the driver's LISTEN, can wake it."""
    if backend != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    caplog.set_level(logging.INFO, logger="pgqrs_sqla")
    url = with_driver(db_url, driver)
    store = await pgqrs.connect(url)
    try:
        worker, woke = await woken_consumer(store, poll_interval=30)
        async with worker:
            await wait_until(lambda: asyncio.sleep(0, worker.stats.idle_waits > 0))
            assert messages(caplog, logging.INFO, f"wake-ups: LISTEN via {driver}")
            await enqueue_elsewhere(url)
            await asyncio.wait_for(woke.wait(), 10)  # far sooner than the 30 s poll
    finally:
        await store.close()


async def test_the_worker_says_when_it_polls_and_why(
    store: pgqrs.Store, backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pgqrs_sqla")
    await store.create_queue("q")

    async def handler(message: pgqrs.Message) -> None:
        return None

    worker = await (
        pgqrs.consumer("w", None, "q")
        .handler(handler)
        .create(store, poll_interval=7, listen=False if backend == "postgresql" else None)
    )
    await worker.run_until_idle(timeout=30)
    why = "listen=False" if backend == "postgresql" else "SQLite has no LISTEN"
    [said] = messages(caplog, logging.INFO, "wake-ups:")
    assert "polling every 7s" in said
    assert why in said


@pytest.mark.parametrize("driver", DRIVERS)
async def test_the_listener_outlives_losing_its_connection(
    backend: str, db_url: str, driver: str, wait_until: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The database's sessions, the listener's among them, are terminated and it refuses new
    connections for a while: one WARNING for the whole episode, however many attempts fail; an INFO when it is
    back; and NOTIFY wakes the worker again."""
    if backend != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    caplog.set_level(logging.INFO, logger="pgqrs_sqla")
    url = with_driver(db_url, driver)
    database = make_url(url).database
    admin = create_async_engine(
        make_url(db_url).set(database="postgres"), isolation_level="AUTOCOMMIT"
    )
    store = await pgqrs.connect(url)
    try:
        worker, woke = await woken_consumer(store, poll_interval=30)
        async with worker:
            await wait_until(lambda: asyncio.sleep(0, worker._wakeups.conn is not None))
            first = worker._wakeups.conn
            assert first is not None
            async with admin.connect() as conn:
                await conn.execute(text(f"ALTER DATABASE {database} WITH ALLOW_CONNECTIONS false"))
                # Every session of the database: the pool has none left to lend the listener.
                await conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :db AND pid <> pg_backend_pid()"
                    ),
                    {"db": database},
                )
            await wait_until(lambda: asyncio.sleep(0, worker._wakeups.failures >= 3), timeout=60)
            async with admin.connect() as conn:
                await conn.execute(text(f"ALTER DATABASE {database} WITH ALLOW_CONNECTIONS true"))
            await wait_until(
                lambda: asyncio.sleep(0, worker._wakeups.conn not in (None, first)), timeout=60
            )
            assert len(messages(caplog, logging.WARNING, "LISTEN connection lost")) == 1
            assert messages(caplog, logging.WARNING, "LISTEN connection failed") == []
            assert len(messages(caplog, logging.INFO, "LISTEN connection back")) == 1
            await enqueue_elsewhere(url)
            await asyncio.wait_for(woke.wait(), 10)  # NOTIFY again, not the 30 s poll
    finally:
        await store.close()
        await admin.dispose()
