"""Operating a deployment through the store: worker rows (their queues, pruning stopped
ones) and replaying dead letters by id."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

import pgqrs_sqla as pgqrs


async def handler(message: Any) -> None:
    return None


async def make_worker(store: pgqrs.Store, name: str, *queues: str) -> pgqrs.Worker:
    for queue in queues:
        await store.create_queue(queue, max_deliveries=1)
    builder = pgqrs.consumer(name, None, *queues)
    for queue in queues:
        builder.handler(handler, queue=queue)
    return await builder.create(store, own_pool=False)


async def age_stopped_rows(store: pgqrs.Store, days: float) -> None:
    """Make every stopped worker row look stopped ``days`` ago (the database's clock)."""
    w = store.tables.workers
    async with store._begin() as conn:
        stopped = await conn.execute(
            select(w.c.id, w.c.stopped_at).where(w.c.stopped_at.is_not(None))
        )
        for worker_id, stopped_at in stopped.all():
            await conn.execute(
                update(w)
                .where(w.c.id == worker_id)
                .values(stopped_at=stopped_at - timedelta(days=days))
            )


async def names(store: pgqrs.Store) -> list[str]:
    return [w.name for w in await store.list_workers()]


async def test_list_workers_shows_every_queue_a_worker_serves_idle_or_not(
    store: pgqrs.Store,
) -> None:
    worker = await make_worker(store, "multi", "flaky", "emails")
    [info] = await store.list_workers()
    assert (info.queue, info.queues) == ("flaky", ["flaky", "emails"])  # idle: its row says
    await store.queue("emails").enqueue({"to": "x"})
    [msg] = await worker.dequeue(1, queue="emails")
    [info] = await store.list_workers()
    assert (info.queue, info.queues) == ("flaky", ["flaky", "emails"])
    await worker.archive(msg)
    await worker.stop(grace=5)
    [info] = await store.list_workers()
    assert (info.status, info.queues) == ("stopped", ["flaky", "emails"])


async def test_list_workers_on_a_row_without_its_queues_adds_those_of_held_messages(
    store: pgqrs.Store,
) -> None:
    """A row written before pgqrs 0003 records only its first queue (``queues`` NULL)."""
    worker = await make_worker(store, "old", "flaky", "emails")
    w = store.tables.workers
    async with store._begin() as conn:
        await conn.execute(update(w).where(w.c.id == worker.id).values(queues=None))
    [info] = await store.list_workers()
    assert (info.queue, info.queues) == ("flaky", ["flaky"])
    await store.queue("emails").enqueue({"to": "x"})
    [msg] = await worker.dequeue(1, queue="emails")
    [info] = await store.list_workers()
    assert info.queues == ["flaky", "emails"]
    await worker.archive(msg)
    await worker.stop(grace=5)


async def test_prune_workers_deletes_only_old_stopped_rows_holding_nothing(
    store: pgqrs.Store,
) -> None:
    old = await make_worker(store, "old", "q")
    holder = await make_worker(store, "holder", "q")
    recent = await make_worker(store, "recent", "q")
    running = await make_worker(store, "running", "q")
    done_id = await store.queue("q").enqueue({"n": 1})
    held_id = await store.queue("q").enqueue({"n": 2})
    [done] = await old.dequeue(1)
    assert done.id == done_id
    await old.archive(done)  # archived history of a worker that is then pruned
    [held] = await holder.dequeue(1)
    assert held.id == held_id
    for w in (old, holder):
        await w.stop(grace=5)  # the holder stops with its message still leased to it...
    m = store.tables.messages
    async with store._begin() as conn:  # ...as after a crash: the row still points at it
        await conn.execute(update(m).where(m.c.id == held_id).values(consumer_worker_id=holder.id))
    await age_stopped_rows(store, days=30)
    await recent.stop(grace=5)  # stopped just now

    assert await store.prune_workers(older_than=timedelta(days=7), dry_run=True) == 1
    assert await names(store) == ["holder", "old", "recent", "running"]
    assert await store.prune_workers(older_than=timedelta(days=7)) == 1
    assert await names(store) == ["holder", "recent", "running"]
    async with store._read() as conn:
        consumer = (
            await conn.execute(select(m.c.consumer_worker_id).where(m.c.id == done_id))
        ).scalar_one()
        # The archived message stays and keeps its worker's id (not a foreign key, so the
        # row's delete read no message: pgqrs_0010).
        assert consumer == old.id
    assert await store.prune_workers(older_than=0) == 1  # "recent"; never "holder"
    assert await names(store) == ["holder", "running"]
    await running.stop(grace=5)


async def test_a_registering_worker_prunes_stopped_rows_past_the_retention(
    store: pgqrs.Store,
) -> None:
    for name in ("host-1", "host-2"):
        await (await make_worker(store, name, "q")).stop(grace=5)
    await age_stopped_rows(store, days=8)
    await (await make_worker(store, "host-3", "q")).stop(grace=5)  # stopped just now
    newcomer = await make_worker(store, "host-4", "q")
    assert await names(store) == ["host-3", "host-4"]
    await newcomer.stop(grace=5)


@pytest.mark.parametrize("bad", [-1, float("nan"), "7d", True])
async def test_prune_workers_rejects_a_bad_retention(store: pgqrs.Store, bad: Any) -> None:
    with pytest.raises(pgqrs.ValidationError, match="older_than"):
        await store.prune_workers(older_than=bad)


async def test_replaying_an_id_that_is_not_a_dead_letter_is_an_error(
    store: pgqrs.Store,
) -> None:
    worker = await make_worker(store, "mail", "emails")
    dead_id = await store.queue("emails").enqueue({"to": "x"})
    [msg] = await worker.dequeue(1)
    await worker.fail(msg, "smtp down")
    with pytest.raises(pgqrs.DeadLetterNotFound, match=r"no dead letter 77 in queue 'emails'") as e:
        await store.replay_dead_letters("emails", [dead_id, 77])
    assert (e.value.queue, e.value.message_ids) == ("emails", [77])
    # all or nothing: the dead letter that exists was not replayed either
    assert [d.id for d in await store.dead_letters("emails")] == [dead_id]
    assert await store.replay_dead_letters("emails", [dead_id]) == [dead_id]
    m = store.tables.messages
    async with store._read() as conn:
        live = await conn.execute(select(func.count()).where(m.c.archived_at.is_(None)))
        assert live.scalar_one() == 1
    await worker.stop(grace=5)
