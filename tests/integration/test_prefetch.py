"""Claiming ahead, on both backends: the default worker claims more than its free slots
while its handlers are quick, runs them ``concurrency`` at a time, keeps the leases of those
waiting, does not start one whose lease was lost, acknowledges a batch fenced by each lease,
gives back on ``stop()`` what it had not started, and a killed worker's come back when their
leases end; ``batch_size`` is checked."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

import pgqrs_sqla as pgqrs
from pgqrs_sqla import _plain_messages, _prefetch
from pgqrs_sqla.dialects import aware, utcnow

ROOT = Path(__file__).parents[2]
PROC = ROOT / "tests" / "ahead_proc.py"


@pytest.fixture(autouse=True)
def quick_enough(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any pace counts as quick: how far ahead a worker claims does not hang on this
    machine's load (a loaded one runs even a no-op delivery slowly)."""
    monkeypatch.setattr(_prefetch, "PREFETCH_WINDOW", 3600.0)


async def rows(store: pgqrs.Store, ids: list[int]) -> dict[int, Any]:
    m = store.tables.messages
    async with store._read() as conn:
        found = (await conn.execute(select(m).where(m.c.id.in_(ids)))).all()
    return {row.id: row for row in found}


async def db_now(store: pgqrs.Store) -> Any:
    async with store._read() as conn:
        return aware((await conn.execute(select(utcnow()))).scalar_one())


class Blocking:
    """A plain handler that records each payload and blocks on the one named ``block``."""

    def __init__(self) -> None:
        self.handled: list[str] = []
        self.started = asyncio.Event()
        self.gate = asyncio.Event()
        self.running = 0
        self.most = 0

    async def __call__(self, message: pgqrs.Message) -> None:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            self.handled.append(message.payload)
            if message.payload == "block":
                self.started.set()
                await self.gate.wait()
        finally:
            self.running -= 1


async def quick_worker(
    store: pgqrs.Store, wait_until: Any, handler: Blocking, name: str = "w1", **options: Any
) -> pgqrs.Worker:
    """A started worker on queue 'ahead' that has handled one quick message ('seed'), so it
    knows its deliveries are quick: from then on it claims ahead."""
    options.setdefault("poll_interval", 0.05)
    worker = await pgqrs.consumer(name, None, "ahead").handler(handler).create(store, **options)
    worker.start()
    await store.queue("ahead").enqueue("seed")
    await wait_until(lambda: worker.stats.completed == 1)
    return worker


async def test_the_default_worker_claims_ahead_and_runs_one_at_a_time(
    store: pgqrs.Store, wait_until: Any
) -> None:
    await store.create_queue("ahead")
    handler = Blocking()
    worker = await quick_worker(store, wait_until, handler)
    try:
        ids = await store.queue("ahead").enqueue_batch(["block", *(f"m{i}" for i in range(9))])
        await asyncio.wait_for(handler.started.wait(), 30)
        # One handler running, the other nine claimed with it, waiting for the slot.
        assert set(worker._inflight) == set(ids)
        handler.gate.set()
        await wait_until(lambda: worker.stats.completed == 11)
    finally:
        handler.gate.set()
        await worker.stop(grace=5)
    assert handler.handled == ["seed", "block", *(f"m{i}" for i in range(9))]
    assert handler.most == 1  # concurrency 1: never two handlers at once
    assert all(row.archived_at is not None for row in (await rows(store, ids)).values())


async def test_a_slow_first_delivery_is_not_claimed_ahead(store: pgqrs.Store) -> None:
    """Before any pace is known the worker claims only for its free slot."""
    await store.create_queue("ahead")
    handler = Blocking()
    worker = await pgqrs.consumer("w1", None, "ahead").handler(handler).create(store)
    ids = await store.queue("ahead").enqueue_batch(["block", "a", "b"])
    worker.start()
    try:
        await asyncio.wait_for(handler.started.wait(), 30)
        assert set(worker._inflight) == {ids[0]}
        by_id = await rows(store, ids)
        assert by_id[ids[1]].consumer_worker_id is None and by_id[ids[1]].read_ct == 0
    finally:
        handler.gate.set()
        await worker.stop(grace=5)


async def test_a_message_claimed_ahead_keeps_its_lease_while_it_waits(
    store: pgqrs.Store, wait_until: Any
) -> None:
    """The ones waiting behind a handler that outlives the claim's lease are extended by the
    heartbeat: still held by the worker, delivered once, none lost."""
    await store.create_queue("ahead")
    handler = Blocking()
    worker = await quick_worker(
        store, wait_until, handler, visibility_timeout=1.0, heartbeat_interval=0.2
    )
    try:
        ids = await store.queue("ahead").enqueue_batch(["block", "a", "b"])
        await asyncio.wait_for(handler.started.wait(), 30)
        claimed = await rows(store, ids)
        assert all(row.consumer_worker_id == worker.id for row in claimed.values())
        claim_vt = max(aware(row.vt) for row in claimed.values())

        async def past_the_claims_lease() -> bool:
            return bool(await db_now(store) > claim_vt)

        await wait_until(past_the_claims_lease)
        waiting = await rows(store, ids[1:])
        now = await db_now(store)
        for row in waiting.values():
            assert row.consumer_worker_id == worker.id and row.read_ct == 1
            assert aware(row.vt) > now  # extended while it waited
        handler.gate.set()
        await wait_until(lambda: worker.stats.completed == 4)
    finally:
        handler.gate.set()
        await worker.stop(grace=5)
    assert handler.handled == ["seed", "block", "a", "b"]
    assert worker.stats.lease_lost == 0
    done = await rows(store, ids)
    assert all(row.archived_at is not None and row.read_ct == 1 for row in done.values())


async def test_a_message_claimed_ahead_whose_lease_was_lost_does_not_start(
    store: pgqrs.Store, wait_until: Any
) -> None:
    """No heartbeat: the leases of the messages waiting lapse and another worker takes them.
    Before starting each, the worker checks its lease (one fenced extension, since its own
    record of it has lapsed) and finds it gone: their handlers never run here."""
    await store.create_queue("ahead")
    handler = Blocking()
    worker = await quick_worker(
        store, wait_until, handler, visibility_timeout=1.0, heartbeat_interval=3600, batch_size=3
    )
    other = await pgqrs.consumer("w2", None, "ahead").handler(Blocking()).create(store)
    try:
        ids = await store.queue("ahead").enqueue_batch(["block", "a", "b"])
        await asyncio.wait_for(handler.started.wait(), 30)
        claim_vt = max(aware(row.vt) for row in (await rows(store, ids)).values())

        async def lapsed() -> bool:
            return bool(await db_now(store) > claim_vt)

        await wait_until(lapsed)
        taken = await other.dequeue(3)
        assert [m.payload for m in taken] == ["block", "a", "b"]
        handler.gate.set()
        await wait_until(lambda: worker.stats.lease_lost == 3)  # a, b not started; block unacked
        for msg in taken:
            await other.archive(msg)
    finally:
        handler.gate.set()
        await worker.stop(grace=5)
        await other.stop(grace=5)
    assert handler.handled == ["seed", "block"]
    assert worker.stats.completed == 1


async def test_a_batch_acknowledgement_skips_a_message_whose_lease_was_lost(
    store: pgqrs.Store, wait_until: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """'quick' is handled, then waits for its batch's acknowledgement while 'block' runs; its
    lease lapses and another worker takes it. The batch's one statement acknowledges what the
    worker still holds and leaves 'quick' to its new holder."""
    monkeypatch.setattr(_plain_messages, "ACK_DELAY", 3600.0)  # one ack, at the batch's end
    await store.create_queue("ahead")
    handler = Blocking()
    # batch_size 2: holding both, the worker does not claim the lapsed 'quick' back itself
    worker = await quick_worker(
        store, wait_until, handler, visibility_timeout=1.0, heartbeat_interval=3600, batch_size=2
    )
    other = await pgqrs.consumer("w2", None, "ahead").handler(Blocking()).create(store)
    try:
        quick, block = await store.queue("ahead").enqueue_batch(["quick", "block"])
        await asyncio.wait_for(handler.started.wait(), 30)
        claim_vt = aware((await rows(store, [quick]))[quick].vt)

        async def lapsed() -> bool:
            return bool(await db_now(store) > claim_vt)

        await wait_until(lapsed)
        [taken] = await other.dequeue(1)
        assert taken.id == quick
        handler.gate.set()
        await wait_until(lambda: worker.stats.lease_lost == 1)
        by_id = await rows(store, [quick, block])
        assert by_id[quick].archived_at is None  # not acknowledged by the batch
        assert by_id[quick].consumer_worker_id == other.id
        assert by_id[block].archived_at is not None
        await other.archive(taken)
    finally:
        handler.gate.set()
        await worker.stop(grace=5)
        await other.stop(grace=5)
    assert handler.handled == ["seed", "quick", "block"]
    assert worker.stats.completed == 2  # seed, block


async def test_messages_handled_are_acknowledged_while_a_slow_one_runs(
    store: pgqrs.Store, wait_until: Any
) -> None:
    """The batch's acknowledgement does not wait for its slowest handler (ACK_DELAY)."""
    await store.create_queue("ahead")
    handler = Blocking()
    worker = await quick_worker(store, wait_until, handler)
    try:
        a, b, block = await store.queue("ahead").enqueue_batch(["a", "b", "block"])
        await asyncio.wait_for(handler.started.wait(), 30)

        async def acknowledged() -> bool:
            by_id = await rows(store, [a, b])
            return all(row.archived_at is not None for row in by_id.values())

        await wait_until(acknowledged)
        assert (await rows(store, [block]))[block].archived_at is None
    finally:
        handler.gate.set()
        await worker.stop(grace=5)
    assert (await rows(store, [block]))[block].archived_at is not None


async def test_stop_gives_back_the_messages_not_started_at_once(
    store: pgqrs.Store, wait_until: Any
) -> None:
    await store.create_queue("ahead")
    handler = Blocking()
    worker = await quick_worker(store, wait_until, handler)
    ids = await store.queue("ahead").enqueue_batch(["block", "a", "b"])
    await asyncio.wait_for(handler.started.wait(), 30)
    assert set(worker._inflight) == set(ids)
    stopping = asyncio.create_task(worker.stop(grace=30))
    await wait_until(lambda: worker._stopping.is_set())
    handler.gate.set()
    await stopping
    assert handler.handled == ["seed", "block"]
    by_id = await rows(store, ids)
    assert by_id[ids[0]].archived_at is not None
    for message_id in ids[1:]:  # visible now, their delivery not counted as failed
        row = by_id[message_id]
        assert row.archived_at is None and row.consumer_worker_id is None
        assert row.failed_ct == 0
    [stats] = await store.queue_stats("ahead")
    assert stats.ready == 2


def journaled(journal: Path) -> list[str]:
    lines = journal.read_text().splitlines() if journal.exists() else []
    return [json.loads(line)["payload"] for line in lines]


async def test_a_killed_worker_s_messages_claimed_ahead_come_back_when_their_leases_end(
    store: pgqrs.Store, db_url: str, tmp_path: Path, wait_until: Any
) -> None:
    """A worker process holding 'a' and 'b' claimed ahead (behind 'block') is SIGKILLed: no
    one gives them back, and another worker gets them once their leases (1 s) expire — each
    delivery of the dead worker counted as a failed one."""
    await store.create_queue("ahead")
    journal = tmp_path / "journal"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(PROC),
        db_url,
        str(journal),
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        await store.queue("ahead").enqueue("seed")
        await wait_until(lambda: journaled(journal) == ["seed"])
        ids = await store.queue("ahead").enqueue_batch(["block", "a", "b"])

        async def held_by_it() -> bool:
            by_id = await rows(store, ids)
            claimed = all(row.consumer_worker_id is not None for row in by_id.values())
            return claimed and journaled(journal) == ["seed", "block"]

        await wait_until(held_by_it)
        proc.kill()
        await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    handled: list[str] = []

    async def record(message: pgqrs.Message) -> None:
        handled.append(message.payload)

    other = await pgqrs.consumer("w2", None, "ahead").handler(record).create(store)
    async with other:
        await wait_until(lambda: len(handled) == 3)
    assert sorted(handled) == ["a", "b", "block"]
    assert journaled(journal) == ["seed", "block"]  # a and b never ran in the killed worker
    for row in (await rows(store, ids)).values():
        assert row.archived_at is not None
        assert (row.read_ct, row.failed_ct) == (2, 1)


async def test_a_run_claimed_ahead_runs_after_the_one_before_it(
    store: pgqrs.Store, wait_until: Any
) -> None:
    """Workflow runs are claimed ahead as well: concurrency 1 still runs one at a time."""
    await store.create_workflow("ahead_wf")
    gate, started = asyncio.Event(), asyncio.Event()
    order: list[int] = []
    running = [0, 0]

    async def handler(ctx: pgqrs.RunContext, params: Any) -> int:
        running[0] += 1
        running[1] = max(running)
        try:
            order.append(params)
            if params == 1:
                started.set()
                await gate.wait()
            return int(await ctx.step("s", lambda: params))
        finally:
            running[0] -= 1

    worker = await pgqrs.consumer("w1", None, "ahead_wf").handler(handler).create(store)
    worker.start()
    try:
        seed = await pgqrs.workflow("ahead_wf").trigger(0).execute(store)
        assert await store.wait_for_run(seed, timeout=30) == 0
        async with store._begin() as conn:  # all three ready at once
            run_ids = [await pgqrs.workflow("ahead_wf").trigger(i).execute(conn) for i in (1, 2, 3)]
        await asyncio.wait_for(started.wait(), 30)
        await wait_until(lambda: len(worker._inflight) == 3)  # 2 and 3 claimed ahead
        gate.set()
        for i, run_id in zip((1, 2, 3), run_ids, strict=True):
            assert await store.wait_for_run(run_id, timeout=30) == i
    finally:
        gate.set()
        await worker.stop(grace=5)
    assert order == [0, 1, 2, 3]
    assert running[1] == 1


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "10"])
async def test_a_bad_batch_size_is_a_validation_error(store: pgqrs.Store, bad: Any) -> None:
    await store.create_queue("ahead")
    with pytest.raises(pgqrs.ValidationError, match="batch_size") as caught:
        await pgqrs.consumer("w1", None, "ahead").handler(Blocking()).create(store, batch_size=bad)
    assert caught.value.option == "batch_size"
