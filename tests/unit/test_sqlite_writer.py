"""The in-process queue for SQLite's one writer (pgqrs_sqla._db.sqlite_writer)."""

from __future__ import annotations

import asyncio

from pgqrs_sqla._db import sqlite_writer


async def test_writers_of_one_database_take_turns_and_others_do_not_wait() -> None:
    events: list[str] = []
    first_in, release = asyncio.Event(), asyncio.Event()

    async def first() -> None:
        async with sqlite_writer("a.db", 5):
            events.append("first in")
            first_in.set()
            await release.wait()
            events.append("first out")

    async def second() -> None:
        async with sqlite_writer("a.db", 5):
            events.append("second in")

    async def other_database() -> None:
        async with sqlite_writer("b.db", 5):
            events.append("other db in")

    one = asyncio.create_task(first())
    await first_in.wait()
    two = asyncio.create_task(second())
    await other_database()  # not queued behind a.db's writer
    release.set()
    await asyncio.gather(one, two)
    assert events == ["first in", "other db in", "first out", "second in"]


async def test_a_nested_write_does_not_wait_for_itself() -> None:
    async with sqlite_writer("a.db", 5), sqlite_writer("a.db", 5):
        pass  # re-entrant: no deadlock


async def test_a_writer_stuck_past_the_wait_is_passed_by() -> None:
    """Past ``wait`` (SQLite's own busy timeout in the store) the next writer goes on to
    SQLite's lock, as it would without the queue, instead of waiting forever."""
    holding, done = asyncio.Event(), asyncio.Event()

    async def stuck() -> None:
        async with sqlite_writer("a.db", 5):
            holding.set()
            await done.wait()  # waits for the very writer queued behind it

    task = asyncio.create_task(stuck())
    await holding.wait()
    async with sqlite_writer("a.db", 0.05):
        done.set()
    await task
