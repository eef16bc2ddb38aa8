"""Retention: finished runs, archived messages and stopped worker rows deleted once old enough.

On both backends: the store's default retention and error retention, a workflow's and a
queue's own, ``dry_run``, more runs than one batch, a worker pruning in the background, an
app's ``run_fk()`` row set to NULL, an idempotency key free again once its run is pruned, and
bad input refused with nothing written. On PostgreSQL: a prune batch held open blocks
neither a trigger nor a claim.

A run is made old by moving its ``finished_at`` (and its message's ``archived_at``) back:
the test's setup of history, as the clock would after days.
"""

from __future__ import annotations

import asyncio
import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import ForeignKey, Integer, MetaData, func, select, update
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import pgqrs_sqla as pgqrs
from pgqrs_sqla import RunStatus
from tests._cli import run_cli


async def _count(store: pgqrs.Store, table: Any, *where: Any) -> int:
    async with store.engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(table).where(*where)) or 0)


async def _age(store: pgqrs.Store, run_ids: list[int], by: timedelta) -> None:
    """Move the runs' end (and their messages' archiving) ``by`` into the past."""
    r, m = store.tables.runs, store.tables.messages
    when = datetime.now(UTC) - by
    async with store.engine.begin() as conn:
        await conn.execute(update(r).where(r.c.id.in_(run_ids)).values(finished_at=when))
        ids = select(r.c.message_id).where(r.c.id.in_(run_ids)).scalar_subquery()
        await conn.execute(update(m).where(m.c.id.in_(ids)).values(archived_at=when))


async def _age_workers(store: pgqrs.Store, by: timedelta) -> None:
    """Move every stopped worker's ``stopped_at`` ``by`` into the past."""
    w = store.tables.workers
    async with store.engine.begin() as conn:
        await conn.execute(
            update(w).where(w.c.stopped_at.is_not(None)).values(stopped_at=datetime.now(UTC) - by)
        )


async def _run_to_end(store: pgqrs.Store, workflow: str, handler: Any, n: int) -> list[int]:
    """Trigger ``n`` runs of ``workflow`` and let a worker end them all."""
    ids = [await pgqrs.workflow(workflow).trigger({"i": i}).execute(store) for i in range(n)]
    worker = (
        await pgqrs.consumer(f"runner-{workflow}", None, workflow)
        .handler(handler)
        .create(store, poll_interval=0.05)
    )
    worker.start()
    try:
        for run_id in ids:
            await store.wait_for_status(run_id, *_ENDED, timeout=30)
    finally:
        await worker.stop(grace=5)
    return ids


_ENDED = (RunStatus.SUCCESS, RunStatus.ERROR, RunStatus.CANCELLED)


async def _newer_run(store: pgqrs.Store) -> int:
    """A run newer than the history, not finished: on SQLite the newest run and message are
    never pruned (SQLite would hand their ids out again), so the history is not the newest."""
    return await pgqrs.workflow("later").trigger({"i": 0}).execute(store)


async def _stepper(ctx: pgqrs.RunContext, params: Any) -> Any:
    await ctx.step("one", lambda: 1)
    return params["i"]


async def _failer(ctx: pgqrs.RunContext, params: Any) -> Any:
    await ctx.step("one", lambda: 1)
    raise ValueError("bad input")


async def _exists(store: pgqrs.Store, run_id: int) -> bool:
    try:
        await store.get_run(run_id)
    except pgqrs.RunNotFound:
        return False
    return True


async def test_default_retention_keeps_errors_longer(store: pgqrs.Store) -> None:
    await store.create_workflow("ok")
    await store.create_workflow("bad", retry=pgqrs.RetryPolicy(max_attempts=1))
    done = await _run_to_end(store, "ok", _stepper, 3)
    failed = await _run_to_end(store, "bad", _failer, 2)
    waiting = await pgqrs.workflow("ok").trigger({"i": 9}).execute(store)  # never runs
    r, s, m = store.tables.runs, store.tables.steps, store.tables.messages
    assert await _count(store, s, s.c.run_id.in_(done + failed)) == 5

    await _age(store, done + failed, timedelta(days=6))
    assert await store.prune() == pgqrs.PruneResult(0, 0, 0)

    await _age(store, done + failed, timedelta(days=8))  # past 7 days, not 30
    result = await store.prune()
    assert (result.runs, result.messages) == (3, 3)
    assert [await _exists(store, i) for i in done + failed] == [False] * 3 + [True] * 2
    assert await _count(store, s, s.c.run_id.in_(done)) == 0  # steps went with their runs
    assert await _count(store, s, s.c.run_id.in_(failed)) == 2
    assert await _count(store, r, r.c.id == waiting) == 1  # unfinished: never pruned

    await _age(store, failed, timedelta(days=31))
    result = await store.prune()
    assert (result.runs, result.messages) == (2, 2)
    assert await _count(store, r) == 1
    assert await _count(store, m) == 1  # the waiting run's message only
    assert (await store.get_run(waiting)).status == RunStatus.QUEUED


async def test_a_workflows_own_retention_overrides_the_stores(store: pgqrs.Store) -> None:
    info = await store.create_workflow(
        "brief", retention=timedelta(hours=1), error_retention=timedelta(hours=2)
    )
    assert (info.retention, info.error_retention) == (3600.0, 7200.0)
    listed = {w.name: w for w in await store.list_workflows()}
    assert listed["brief"].retention == 3600.0
    await store.create_workflow("long", retention=timedelta(days=60))
    short = await _run_to_end(store, "brief", _stepper, 2)
    long = await _run_to_end(store, "long", _stepper, 1)
    await store.create_workflow("brief", retry=pgqrs.RetryPolicy(max_attempts=1))
    assert (await store.get_workflow("brief")).retention == 3600.0  # kept when left out
    failed = await _run_to_end(store, "brief", _failer, 1)
    await _newer_run(store)

    await _age(store, short + failed + long, timedelta(minutes=90))
    assert (await store.prune()).runs == 2  # the successes; the error is kept 2 hours
    await _age(store, failed + long, timedelta(days=10))
    assert (await store.prune()).runs == 1  # the error; the 60-day workflow keeps its run
    assert await _exists(store, long[0])


async def test_dry_run_counts_and_deletes_nothing(store: pgqrs.Store) -> None:
    await store.create_workflow("ok")
    ids = await _run_to_end(store, "ok", _stepper, 4)
    await _newer_run(store)
    await _age(store, ids, timedelta(days=8))
    await _age_workers(store, timedelta(days=8))
    dry = await store.prune(dry_run=True)
    assert dry == pgqrs.PruneResult(runs=4, messages=4, workers=1, dry_run=True)
    assert all([await _exists(store, i) for i in ids])
    assert len(await store.list_workers()) == 1
    assert await store.prune() == pgqrs.PruneResult(runs=4, messages=4, workers=1)
    assert await store.prune(dry_run=True) == pgqrs.PruneResult(0, 0, 0, dry_run=True)


async def _bulk_history(store: pgqrs.Store, workflow: str, n: int, age: timedelta) -> None:
    """``n`` runs of ``workflow`` ended SUCCESS ``age`` ago, with archived messages."""
    info = await store.create_workflow(workflow)
    m, r = store.tables.messages, store.tables.runs
    when = datetime.now(UTC) - age
    async with store.engine.begin() as conn:
        for _ in range(n):
            message_id = (
                await conn.execute(
                    m.insert()
                    .values(queue_id=info.queue_id, payload={}, archived_at=when)
                    .returning(m.c.id)
                )
            ).scalar_one()
            await conn.execute(
                r.insert().values(
                    workflow_id=info.id,
                    message_id=message_id,
                    status=RunStatus.SUCCESS.value,
                    finished_at=when,
                )
            )


async def test_more_runs_than_one_batch_are_pruned_in_batches(store: pgqrs.Store) -> None:
    await _bulk_history(store, "bulk", 250, timedelta(days=8))
    newer = await _newer_run(store)
    assert await store.prune(batch_size=100) == pgqrs.PruneResult(250, 250, 0)
    assert await _count(store, store.tables.runs) == 1
    assert await _exists(store, newer)
    assert await _count(store, store.tables.messages) == 1


async def test_archived_plain_messages_follow_their_queues_retention(store: pgqrs.Store) -> None:
    await store.create_queue("plain")
    kept = await store.create_queue("kept", retention=timedelta(days=60))
    assert kept.retention == 86400.0 * 60
    assert (await store.get_queue("kept")).retention == 86400.0 * 60
    m = store.tables.messages
    old = [await store.queue(q).enqueue({"n": 1}) for q in ("plain", "plain", "kept")]
    live = await store.queue("plain").enqueue({"n": 2})
    async with store.engine.begin() as conn:
        await conn.execute(
            update(m)
            .where(m.c.id.in_(old))
            .values(archived_at=datetime.now(UTC) - timedelta(days=8))
        )
    assert (await store.prune(dry_run=True)).messages == 2
    assert (await store.prune()).messages == 2
    async with store.engine.connect() as conn:
        assert set((await conn.execute(select(m.c.id))).scalars()) == {old[2], live}


async def test_stopped_worker_rows_follow_the_store_retention(store: pgqrs.Store) -> None:
    async def handler(message: Any) -> None:
        return None

    await store.create_queue("q")
    gone = await pgqrs.consumer("gone", None, "q").handler(handler).create(store, own_pool=False)
    await gone.stop(grace=5)
    assert (await store.prune()).workers == 0  # stopped just now
    await _age_workers(store, timedelta(days=8))
    assert (await store.prune()).workers == 1
    assert await store.list_workers() == []


async def test_a_pruned_runs_idempotency_key_can_be_used_again(store: pgqrs.Store) -> None:
    await store.create_workflow("keyed")
    trigger = pgqrs.workflow("keyed").trigger({"i": 1}, idempotency_key="order-7")
    first = await trigger.execute(store)
    assert await trigger.execute(store) == first
    await _newer_run(store)
    worker = await pgqrs.consumer("k", None, "keyed").handler(_stepper).create(store)
    worker.start()
    await store.wait_for_run(first, timeout=30)
    await worker.stop(grace=5)
    await _age(store, [first], timedelta(days=6))
    await store.prune()
    assert await trigger.execute(store) == first  # honoured while its run is kept
    await _age(store, [first], timedelta(days=8))
    assert (await store.prune()).runs == 1
    second = await trigger.execute(store)
    assert second != first
    assert (await store.get_run(second)).status == RunStatus.QUEUED


async def test_a_running_worker_prunes_in_the_background(db_url: str, wait_until: Any) -> None:
    store = await pgqrs.connect(db_url, prune_interval=0.2)
    try:
        await _bulk_history(store, "history", 30, timedelta(days=8))
        m = store.tables.messages
        await store.create_queue("plain")
        archived = await store.queue("plain").enqueue({})
        async with store.engine.begin() as conn:
            await conn.execute(
                update(m)
                .where(m.c.id == archived)
                .values(archived_at=datetime.now(UTC) - timedelta(days=8))
            )
        newer = await _newer_run(store)
        worker = (
            await pgqrs.consumer("pruner", None, "history")
            .handler(_stepper)
            .create(store, poll_interval=0.05, heartbeat_interval=0.05)
        )
        worker.start()
        try:
            await wait_until(_only_left(store, newer), timeout=30)
            # It keeps serving meanwhile: a new run succeeds and is kept (finished just now).
            run_id = await pgqrs.workflow("history").trigger({"i": 5}).execute(store)
            assert await store.wait_for_run(run_id, timeout=30) == 5
        finally:
            await worker.stop(grace=5)
        assert await _exists(store, run_id)
    finally:
        await store.close()


def _only_left(store: pgqrs.Store, run_id: int) -> Any:
    """Whether the run ``run_id`` and its message are all that is left."""

    async def check() -> bool:
        r, m = store.tables.runs, store.tables.messages
        message = select(r.c.message_id).where(r.c.id == run_id).scalar_subquery()
        return (
            await _count(store, r, r.c.id != run_id) == 0
            and await _count(store, m, m.c.id != message) == 0
        )

    return check


async def test_an_app_row_with_run_fk_is_kept_with_its_column_set_to_null(
    db_url: str, backend: str
) -> None:
    """The app's foreign key decides: ``run_fk()`` (ON DELETE SET NULL) lets the run go and
    keeps the row with NULL; a plain key (no ON DELETE: the database would refuse) keeps the
    run it points at, and the rest of the batch is pruned."""

    class _AppBase(DeclarativeBase):
        metadata = MetaData()

    models = pgqrs.pgqrs_models(_AppBase)

    class Order(_AppBase):
        __tablename__ = "orders_kept"
        id: Mapped[int] = mapped_column(Integer, primary_key=True)
        run_id: Mapped[int | None] = mapped_column(models.run_fk(), nullable=True)

    class Invoice(_AppBase):
        __tablename__ = "invoices_strict"
        id: Mapped[int] = mapped_column(Integer, primary_key=True)
        run_id: Mapped[int | None] = mapped_column(ForeignKey("pgqrs_workflow_runs.id"))

    store = await pgqrs.connect(db_url, models=models)
    try:
        await store.install()
        async with store.engine.begin() as conn:
            await conn.run_sync(_AppBase.metadata.create_all)
        await store.create_workflow("ordered")
        ordered, invoiced, plain = await _run_to_end(store, "ordered", _stepper, 3)
        await _newer_run(store)
        orders, invoices = Order.__table__, Invoice.__table__  # type: ignore[attr-defined]
        async with store.engine.begin() as conn:
            await conn.execute(orders.insert().values(id=1, run_id=ordered))
            await conn.execute(invoices.insert().values(id=1, run_id=invoiced))
        await _age(store, [ordered, invoiced, plain], timedelta(days=8))
        assert (await store.prune(dry_run=True)).runs == 2
        assert (await store.prune()).runs == 2
        assert [await _exists(store, i) for i in (ordered, invoiced, plain)] == [
            False,
            True,
            False,
        ]
        async with store.engine.connect() as conn:
            assert (await conn.execute(select(orders.c.id, orders.c.run_id))).all() == [(1, None)]
            assert (await conn.execute(select(invoices.c.run_id))).scalars().all() == [invoiced]
    finally:
        await store.close()


@pytest.mark.parametrize("bad", [-1, 0, math.nan, math.inf, timedelta(0), "7d"])
async def test_bad_retentions_are_duration_errors_and_write_nothing(
    store: pgqrs.Store, db_url: str, bad: Any
) -> None:
    for option in ("retention", "error_retention"):
        with pytest.raises(pgqrs.DurationError) as caught:
            await store.create_workflow("never", **{option: bad})
        assert caught.value.option == option
        with pytest.raises(pgqrs.DurationError):
            await pgqrs.connect(db_url, **{option: bad})
    with pytest.raises(pgqrs.DurationError):
        await store.create_queue("never", retention=bad)
    with pytest.raises(pgqrs.DurationError):
        await pgqrs.connect(db_url, prune_interval=bad)
    assert await store.list_workflows() == []
    assert await store.list_queues() == []


async def test_a_retention_shorter_than_the_timeout_is_refused(store: pgqrs.Store) -> None:
    with pytest.raises(pgqrs.RetentionTooShort) as caught:
        await store.create_workflow("slow", timeout=timedelta(hours=2), retention=3600)
    assert (caught.value.option, caught.value.value, caught.value.timeout) == (
        "retention",
        3600.0,
        7200.0,
    )
    assert await store.list_workflows() == []  # nothing written, not even the workflow
    await store.create_workflow("slow", timeout=timedelta(hours=2), retention=timedelta(hours=3))
    with pytest.raises(pgqrs.RetentionTooShort) as caught:
        await store.create_workflow("slow", error_retention=timedelta(hours=1))
    assert caught.value.option == "error_retention"
    with pytest.raises(pgqrs.RetentionTooShort):
        await store.create_workflow("slow", timeout=timedelta(hours=4))  # past its retention
    info = await store.get_workflow("slow")
    assert (info.timeout, info.retention, info.error_retention) == (7200.0, 10800.0, None)
    with pytest.raises(pgqrs.ValidationError):
        await store.prune(batch_size=0)


async def test_cli_prune_and_its_dry_run(store: pgqrs.Store, db_url: str) -> None:
    await _bulk_history(store, "cli", 3, timedelta(days=8))
    await _newer_run(store)
    dry = await asyncio.to_thread(run_cli, "--database-url", db_url, "prune", "--dry-run")
    assert (dry.returncode, dry.stdout.strip()) == (
        0,
        "would prune 3 run(s), 3 archived message(s) and 0 stopped worker row(s)",
    )
    done = await asyncio.to_thread(run_cli, "--database-url", db_url, "--json", "prune")
    assert json.loads(done.stdout) == {
        "ok": True,
        "runs": 3,
        "messages": 3,
        "workers": 0,
        "dry_run": False,
    }
    assert await _count(store, store.tables.runs) == 1


async def test_a_prune_batch_held_open_blocks_no_trigger_or_claim(
    store: pgqrs.Store, backend: str
) -> None:
    if backend != "postgresql":
        pytest.skip("SQLite has one writer at a time: a prune batch and a claim take turns")
    await _bulk_history(store, "busy", 50, timedelta(days=8))
    worker = await pgqrs.consumer("claimer", None, "busy").handler(_stepper).create(store)
    try:
        async with store.engine.connect() as conn, conn.begin():
            batch = await store._prune_batch(conn, 500)  # rows deleted, locks held
            assert batch.runs == 50
            # Meanwhile, in other transactions: a trigger commits, and its run is claimed.
            run_id = await asyncio.wait_for(
                pgqrs.workflow("busy").trigger({"i": 1}).execute(store), timeout=5
            )
            claimed = await asyncio.wait_for(worker.dequeue(1, queue="busy"), timeout=5)
            assert [msg.id for msg in claimed] == [(await store.get_run(run_id)).message_id]
            # Another prune skips what this one holds rather than waiting for it.
            other = await asyncio.wait_for(store.prune(), timeout=5)
            assert other.runs == 0
        assert await _count(store, store.tables.runs) == 1  # the new run, still RUNNING
    finally:
        await worker.stop(grace=5)


async def test_on_sqlite_the_newest_run_and_message_are_kept(
    store: pgqrs.Store, backend: str
) -> None:
    """SQLite hands out the largest deleted rowid again: a prune there never deletes the
    newest run or message, so a new run never gets a pruned run's id. PostgreSQL's
    sequences never go back: everything old goes."""
    await store.create_workflow("lone")
    [run_id] = await _run_to_end(store, "lone", _stepper, 1)
    await _age(store, [run_id], timedelta(days=8))
    result = await store.prune()
    if backend == "sqlite":
        assert (result.runs, result.messages) == (0, 0)
        assert await _exists(store, run_id)
        newer = await _newer_run(store)
        assert newer > run_id
        assert (await store.prune()).runs == 1  # no longer the newest
    else:
        assert (result.runs, result.messages) == (1, 1)
        assert await _newer_run(store) > run_id


async def test_one_worker_prunes_at_a_time_on_postgresql(store: pgqrs.Store, backend: str) -> None:
    """While one transaction holds the prune lock, a worker's background round skips its
    turn at once (it does not wait); on-demand ``prune()`` does not take the lock."""
    if backend != "postgresql":
        pytest.skip("SQLite's one write lock serialises prunes: there is no lock to try")
    await _bulk_history(store, "history", 20, timedelta(days=8))
    await _newer_run(store)
    gate = store.dialect.try_prune_lock()
    assert gate is not None
    async with store.engine.connect() as conn, conn.begin():
        assert (await conn.execute(select(gate))).scalar_one() is True  # another worker's round
        skipped = await asyncio.wait_for(store._prune_round("second"), timeout=5)
        assert (skipped.runs, skipped.messages) == (0, 0)
    done = await store._prune_round("second")  # the lock went with that transaction
    assert (done.runs, done.messages) == (20, 20)
