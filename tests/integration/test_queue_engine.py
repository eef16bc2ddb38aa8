"""The queue engine's conformance suite: the same behaviour on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import Session

import pgqrs_sqla as pgqrs


async def noop(message: pgqrs.Message) -> None:
    return None


async def consumer(store: pgqrs.Store, name: str, queue: str = "q", **options: Any) -> pgqrs.Worker:
    options.setdefault("own_pool", False)
    return await pgqrs.consumer(name, 9000, queue).handler(noop).create(store, **options)


async def rows(store: pgqrs.Store) -> int:
    async with store.read() as conn:
        return int(
            (
                await conn.execute(select(func.count()).select_from(store.tables.messages))
            ).scalar_one()
        )


# ---------------------------------------------------------------- ordering, batches, delays


async def test_fifo_within_priority_and_batch_claim(store: pgqrs.Store) -> None:
    await store.create_queue("q")
    queue = store.queue("q")
    low = await queue.enqueue_batch([{"n": i} for i in range(3)])
    high = await queue.enqueue({"n": "urgent"}, priority=5)
    worker = await consumer(store, "c")
    # Highest priority first; a batch never spans two priorities.
    assert [m.id for m in await worker.dequeue(3)] == [high]
    batch = await worker.dequeue(2)
    assert [m.id for m in batch] == [low[0], low[1]]
    assert all(m.read_ct == 1 and m.worker_id == worker.id for m in batch)
    assert [m.id for m in await worker.dequeue(10)] == [low[2]]
    assert await worker.dequeue(10) == []


async def test_delayed_messages_become_visible(store: pgqrs.Store, wait_until: Any) -> None:
    await store.create_queue("q")
    queue = store.queue("q")
    a = await queue.enqueue("a", delay=0.3)
    b = await queue.enqueue("b", delay=timedelta(seconds=0.3))
    c = await queue.enqueue("c", available_at=datetime.now(UTC) + timedelta(hours=1))
    worker = await consumer(store, "c")
    assert await worker.dequeue(5) == []
    [stats] = await store.queue_stats("q")
    assert (stats.ready, stats.delayed) == (0, 3)

    async def both() -> list[int]:
        got.extend(m.id for m in await worker.dequeue(5))
        return sorted(got) if len(got) == 2 else []

    got: list[int] = []
    assert await wait_until(both, timeout=10) == sorted([a, b])
    assert c not in got
    with pytest.raises(pgqrs.ValidationError):
        await queue.enqueue("x", delay=-1)
    with pytest.raises(pgqrs.ValidationError):
        await queue.enqueue("x", available_at=datetime.now())  # naive


async def test_eight_consumers_drain_without_double_claims(
    store: pgqrs.Store, backend: str
) -> None:
    total = 5000 if backend == "postgresql" else 2000  # SQLite: one writer at a time, so fewer
    await store.create_queue("q")
    for start in range(0, total, 500):
        await store.queue("q").enqueue_batch([{"i": i} for i in range(start, start + 500)])
    seen: Counter[int] = Counter()

    async def drain(worker: pgqrs.Worker) -> None:
        while batch := await worker.dequeue(20):
            for msg in batch:
                seen[msg.id] += 1
                await worker.archive(msg)

    workers = [await consumer(store, f"c{i}") for i in range(8)]
    await asyncio.gather(*(drain(w) for w in workers))
    assert len(seen) == total
    assert set(seen.values()) == {1}
    [stats] = await store.queue_stats("q")
    assert (stats.ready, stats.leased, stats.archived) == (0, 0, total)


# ---------------------------------------------------------------- leases


async def test_expired_lease_is_taken_over_and_the_late_ack_is_refused(
    store: pgqrs.Store, wait_until: Any
) -> None:
    await store.create_queue("q")
    msg_id = await store.queue("q").enqueue({"job": 1})
    slow = await consumer(store, "slow")
    fast = await consumer(store, "fast")
    [mine] = await slow.dequeue(1, visibility_timeout=0.3)
    assert await fast.dequeue(1) == []  # leased

    async def taken() -> list[pgqrs.Message]:
        return await fast.dequeue(1)

    [theirs] = await wait_until(taken, timeout=10)
    assert theirs.id == msg_id
    assert theirs.read_ct == mine.read_ct + 1
    assert theirs.failed_ct == 1  # an expired lease counts as a failed delivery
    for late in (
        slow.archive(mine),
        slow.extend(mine, 10),
        slow.release(mine),
        slow.delete(mine),
        slow.fail(mine, "x"),
    ):
        with pytest.raises(pgqrs.LeaseLost):
            await late
    await fast.archive(theirs)
    [stats] = await store.queue_stats("q")
    assert (stats.archived, stats.leased, stats.ready) == (1, 0, 0)


async def test_extend_keeps_the_lease(store: pgqrs.Store) -> None:
    await store.create_queue("q")
    await store.queue("q").enqueue(1)
    holder, other = await consumer(store, "holder"), await consumer(store, "other")
    [msg] = await holder.dequeue(1, visibility_timeout=0.2)
    await holder.extend(msg, 30)
    await asyncio.sleep(0.4)  # past the original lease: only the extension keeps it ours
    assert await other.dequeue(1) == []
    await holder.archive(msg)


async def test_release_and_release_with_delay(store: pgqrs.Store) -> None:
    await store.create_queue("q")
    await store.queue("q").enqueue(1)
    worker = await consumer(store, "w")
    [msg] = await worker.dequeue(1)
    await worker.release(msg)
    [again] = await worker.dequeue(1)
    assert again.failed_ct == 0  # a deliberate release is not a failure
    await worker.release(again, delay=60)
    assert await worker.dequeue(1) == []
    [stats] = await store.queue_stats("q")
    assert stats.delayed == 1


# ---------------------------------------------------------------- dead letters


async def test_dead_letter_after_max_deliveries_and_replay(
    store: pgqrs.Store, wait_until: Any
) -> None:
    await store.create_queue("q", max_deliveries=3)
    msg_id = await store.queue("q").enqueue({"poison": True})
    worker = await consumer(store, "w")
    [m] = await worker.dequeue(1)
    assert await worker.fail(m, "boom") is False
    [m] = await worker.dequeue(1, visibility_timeout=0.1)  # this one's lease expires: failure 2
    await worker.release(m, delay=0)  # ... no: a deliberate release does not count
    [m] = await worker.dequeue(1, visibility_timeout=0.1)

    async def expired() -> list[pgqrs.Message]:
        return await worker.dequeue(1)

    [m] = await wait_until(expired, timeout=10)
    assert m.failed_ct == 2
    assert await worker.fail(m, "boom again") is True
    [dead] = await store.dead_letters("q")
    assert (dead.id, dead.archive_reason, dead.last_error) == (msg_id, "dead", "boom again")
    [stats] = await store.queue_stats("q")
    assert (stats.dead, stats.archived, stats.ready) == (1, 0, 0)
    assert await store.replay_dead_letters("q") == [msg_id]
    [back] = await worker.dequeue(1)
    assert (back.id, back.failed_ct) == (msg_id, 0)


async def test_worker_dead_letters_a_message_that_keeps_failing(
    store: pgqrs.Store, wait_until: Any
) -> None:
    await store.create_queue("q", max_deliveries=2)
    calls = 0

    async def always_fails(message: pgqrs.Message) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("cannot process")

    worker = (
        await pgqrs.consumer("w", None, "q")
        .handler(always_fails, retry=pgqrs.RetryPolicy(base=0.01, cap=0.01))
        .create(store, poll_interval=0.05)
    )
    await store.queue("q").enqueue("bad")
    async with worker:

        async def dead() -> list[pgqrs.Message]:
            return await store.dead_letters("q")

        await wait_until(dead, timeout=10)
    assert calls == 2


# ---------------------------------------------------------------- transactional enqueue


async def test_enqueue_in_the_callers_transaction(store: pgqrs.Store) -> None:
    await store.create_queue("q")
    sessions = async_sessionmaker(store.engine)
    async with sessions() as session, session.begin():
        await store.queue("q").enqueue("rolled back", target=session)
        await session.rollback()
    assert await rows(store) == 0
    async with sessions() as session, session.begin():
        await store.queue("q").enqueue("committed", target=session)
    async with store.engine.begin() as conn:
        await store.queue("q").enqueue_batch(["a", "b"], target=conn)
    assert await rows(store) == 3


async def test_enqueue_sync_session(store: pgqrs.Store, db_url: str) -> None:
    await store.create_queue("q")

    def sync_app() -> None:
        engine = create_engine(db_url.replace("postgresql://", "postgresql+psycopg://"))
        try:
            with Session(engine) as session:
                store.queue("q").enqueue_sync("no", target=session)
                session.rollback()
            with Session(engine) as session, session.begin():
                store.queue("q").enqueue_sync("yes", target=session)
        finally:
            engine.dispose()

    await asyncio.to_thread(sync_app)
    worker = await consumer(store, "w")
    assert [m.payload for m in await worker.dequeue(5)] == ["yes"]


async def test_commit_wakes_a_waiting_worker_long_before_its_poll(store: pgqrs.Store) -> None:
    """PostgreSQL: NOTIFY on commit; SQLite: the in-process hub after commit."""
    await store.create_queue("q")
    done = asyncio.Event()

    async def handler(message: pgqrs.Message) -> None:
        done.set()

    worker = await pgqrs.consumer("w", None, "q").handler(handler).create(store, poll_interval=30)
    async with worker:
        await asyncio.sleep(0.2)  # let it reach its idle wait (30 s poll interval)
        sessions = async_sessionmaker(store.engine)
        async with sessions() as session, session.begin():
            await store.queue("q").enqueue("wake up", target=session)
        await asyncio.wait_for(done.wait(), 5)  # far sooner than the 30 s poll


async def test_polling_fallback_without_listen(store: pgqrs.Store) -> None:
    await store.create_queue("q")
    done = asyncio.Event()

    async def handler(message: pgqrs.Message) -> None:
        done.set()

    worker = (
        await pgqrs.consumer("w", None, "q")
        .handler(handler)
        .create(store, poll_interval=0.1, listen=False, own_pool=True)
    )
    async with worker:
        await asyncio.sleep(0.2)
        async with store.engine.begin() as conn:  # another "process": no in-process wake-up
            await conn.execute(
                text(
                    "INSERT INTO pgqrs_messages (queue_id, payload, priority, enqueued_at, vt, read_ct, failed_ct) SELECT id, NULL, 0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 0, 0 FROM pgqrs_queues"
                )
            )
        await asyncio.wait_for(done.wait(), 5)


# ---------------------------------------------------------------- workers


async def test_worker_registration_names_and_status(store: pgqrs.Store) -> None:
    await store.create_queue("q")
    first = await consumer(store, "alpha", hostname="host-1")
    with pytest.raises(pgqrs.WorkerNameInUse):
        await consumer(store, "alpha")
    [info] = await store.list_workers()
    assert (info.name, info.hostname, info.port, info.queue, info.status) == (
        "alpha",
        "host-1",
        9000,
        "q",
        "ready",
    )
    first.start()
    await asyncio.sleep(0.1)
    assert (await store.list_workers())[0].status == "polling"
    await first.stop()
    assert (await store.list_workers())[0].status == "stopped"
    again = await consumer(store, "alpha")  # a stopped name is reused
    assert again.id == first.id


async def test_shutdown_releases_leased_messages(store: pgqrs.Store) -> None:
    await store.create_queue("q")
    await store.queue("q").enqueue(1)
    leaving = await consumer(store, "leaving")
    [msg] = await leaving.dequeue(1, visibility_timeout=300)
    leaving.start()
    await leaving.stop()
    staying = await consumer(store, "staying")
    [again] = await staying.dequeue(1)
    assert again.id == msg.id


# ---------------------------------------------------------------- admin and introspection


async def test_queue_admin(store: pgqrs.Store) -> None:
    first = await store.create_queue("jobs", max_deliveries=7)
    assert await store.create_queue("jobs") == first  # idempotent
    await store.create_queue("other")
    assert [q.name for q in await store.list_queues()] == ["jobs", "other"]
    await store.queue("jobs").enqueue_batch([1, 2, 3])
    worker = await consumer(store, "w", queue="jobs")
    [leased] = await worker.dequeue(1)
    with pytest.raises(pgqrs.QueueBusy):
        await store.delete_queue("jobs")
    assert await store.purge_queue("jobs") == 2  # the leased one stays
    [stats] = await store.queue_stats("jobs")
    assert (stats.leased, stats.ready) == (1, 0)
    await worker.archive(leased)
    await store.delete_queue("other")
    await store.delete_queue("jobs", force=True)
    assert await store.list_queues() == []
    with pytest.raises(pgqrs.QueueNotFound):
        await store.queue_stats("jobs")


async def test_stats_and_worker_list(store: pgqrs.Store) -> None:
    await store.create_queue("q")
    await store.queue("q").enqueue_batch([1, 2, 3])
    await store.queue("q").enqueue(4, delay=3600)
    worker = await consumer(store, "w")
    [m] = await worker.dequeue(1)
    await worker.archive(m)
    [stats] = await store.queue_stats("q")
    assert (stats.ready, stats.leased, stats.delayed, stats.archived, stats.dead) == (2, 0, 1, 1, 0)
    assert stats.oldest_ready_age is not None
    assert stats.oldest_ready_age >= 0
    [info] = await store.list_workers()
    assert 0 <= info.heartbeat_age < 60


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "name", ["", "x" * 129, "has space", "1starts-with-digit", "semi;colon", 42]
)
async def test_bad_queue_names(store: pgqrs.Store, name: Any) -> None:
    with pytest.raises(pgqrs.InvalidName):
        await store.create_queue(name)
    with pytest.raises(pgqrs.InvalidName):
        store.queue(name)
    assert await store.list_queues() == []


async def test_bad_payloads_write_nothing_and_keep_the_transaction(db_url: str) -> None:
    store = await pgqrs.connect(db_url, max_payload_bytes=100)
    try:
        await store.create_queue("q")
        queue = store.queue("q")
        sessions = async_sessionmaker(store.engine)
        async with sessions() as session, session.begin():
            for bad in ({1, 2}, object(), float("nan"), {"k": b"bytes"}):
                with pytest.raises(pgqrs.PayloadError, match="not JSON-serialisable"):
                    await queue.enqueue(bad, target=session)
            with pytest.raises(pgqrs.PayloadError, match="over the limit of 100 bytes") as info:
                await queue.enqueue({"big": "x" * 200}, target=session)
            assert info.value.reason == "too_large"
            with pytest.raises(pgqrs.PayloadError, match="payload #1"):
                await queue.enqueue_batch([1, {2}], target=session)
            with pytest.raises(pgqrs.QueueNotFound):
                await store.queue("missing").enqueue(1, target=session)
            await queue.enqueue("still fine", target=session)  # the transaction is usable
        assert await rows(store) == 1
    finally:
        await store.close()
