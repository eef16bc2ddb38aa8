"""What the wake-up tests share: a worker that says when it handled a message, a message
enqueued from another process (only NOTIFY, or a poll, can tell a worker of it), and a
PostgreSQL URL on a given driver."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from sqlalchemy.engine import make_url

import pgqrs_sqla as pgqrs

#: The PostgreSQL drivers LISTEN is tried on.
DRIVERS = ("asyncpg", "psycopg")

#: Enqueue one message on queue "q" of the store at ``sys.argv[1]``, from a process of its own.
ENQUEUE_ELSEWHERE = """
import asyncio, sys
import pgqrs_sqla as pgqrs

async def main():
    store = await pgqrs.connect(sys.argv[1])
    try:
        await store.queue("q").enqueue("from another process")
    finally:
        await store.close()

asyncio.run(main())
"""


def with_driver(url: str, driver: str) -> str:
    """``url`` on ``postgresql+driver``, its password kept (a child process connects with it)."""
    return (
        make_url(url).set(drivername=f"postgresql+{driver}").render_as_string(hide_password=False)
    )


async def enqueue_elsewhere(url: str) -> None:
    """Enqueue one message on "q" from another process, and return once it has committed."""
    producer = await asyncio.create_subprocess_exec(sys.executable, "-c", ENQUEUE_ELSEWHERE, url)
    assert await producer.wait() == 0  # committed


async def woken_consumer(
    store: pgqrs.Store, *, poll_interval: float, **options: Any
) -> tuple[pgqrs.Worker, asyncio.Event]:
    """Create queue "q" and a consumer of it (not started, made with ``options``) whose
    handler sets the event returned with it."""
    await store.create_queue("q")
    woke = asyncio.Event()

    async def handler(message: pgqrs.Message) -> None:
        woke.set()

    worker = (
        await pgqrs.consumer("w", None, "q")
        .handler(handler)
        .create(store, poll_interval=poll_interval, **options)
    )
    return worker, woke
