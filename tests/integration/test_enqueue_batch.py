"""``enqueue_batch`` as one statement the same for any count (a JSONB array on PostgreSQL, a
JSON text on SQLite): ids in order, every JSON value stored as given, the caller's
transaction (async and sync, committed and rolled back), and an unknown queue."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import Session

import pgqrs_sqla as pgqrs

VALUES: list[Any] = [True, False, None, "text", "", 1.5, 0, [1, {"a": None}], {"é": "ü"}]


async def _payloads(store: pgqrs.Store, ids: list[int]) -> list[Any]:
    m = store.tables.messages
    async with store._read() as conn:
        rows = dict((await conn.execute(select(m.c.id, m.c.payload).where(m.c.id.in_(ids)))).all())
    return [rows[i] for i in ids]


async def _count(store: pgqrs.Store) -> int:
    m = store.tables.messages
    async with store._read() as conn:
        return int((await conn.execute(select(func.count()).select_from(m))).scalar_one())


async def test_ids_in_order_and_values_as_given(store: pgqrs.Store) -> None:
    await store.create_queue("q")
    queue = store.queue("q")
    ids = await queue.enqueue_batch(VALUES)
    assert ids == sorted(ids) and len(set(ids)) == len(VALUES)
    assert await _payloads(store, ids) == VALUES
    # the same as one enqueue writes, None included
    one = [await queue.enqueue(value) for value in VALUES]
    assert await _payloads(store, one) == VALUES
    # a second batch of another size reuses nothing it should not
    more = await queue.enqueue_batch([{"n": i} for i in range(250)], priority=3, delay=60)
    assert await _payloads(store, more) == [{"n": i} for i in range(250)]
    [stats] = await store.queue_stats("q")
    assert stats.delayed == 250


async def test_in_the_callers_transaction(store: pgqrs.Store) -> None:
    await store.create_queue("q")
    sessions = async_sessionmaker(store.engine)
    async with sessions() as session, session.begin():
        await store.queue("q").enqueue_batch([1, 2, 3], target=session)
        await session.rollback()
    assert await _count(store) == 0
    async with sessions() as session, session.begin():
        ids = await store.queue("q").enqueue_batch([1, 2, 3], target=session)
    assert await _payloads(store, ids) == [1, 2, 3]
    with pytest.raises(pgqrs.QueueNotFound):
        await store.queue("nope").enqueue_batch([1, 2])


async def test_a_sync_session_rolls_back(store: pgqrs.Store, db_url: str) -> None:
    """The statement begins with INSERT: pysqlite's implicit transaction covers it on an
    engine the app made (one beginning with WITH would commit on its own)."""
    await store.create_queue("q")

    def sync_app() -> list[int]:
        engine = create_engine(db_url.replace("postgresql://", "postgresql+psycopg://"))
        try:
            with Session(engine) as session:
                store.queue("q").enqueue_batch_sync(["no", "nope"], target=session)
                session.rollback()
            with Session(engine) as session, session.begin():
                return store.queue("q").enqueue_batch_sync(["a", "b"], target=session)
        finally:
            engine.dispose()

    ids = await asyncio.to_thread(sync_app)
    assert await _payloads(store, ids) == ["a", "b"]
    assert await _count(store) == 2


async def test_a_queue_dropped_and_recreated_gets_the_new_queue(store: pgqrs.Store) -> None:
    """Nothing the enqueue paths keep may name the dropped queue's row: the name is looked up
    in the statement itself, every time (see docs/benchmarks.md on why no id cache)."""
    await store.create_queue("q")
    queue = store.queue("q")
    await queue.enqueue(1)
    await queue.enqueue_batch([1, 2])
    await store.delete_queue("q")
    with pytest.raises(pgqrs.QueueNotFound):
        await queue.enqueue(1)
    with pytest.raises(pgqrs.QueueNotFound):
        await queue.enqueue_batch([1, 2])
    await store.create_queue("q")
    new = (await store.get_queue("q")).id
    ids = [await queue.enqueue("one"), *await queue.enqueue_batch(["two", "three"])]
    m = store.tables.messages
    async with store._read() as conn:
        queues = (await conn.execute(select(m.c.queue_id).where(m.c.id.in_(ids)))).scalars()
        assert set(queues) == {new}
    assert await _count(store) == 3
