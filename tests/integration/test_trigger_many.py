"""``workflow(name).trigger_many([...])`` on both backends: N runs and their messages in the
caller's transaction (committed and rolled back), the run ids in order, idempotency keys per
item (new, repeated, within one call), the sync entry point, limits and bad input."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

import pgqrs_sqla as pgqrs
from pgqrs_sqla import RunStatus


async def _count(store: pgqrs.Store, table: Any) -> int:
    async with store._read() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def _inputs(store: pgqrs.Store, ids: list[int]) -> list[Any]:
    return [(await store.get_run(run_id)).input for run_id in ids]


async def test_runs_in_order_committed_with_the_app_writes(store: pgqrs.Store) -> None:
    await store.create_workflow("wf")
    async with store._begin() as conn:
        await conn.execute(text("CREATE TABLE app_rows (id INTEGER PRIMARY KEY, note TEXT)"))
    sessions = async_sessionmaker(store.engine)
    params = [{"i": i} for i in range(25)]
    async with sessions() as session, session.begin():
        await session.execute(text("INSERT INTO app_rows (id, note) VALUES (1, 'order')"))
        ids = await pgqrs.workflow("wf").trigger_many(params).execute(session)
        # seen in the caller's transaction before it commits
        assert (await store.get_run(ids[3], target=session)).status is RunStatus.QUEUED
    assert len(ids) == len(set(ids)) == 25
    assert await _inputs(store, ids) == params
    assert await _count(store, store.tables.runs) == 25
    assert await _count(store, store.tables.messages) == 25
    m, r = store.tables.messages, store.tables.runs
    async with store._read() as conn:
        pairs = (await conn.execute(select(r.c.id, r.c.message_id))).all()
        queued = (await conn.execute(select(func.count()).select_from(m))).scalar_one()
    assert len({message_id for _, message_id in pairs}) == 25 == queued


async def test_rollback_leaves_no_run_and_no_message(store: pgqrs.Store) -> None:
    await store.create_workflow("wf")
    sessions = async_sessionmaker(store.engine)
    async with sessions() as session, session.begin():
        ids = (
            await pgqrs.workflow("wf")
            .trigger_many([1, 2, 3], idempotency_keys=["a", None, "b"])
            .execute(session)
        )
        assert len(ids) == 3
        await session.rollback()
    assert await _count(store, store.tables.runs) == 0
    assert await _count(store, store.tables.messages) == 0
    # the keys are free again: the rolled-back runs took nothing with them
    again = (
        await pgqrs.workflow("wf").trigger_many([4, 5], idempotency_keys=["a", "b"]).execute(store)
    )
    assert await _inputs(store, again) == [4, 5]


async def test_idempotency_keys_new_and_repeated(store: pgqrs.Store) -> None:
    await store.create_workflow("wf")
    ref = pgqrs.workflow("wf")
    first = await ref.trigger({"n": 0}, idempotency_key="k0").execute(store)
    ids = await ref.trigger_many(
        [{"n": 1}, {"n": 2}, {"n": 3}, {"n": 4}], idempotency_keys=["k1", "k0", None, "k3"]
    ).execute(store)
    assert ids[1] == first
    assert len(set(ids)) == 4
    assert await _inputs(store, ids) == [{"n": 1}, {"n": 0}, {"n": 3}, {"n": 4}]
    # a second call with the same keys writes nothing new, in the caller's transaction too
    sessions = async_sessionmaker(store.engine)
    async with sessions() as session, session.begin():
        again = await ref.trigger_many(
            [{"n": 9}, {"n": 9}, {"n": 9}], idempotency_keys=["k3", "k1", "k0"]
        ).execute(session)
        assert (await session.execute(text("SELECT 1"))).scalar() == 1  # still usable
    assert again == [ids[3], ids[0], first]
    assert await _count(store, store.tables.runs) == 4
    assert await _count(store, store.tables.messages) == 4
    # a single trigger sees the keys trigger_many wrote
    assert await ref.trigger({"n": 7}, idempotency_key="k3").execute(store) == ids[3]


async def test_bad_input_is_refused_before_anything_is_written(store: pgqrs.Store) -> None:
    await store.create_workflow("wf")
    ref = pgqrs.workflow("wf")
    with pytest.raises(pgqrs.DuplicateIdempotencyKey) as dup:
        ref.trigger_many([1, 2, 3], idempotency_keys=["a", "b", "a"])
    assert dup.value.key == "a" and dup.value.positions == (0, 2)
    assert isinstance(dup.value, pgqrs.ValidationError)
    assert dup.value.option == "idempotency_keys"
    with pytest.raises(pgqrs.ValidationError, match="2 entries for 3 params") as short:
        ref.trigger_many([1, 2, 3], idempotency_keys=["a", "b"])
    assert short.value.option == "idempotency_keys"
    with pytest.raises(pgqrs.ValidationError, match="concurrency_keys"):
        ref.trigger_many([1], concurrency_keys=["a", "b"])
    with pytest.raises(pgqrs.ValidationError, match="list of params"):
        ref.trigger_many({"a": 1})  # type: ignore[arg-type]
    with pytest.raises(pgqrs.ValidationError, match="one key"):
        ref.trigger_many([1, 2], idempotency_keys="ab")
    with pytest.raises(pgqrs.PayloadError, match="params #1"):
        ref.trigger_many([1, "x" * 2_000_000])
    unencodable = ref.trigger_many([1, object()])  # a Store's json_default might encode it
    with pytest.raises(pgqrs.PayloadError, match="params #1"):
        await unencodable.execute(store)
    with pytest.raises(pgqrs.ValidationError):
        ref.trigger_many([1], idempotency_keys=[""])
    with pytest.raises(pgqrs.DurationError):
        ref.trigger_many([1], delay=-1)
    assert await ref.trigger_many([]).execute(store) == []
    assert await _count(store, store.tables.runs) == 0
    assert await _count(store, store.tables.messages) == 0


async def test_options_apply_to_every_run(store: pgqrs.Store) -> None:
    await store.create_workflow("wf", key_concurrency=1)
    ids = (
        await pgqrs.workflow("wf")
        .trigger_many(
            [1, 2, 3], concurrency_keys=["x", None, "y"], priority=5, delay=60, timeout=30
        )
        .execute(store)
    )
    r, m = store.tables.runs, store.tables.messages
    async with store._read() as conn:
        rows = (
            await conn.execute(
                select(
                    r.c.id,
                    r.c.concurrency_key,
                    r.c.deadline_at,
                    m.c.priority,
                    m.c.concurrency_key,
                    m.c.vt > m.c.enqueued_at,
                )
                .join(m, m.c.id == r.c.message_id)
                .order_by(r.c.id)
            )
        ).all()
    assert [row[0] for row in rows] == ids
    assert [row[1] for row in rows] == ["x", None, "y"]
    assert [row[4] for row in rows] == ["x", None, "y"]
    assert all(row[2] is not None and row[3] == 5 and row[5] for row in rows)


async def test_an_undefined_workflow_is_defined_in_the_transaction(store: pgqrs.Store) -> None:
    sessions = async_sessionmaker(store.engine)
    async with sessions() as session, session.begin():
        await pgqrs.workflow("fresh").trigger_many([1, 2]).execute(session)
        await session.rollback()
    assert [w.name for w in await store.list_workflows()] == []
    ids = await pgqrs.workflow("fresh").trigger_many([1, 2]).execute(store)
    assert await _inputs(store, ids) == [1, 2]
    assert [w.name for w in await store.list_workflows()] == ["fresh"]


async def test_runs_are_worked_in_order(
    store: pgqrs.Store, run_worker: Any, wait_until: Any
) -> None:
    seen: list[int] = []

    async def handler(ctx: pgqrs.RunContext, params: int) -> int:
        seen.append(params)
        return params * 2

    await run_worker("double", handler)
    ids = await pgqrs.workflow("double").trigger_many(list(range(10))).execute(store)
    results = [await store.wait_for_run(run_id, timeout=20) for run_id in ids]
    assert results == [i * 2 for i in range(10)]


async def test_execute_sync_commits_and_rolls_back(store: pgqrs.Store, db_url: str) -> None:
    await store.create_workflow("wf")

    def sync_app() -> list[int]:
        engine = create_engine(db_url.replace("postgresql://", "postgresql+psycopg://"))
        try:
            with Session(engine) as session:
                pgqrs.workflow("wf").trigger_many(["no", "nope"]).execute_sync(session)
                session.rollback()
            with Session(engine) as session, session.begin():
                return (
                    pgqrs.workflow("wf")
                    .trigger_many(["a", "b"], idempotency_keys=["ka", "kb"])
                    .execute_sync(session)
                )
        finally:
            engine.dispose()

    ids = await asyncio.to_thread(sync_app)
    assert await _inputs(store, ids) == ["a", "b"]
    assert await _count(store, store.tables.runs) == 2
    assert await _count(store, store.tables.messages) == 2


async def test_more_items_than_one_statement_holds(store: pgqrs.Store) -> None:
    await store.create_workflow("wf")
    n = 2500  # three chunks of at most 1,000
    keys = [f"k{i}" if i % 3 == 0 else None for i in range(n)]
    ids = (
        await pgqrs.workflow("wf")
        .trigger_many(list(range(n)), idempotency_keys=keys)
        .execute(store)
    )
    assert len(set(ids)) == n
    assert [(await store.get_run(ids[i])).input for i in (0, 999, 1000, 2499)] == [
        0,
        999,
        1000,
        2499,
    ]
    again = (
        await pgqrs.workflow("wf")
        .trigger_many([0, 3], idempotency_keys=["k0", "k2499"])
        .execute(store)
    )
    assert again == [ids[0], ids[2499]]


async def test_concurrent_calls_with_one_key_make_one_run(store: pgqrs.Store) -> None:
    await store.create_workflow("wf")
    calls = await asyncio.gather(
        *(
            pgqrs.workflow("wf")
            .trigger_many([i, i], idempotency_keys=["shared", f"own-{i}"])
            .execute(store)
            for i in range(6)
        )
    )
    assert len({ids[0] for ids in calls}) == 1
    assert len({ids[1] for ids in calls}) == 6
    assert await _count(store, store.tables.runs) == 7
    assert await _count(store, store.tables.messages) == 7


@pytest.mark.timeout(120)
async def test_a_key_committed_after_the_snapshot_is_a_typed_error_at_repeatable_read(
    store: pgqrs.Store,
) -> None:
    """As ``trigger``: at REPEATABLE READ a run committed after the caller's snapshot cannot be
    returned; the call raises ``IdempotencyKeyNotVisible``, writes nothing, and the caller's
    transaction stays usable (the savepoint took the refusal back)."""
    if not store.postgres:
        pytest.skip("PostgreSQL isolation levels (SQLite serialises its transactions)")
    await store.create_workflow("wf")
    engine = store.engine.execution_options(isolation_level="REPEATABLE READ")
    async with AsyncSession(engine) as session, session.begin():
        await session.execute(text("SELECT 1"))  # the snapshot is taken here
        first = await pgqrs.workflow("wf").trigger({}, idempotency_key="k").execute(store)
        with pytest.raises(pgqrs.IdempotencyKeyNotVisible) as refused:
            await (
                pgqrs.workflow("wf")
                .trigger_many([1, 2], idempotency_keys=["new", "k"])
                .execute(session)
            )
        assert refused.value.isolation_level == "REPEATABLE READ"
        assert not refused.value.transaction_aborted
        assert (await session.execute(text("SELECT 1"))).scalar() == 1  # still usable
    assert await _count(store, store.tables.runs) == 1
    assert await _count(store, store.tables.messages) == 1
    # a new transaction's snapshot sees the run, and gets its id
    async with AsyncSession(engine) as session, session.begin():
        ids = (
            await pgqrs.workflow("wf")
            .trigger_many([1, 2], idempotency_keys=["new", "k"])
            .execute(session)
        )
    assert ids[1] == first


async def test_every_json_value_comes_back_as_given(store: pgqrs.Store) -> None:
    values = [True, False, None, "text", 1.5, 0, [1, {"a": None}], {"é": "ü"}]
    ids = await pgqrs.workflow("wf").trigger_many(values).execute(store)
    assert await _inputs(store, ids) == values
    r = store.tables.runs
    async with store._read() as conn:
        null_input = (await conn.execute(select(r.c.id).where(r.c.input.is_(None)))).scalars()
        assert list(null_input) == [ids[2]]  # None params are SQL NULL, as trigger(None) writes
