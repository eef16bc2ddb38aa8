"""The queue engine's conformance suite: the same behaviour on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select, text, update
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import Session

import pgqrs_sqla as pgqrs
from pgqrs_sqla import queue as pgqrs_queue
from pgqrs_sqla._db import HUB
from pgqrs_sqla.dialects import utcnow
from tests._wakeups import enqueue_elsewhere, woken_consumer


async def noop(message: pgqrs.Message) -> None:
    return None


async def consumer(store: pgqrs.Store, name: str, queue: str = "q", **options: Any) -> pgqrs.Worker:
    options.setdefault("own_pool", False)
    return await pgqrs.consumer(name, 9000, queue).handler(noop).create(store, **options)


async def rows(store: pgqrs.Store) -> int:
    async with store._read() as conn:
        return int(
            (
                await conn.execute(select(func.count()).select_from(store.tables.messages))
            ).scalar_one()
        )


async def went_idle(worker: pgqrs.Worker) -> bool:
    """The worker's poll loop found nothing to claim and waits for a wake-up or its poll."""
    return worker.stats.idle_waits > 0


async def worker_row(store: pgqrs.Store, name: str) -> pgqrs.WorkerInfo:
    [info] = [w for w in await store.list_workers() if w.name == name]
    return info


async def status_is(store: pgqrs.Store, name: str, status: str) -> bool:
    return (await worker_row(store, name)).status == status


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
    # 2 s, not 0.3 s: on a loaded machine a 0.3 s stall before the first dequeue made them
    # ready already (seen by two helpers at load 7-16).
    a = await queue.enqueue("a", delay=2)
    b = await queue.enqueue("b", delay=timedelta(seconds=2))
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


async def test_eight_consumers_drain_without_double_claims(store: pgqrs.Store) -> None:
    total = 5000  # the same on SQLite, whose single writer takes ~7 s of a 2-core machine
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


async def test_release_with_a_delay_is_not_a_failed_delivery_but_an_expired_lease_is(
    store: pgqrs.Store, wait_until: Any
) -> None:
    await store.create_queue("q")
    msg_id = await store.queue("q").enqueue(1)
    worker = await consumer(store, "w")
    [msg] = await worker.dequeue(1)
    await worker.release(msg, delay=0.2)

    async def claimed() -> list[pgqrs.Message]:
        return await worker.dequeue(1, visibility_timeout=0.2)

    [again] = await wait_until(claimed)  # back after its delay
    assert (again.id, again.read_ct, again.failed_ct) == (msg_id, 2, 0)
    # This lease is left to expire: the claim after it counts a failed delivery.
    [third] = await wait_until(claimed)
    assert (third.id, third.read_ct, third.failed_ct) == (msg_id, 3, 1)


@pytest.mark.parametrize("seconds", [0, -1, 0.0, float("nan"), float("inf"), "10", True])
async def test_extend_refuses_a_lease_that_would_not_be_one(
    store: pgqrs.Store, seconds: Any
) -> None:
    await store.create_queue("q")
    await store.queue("q").enqueue(1)
    worker = await consumer(store, "w")
    [msg] = await worker.dequeue(1, visibility_timeout=30)
    with pytest.raises(pgqrs.ValidationError, match="extend"):
        await worker.extend(msg, seconds)
    with pytest.raises(pgqrs.ValidationError, match="visibility_timeout"):
        await worker.dequeue(1, visibility_timeout=seconds)
    other = await consumer(store, "other")
    assert await other.dequeue(1) == []  # the lease is as it was: still held
    await worker.extend(msg, timedelta(seconds=60))
    await worker.archive(msg)


@pytest.mark.parametrize("route", ["dequeue", "handler"])
async def test_expired_leases_dead_letter_the_message_however_it_is_claimed(
    store: pgqrs.Store, wait_until: Any, route: str
) -> None:
    await store.create_queue("q", max_deliveries=2)
    msg_id = await store.queue("q").enqueue({"job": 1})
    crashing = await consumer(store, "crashing")

    # Two deliveries whose holder never comes back: each lease just expires.
    async def redelivered() -> list[pgqrs.Message]:
        return await crashing.dequeue(1, visibility_timeout=0.1)

    [first] = await crashing.dequeue(1, visibility_timeout=0.1)
    [second] = await wait_until(redelivered)
    assert (first.failed_ct, second.failed_ct) == (0, 1)

    # The next claim counts the second expiry: 2 failed deliveries of 2. Dead, not handed out.
    if route == "dequeue":
        taker = await consumer(store, "taker")

        async def claimed_or_dead() -> list[pgqrs.Message]:
            return await taker.dequeue(1) or await store.dead_letters("q")

        result = await wait_until(claimed_or_dead)
    else:
        handled: list[int] = []

        async def handler(message: pgqrs.Message) -> None:
            handled.append(message.id)

        taker = (
            await pgqrs.consumer("taker", None, "q")
            .handler(handler)
            .create(store, poll_interval=0.05, own_pool=False)
        )
        async with taker:
            result = await wait_until(lambda: store.dead_letters("q"))
        assert handled == []
    [dead] = result
    assert (dead.id, dead.archive_reason, dead.failed_ct) == (msg_id, "dead", 2)
    assert dead.last_error == "dead: 2 failed deliveries (max_deliveries=2)"
    [stats] = await store.queue_stats("q")
    assert (stats.dead, stats.ready, stats.leased) == (1, 0, 0)


# ---------------------------------------------------------------- dead letters


async def test_dead_letter_after_max_deliveries_and_replay(
    store: pgqrs.Store, wait_until: Any
) -> None:
    await store.create_queue("q", max_deliveries=3)
    msg_id = await store.queue("q").enqueue({"poison": True})
    worker = await consumer(store, "w")
    [m] = await worker.dequeue(1)
    assert await worker.fail(m, "boom") is False  # failure 1
    [m] = await worker.dequeue(1, visibility_timeout=0.1)
    await worker.release(m, delay=0)  # given back on purpose: not a failure
    [m] = await worker.dequeue(1, visibility_timeout=0.1)  # this lease expires: failure 2

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


async def test_commit_wakes_a_waiting_worker_long_before_its_poll(
    store: pgqrs.Store, wait_until: Any
) -> None:
    """The in-process hub after commit (and on PostgreSQL NOTIFY as well: see
    test_notify_from_another_process_wakes_a_waiting_worker for NOTIFY alone)."""
    worker, done = await woken_consumer(store, poll_interval=30)
    async with worker:
        await wait_until(lambda: went_idle(worker))  # waiting, with 30 s to its next poll
        sessions = async_sessionmaker(store.engine)
        async with sessions() as session, session.begin():
            await store.queue("q").enqueue("wake up", target=session)
        await asyncio.wait_for(done.wait(), 5)  # far sooner than the 30 s poll


async def test_notify_from_another_process_wakes_a_waiting_worker(
    store: pgqrs.Store, backend: str, db_url: str, wait_until: Any
) -> None:
    if backend != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's; SQLite workers in other processes poll")
    worker, woke = await woken_consumer(store, poll_interval=60)
    async with worker:
        await wait_until(lambda: went_idle(worker))  # 60 s to its next poll
        await enqueue_elsewhere(db_url)
        await asyncio.wait_for(woke.wait(), 10)  # far sooner than the 60 s poll


async def test_a_rolled_back_enqueue_on_a_connection_leaves_no_wake_up_behind(
    store: pgqrs.Store,
) -> None:
    """A Core connection's pending wake-ups end with its transaction, whichever way: a
    long-lived connection that rolls back many enqueues keeps one listener, and its next,
    unrelated commit wakes nobody."""
    await store.create_queue("q")
    woken = HUB.subscribe(store.db_key, "q")
    async with store.engine.connect() as conn:
        for _ in range(20):
            async with conn.begin() as transaction:
                await store.queue("q").enqueue("rolled back", target=conn)
                await transaction.rollback()
        assert not woken.event.is_set()
        assert len(conn.sync_connection.dispatch.commit) == 1  # not one per enqueue
        async with conn.begin():
            await conn.execute(select(1))
        assert not woken.event.is_set()  # nothing was committed to wake anyone for
        async with conn.begin():
            await store.queue("q").enqueue("committed", target=conn)
            assert not woken.event.is_set()  # not before the commit
        assert woken.event.is_set()
    assert await rows(store) == 1


async def test_polling_fallback_without_listen(store: pgqrs.Store, wait_until: Any) -> None:
    worker, done = await woken_consumer(store, poll_interval=0.1, listen=False, own_pool=True)
    async with worker:
        await wait_until(lambda: went_idle(worker))
        async with store.engine.begin() as conn:  # another "process": no in-process wake-up
            await conn.execute(
                text(
                    "INSERT INTO pgqrs_messages (queue_id, payload, priority, enqueued_at, vt, read_ct, failed_ct) SELECT id, NULL, 0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 0, 0 FROM pgqrs_queues"
                )
            )
        await asyncio.wait_for(done.wait(), 5)


# ---------------------------------------------------------------- workers


async def test_worker_registration_names_and_status(store: pgqrs.Store, wait_until: Any) -> None:
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
    assert await wait_until(lambda: status_is(store, "alpha", "polling"))
    await first.stop()
    assert (await store.list_workers())[0].status == "stopped"
    again = await consumer(store, "alpha")  # a stopped name is reused
    assert again.id == first.id


async def test_suspend_stops_claiming_but_keeps_the_leases_it_holds(
    store: pgqrs.Store, wait_until: Any
) -> None:
    await store.create_queue("q")
    started, finish = asyncio.Event(), asyncio.Event()
    handled: list[str] = []

    async def handler(message: pgqrs.Message) -> None:
        handled.append(message.payload)
        if message.payload == "long":
            started.set()
            await finish.wait()

    worker = (
        await pgqrs.consumer("w", None, "q")
        .handler(handler)
        .create(
            store,
            concurrency=2,
            visibility_timeout=0.5,
            heartbeat_interval=0.1,
            poll_interval=0.05,
            own_pool=False,
        )
    )
    await store.queue("q").enqueue("long")
    async with worker:
        await asyncio.wait_for(started.wait(), 10)
        await worker.suspend()
        assert worker.status is pgqrs.WorkerStatus.SUSPENDED
        assert await status_is(store, "w", "suspended")
        await store.queue("q").enqueue("later")
        assert await worker.dequeue(1) == []  # by hand neither
        suspended_at = time.monotonic()

        async def long_past_its_lease() -> bool:
            # Three visibility timeouts on: only heartbeats kept "long" leased, and some
            # fifty polls went by without "later" being claimed.
            return time.monotonic() - suspended_at > 1.5

        await wait_until(long_past_its_lease)
        [stats] = await store.queue_stats("q")
        assert (stats.leased, stats.ready) == (1, 1)
        assert handled == ["long"]
        health = worker.health()
        assert health.running and health.last_heartbeat_age is not None
        assert health.last_heartbeat_age < 1.0

        await worker.resume()
        assert await status_is(store, "w", "polling")

        async def later_handled() -> bool:
            return handled == ["long", "later"]

        await wait_until(later_handled)
        finish.set()

        async def all_done() -> bool:
            [stats] = await store.queue_stats("q")
            return stats.archived == 2

        await wait_until(all_done)


async def test_a_worker_suspended_before_it_runs_claims_nothing_until_resumed(
    store: pgqrs.Store,
) -> None:
    await store.create_queue("q")
    await store.queue("q").enqueue(1)
    worker = await consumer(store, "w")
    await worker.suspend()
    assert await status_is(store, "w", "suspended")
    await worker.run_until_idle(timeout=10)  # idle at once: a suspended worker claims nothing
    [stats] = await store.queue_stats("q")
    assert (stats.ready, stats.archived) == (1, 0)
    assert await status_is(store, "w", "stopped")
    await worker.resume()  # decides how it runs next; the row of a stopped worker stays so
    assert await status_is(store, "w", "stopped")
    await worker.run_until_idle(timeout=10)
    [stats] = await store.queue_stats("q")
    assert (stats.ready, stats.archived) == (0, 1)


async def heartbeat_older_than(store: pgqrs.Store, name: str, seconds: float) -> bool:
    return (await worker_row(store, name)).heartbeat_age > seconds


async def test_a_short_heartbeat_interval_cannot_take_a_live_workers_name(
    store: pgqrs.Store, wait_until: Any
) -> None:
    """A worker's row is stale after three of *its own* heartbeat intervals, not the
    newcomer's; a row from before pgqrs 0002 (no interval recorded) is judged by ours."""
    await store.create_queue("q")
    live = await consumer(store, "w", hostname="host-a", heartbeat_interval=30)
    await wait_until(lambda: heartbeat_older_than(store, "w", 0.5))
    with pytest.raises(pgqrs.WorkerNameInUse, match="every 30s"):
        await consumer(store, "w", hostname="host-b", heartbeat_interval=0.1)  # 0.3 s < 0.5 s
    assert (await worker_row(store, "w")).heartbeat_interval == 30
    async with store._begin() as conn:
        w = store.tables.workers
        await conn.execute(update(w).where(w.c.id == live.id).values(heartbeat_interval=None))
    taker = await consumer(store, "w", hostname="host-b", heartbeat_interval=0.1)
    assert taker.id == live.id


#: Register a worker, lease one message, and die without a word (a crash): argv is the URL,
#: the worker's name and its heartbeat interval. Prints the worker id and the lease.
CLAIM_AND_CRASH = """
import asyncio, os, sys
import pgqrs_sqla as pgqrs

async def main():
    store = await pgqrs.connect(sys.argv[1])

    async def noop(message):
        pass

    worker = await pgqrs.consumer(sys.argv[2], None, "q").handler(noop).create(
        store, heartbeat_interval=float(sys.argv[3])
    )
    [msg] = await worker.dequeue(1, visibility_timeout=300)
    print(worker.id, os.getpid(), msg.id, msg.read_ct, flush=True)
    os._exit(17)

asyncio.run(main())
"""


async def claim_and_crash(db_url: str, name: str, heartbeat_interval: float) -> list[int]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CLAIM_AND_CRASH,
        db_url,
        name,
        str(heartbeat_interval),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 17, out
    return [int(n) for n in out.split()]


async def test_a_crashed_worker_restarts_under_its_name_at_once(
    store: pgqrs.Store, db_url: str
) -> None:
    """The pgqrs guide's fixed name ("worker-1"): after a crash the same one picks up the
    work, without waiting out three heartbeats of the dead process (15 s by default)."""
    await store.create_queue("q")
    msg_id = await store.queue("q").enqueue(1)
    crashed_id, crashed_pid, leased, token = await claim_and_crash(db_url, "worker-1", 5.0)
    assert (leased, token) == (msg_id, 1)
    row = await worker_row(store, "worker-1")
    assert (row.status, row.hostname) == ("ready", socket.gethostname())
    assert row.heartbeat_age < 15  # by the heartbeat alone the name would still be taken
    restarted = await consumer(store, "worker-1")  # same host, and that pid is gone
    assert restarted.id == crashed_id
    [again] = await restarted.dequeue(1)  # the dead life's lease was given back at once
    assert (again.id, again.read_ct, again.failed_ct) == (msg_id, 2, 1)
    assert row.pid == crashed_pid  # what the judgement went by


async def test_our_own_pid_without_a_worker_of_this_process_is_an_earlier_life(
    store: pgqrs.Store,
) -> None:
    """A container restart runs the worker as pid 1 again: a row naming our pid that no
    Worker of this process holds is left from before; one that a Worker here holds is not."""
    await store.create_queue("q")
    live = await consumer(store, "worker-1")
    assert (await worker_row(store, "worker-1")).pid == os.getpid() == live.pid
    with pytest.raises(pgqrs.WorkerNameInUse):
        await consumer(store, "worker-1")
    w = store.tables.workers
    async with store._begin() as conn:  # the row a previous life of this pid left, fresh
        await conn.execute(
            w.insert().values(
                worker_name="worker-2",
                hostname=socket.gethostname(),
                pid=os.getpid(),
                heartbeat_interval=60.0,
                status="polling",
                started_at=utcnow(),
                heartbeat_at=utcnow(),
            )
        )
    restarted = await consumer(store, "worker-2")
    row = await worker_row(store, "worker-2")
    assert (row.id, row.status, row.heartbeat_interval) == (restarted.id, "ready", 5.0)


async def test_a_worker_whose_name_was_taken_over_leaves_the_new_holders_lease_and_row(
    store: pgqrs.Store, db_url: str, wait_until: Any
) -> None:
    """Two lives of one name share a worker id; only lease tokens tell their leases apart.
    The old one, stopping, gives back its own delivery and not the new holder's, and does
    not mark the new holder's row stopped."""
    await store.create_queue("q")
    msg_id = await store.queue("q").enqueue(1)
    old = await consumer(store, "w", heartbeat_interval=0.05)
    [stale] = await old.dequeue(1, visibility_timeout=300)
    # Not running, it does not heartbeat: after three of its intervals the name is free.
    await wait_until(lambda: heartbeat_older_than(store, "w", 0.2))
    heir_id, heir_pid, leased, token = await claim_and_crash(db_url, "w", 0.05)
    assert (heir_id, leased, token) == (old.id, msg_id, 2)
    old.start()
    [stopped] = await asyncio.gather(old.stop(), return_exceptions=True)
    [stats] = await store.queue_stats("q")
    assert stats.leased == 1  # the heir's delivery, untouched
    assert isinstance(stopped, pgqrs.WorkerNameInUse)  # and the old one knows why it stopped
    row = await worker_row(store, "w")
    assert (row.status, row.pid) == ("ready", heir_pid)
    with pytest.raises(pgqrs.LeaseLost):
        await old.archive(stale)


def process_state(pid: int) -> str:
    """Linux's one-letter state of a process (``T``: stopped by a signal)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0]


def read_text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


#: A worker whose heartbeat stalls: its handler waits for a heartbeat to finish (so no
#: transaction is open), then stops this process, as a blocked event loop or a paused VM
#: would. argv: the URL and a log file.
STALLING_WORKER = """
import asyncio, logging, os, signal, sys
import pgqrs_sqla as pgqrs

logging.basicConfig(filename=sys.argv[2], level=logging.WARNING)

async def main():
    store = await pgqrs.connect(sys.argv[1])
    worker = None

    async def handler(message):
        seen = worker.stats.last_heartbeat
        while worker.stats.last_heartbeat == seen:
            await asyncio.sleep(0.01)
        print("stalling", flush=True)
        os.kill(os.getpid(), signal.SIGSTOP)
        await asyncio.sleep(120)  # still at work once it resumes

    worker = await pgqrs.consumer("w", None, "q").handler(handler).create(
        store, heartbeat_interval=0.1, visibility_timeout=1.0
    )
    await worker.poll_forever()

asyncio.run(main())
"""


async def test_a_stalled_worker_whose_name_was_taken_over_stops_extending_its_leases(
    store: pgqrs.Store, db_url: str, tmp_path: Path, wait_until: Any
) -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("stops a process with SIGSTOP and reads its state from /proc")
    await store.create_queue("q")
    msg_id = await store.queue("q").enqueue(1)
    log_file = tmp_path / "stalled.log"
    stalled = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        STALLING_WORKER,
        db_url,
        str(log_file),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert stalled.stdout is not None
        assert (await asyncio.wait_for(stalled.stdout.readline(), 30)).strip() == b"stalling"

        async def stopped() -> bool:
            return process_state(stalled.pid) == "T"

        await wait_until(stopped)
        await wait_until(lambda: heartbeat_older_than(store, "w", 0.4))  # 3 of its 0.1 s
        heir = await consumer(store, "w", heartbeat_interval=0.1)
        [mine] = await heir.dequeue(1, visibility_timeout=0.5)
        assert (mine.id, mine.worker_id, mine.read_ct) == (msg_id, heir.id, 2)
        stalled.send_signal(signal.SIGCONT)
        # The stalled worker's heartbeats resume, still under the shared id. They must not
        # extend the heir's lease: it ends after its 0.5 s and another worker takes over.
        other = await consumer(store, "other")

        async def taken() -> list[pgqrs.Message]:
            return await other.dequeue(1)

        [theirs] = await wait_until(taken, timeout=5)  # the stalled handler runs 120 s more
        assert (theirs.id, theirs.read_ct) == (msg_id, 3)

        async def gave_up() -> bool:
            return "another worker registered this name" in read_text(log_file)

        await wait_until(gave_up)
        assert (await worker_row(store, "w")).pid == heir.pid  # the heir's row, untouched
    finally:
        if stalled.returncode is None:
            stalled.kill()
            await stalled.wait()


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


async def test_delete_queue_refuses_a_claim_that_commits_while_it_runs(
    store: pgqrs.Store, backend: str, wait_until: Any
) -> None:
    if backend != "postgresql":
        pytest.skip("SQLite: delete_queue holds the write lock, so no claim commits meanwhile")
    await store.create_queue("q")
    msg_id = await store.queue("q").enqueue(1)
    worker = await consumer(store, "w")
    deleting: asyncio.Task[None] | None = None
    async with store.engine.connect() as claimer:
        # A claim under way: it has leased the message and not committed yet.
        await claimer.begin()
        [claimed] = await pgqrs_queue.claim(
            claimer, store.tables, await store._queue_id("q"), worker.id, batch=1, vt_seconds=300
        )
        deleting = asyncio.create_task(store.delete_queue("q"))

        async def waiting_for_the_claim() -> bool:
            async with store._read() as conn:
                waits = await conn.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                        "current_database() AND wait_event_type = 'Lock'"
                    )
                )
                return deleting.done() or waits.scalar_one() > 0

        await wait_until(waiting_for_the_claim)
        await claimer.commit()
    with pytest.raises(pgqrs.QueueBusy):
        await deleting
    [stats] = await store.queue_stats("q")
    assert (stats.leased, stats.ready) == (1, 0)
    await worker.archive(claimed)  # the claimed delivery survived, lease and all
    assert claimed.id == msg_id


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


async def test_stop_closes_a_worker_driven_by_hand(store: pgqrs.Store) -> None:
    """A worker never started (dequeue and lease calls only) is closed by stop(): what it
    holds goes back at once, its row says stopped, and a second stop() does nothing."""
    await store.create_queue("manual")
    await store.queue("manual").enqueue_batch([1, 2])

    async def noop(message: pgqrs.Message) -> None:
        return None

    me = await pgqrs.consumer("by-hand", None, "manual").handler(noop).create(store)
    held = await me.dequeue(2, visibility_timeout=300)
    await me.archive(held[0])
    await me.stop()
    await me.stop()
    [info] = await store.list_workers()
    assert info.status == "stopped"
    [stats] = await store.queue_stats("manual")
    assert (stats.ready, stats.leased, stats.archived) == (1, 0, 1)  # back now, not in 300 s


async def test_a_claim_takes_a_lower_priority_when_the_top_one_is_locked(
    store: pgqrs.Store, backend: str
) -> None:
    """While another claim holds the top priority's only ready message (PostgreSQL: locked,
    uncommitted; SKIP LOCKED passes it over), a claim takes the next priority instead of
    coming back empty and idling until its next poll."""
    if backend == "sqlite":
        pytest.skip("SQLite's single writer: no claim is ever in flight beside another")
    await store.create_queue("prio")
    urgent = await store.queue("prio").enqueue("urgent", priority=10)
    await store.queue("prio").enqueue("routine", priority=0)
    await store.create_workflow("wprio")
    urgent_run = await pgqrs.workflow("wprio").trigger("urgent", priority=10).execute(store)
    routine_run = await pgqrs.workflow("wprio").trigger("routine").execute(store)
    m = store.tables.messages
    urgent_msg = (await store.get_run(urgent_run)).message_id

    async def seen(message: Any) -> None:
        return None

    runs: list[str] = []

    async def handler(ctx: pgqrs.RunContext, params: str) -> None:
        runs.append(params)

    other = await store.engine.connect()
    try:
        await other.begin()  # another claim in flight on both top-priority messages
        await other.execute(
            select(m.c.id).where(m.c.id.in_([urgent, urgent_msg])).with_for_update()
        )
        me = await pgqrs.consumer("second", None, "prio").handler(seen).create(store)
        [got] = await me.dequeue(1)
        assert got.payload == "routine"
        await me.stop()
        worker = (
            await pgqrs.consumer("wsecond", None, "wprio")
            .handler(handler)
            .create(store, concurrency=1, batch_size=1)
        )
        async with worker:
            await store.wait_for_run(routine_run, timeout=10)
        assert runs == ["routine"]
    finally:
        await other.close()
