"""Two real concurrent transactions trigger with one idempotency key, at each isolation level.

READ COMMITTED (and SQLite, whose transactions are serialised by ``BEGIN IMMEDIATE``): the
second gets the first's run id. REPEATABLE READ / SERIALIZABLE: when the first commits after
the second's snapshot, the run cannot be seen from it, so the second gets
``IdempotencyKeyNotVisible`` naming the level — and its transaction stays usable: its next
statement and its commit succeed, and exactly one run carries the key."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

import pgqrs_sqla as pgqrs
from tests._wait import until_a_session_waits_on_a_lock

LEVELS = ["READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE"]


async def _runs_with_key(store: pgqrs.Store, key: str) -> list[int]:
    r = store.tables.runs
    async with store._read() as conn:
        return list(
            (await conn.execute(select(r.c.id).where(r.c.idempotency_key == key))).scalars()
        )


async def _ledger(store: pgqrs.Store) -> int:
    async with store._read() as conn:
        return int((await conn.execute(text("SELECT count(*) FROM ledger"))).scalar_one())


async def _second(
    engine: AsyncEngine,
    key: str,
    *,
    snapshot_first: bool,
    started: asyncio.Event | None = None,
    go: asyncio.Event | None = None,
) -> Any:
    """The second transaction: trigger with ``key``, then write and commit regardless."""
    async with AsyncSession(engine) as session, session.begin():
        if snapshot_first:
            await session.execute(text("SELECT 1"))  # the snapshot is taken here
        if started is not None:
            started.set()
        if go is not None:
            await go.wait()
        outcome: Any
        try:
            outcome = await pgqrs.workflow("wf").trigger({}, idempotency_key=key).execute(session)
        except pgqrs.IdempotencyKeyNotVisible as error:
            outcome = error
        await session.execute(text("INSERT INTO ledger (note) VALUES ('second')"))
    return outcome


def _expect(outcome: Any, level: str, first: int, backend: str) -> None:
    if backend == "sqlite" or level == "READ COMMITTED":
        assert outcome == first
    else:
        assert isinstance(outcome, pgqrs.IdempotencyKeyNotVisible), outcome
        assert outcome.isolation_level == level
        assert level in str(outcome) and "READ COMMITTED" in str(outcome)
        assert outcome.idempotency_key is not None


@pytest.mark.timeout(120)
@pytest.mark.parametrize("level", LEVELS)
async def test_one_key_two_concurrent_transactions(
    store: pgqrs.Store, backend: str, level: str
) -> None:
    if backend == "sqlite" and level != "READ COMMITTED":
        pytest.skip("SQLite has one behaviour: BEGIN IMMEDIATE serialises the transactions")
    await store.create_workflow("wf")
    async with store._begin() as conn:
        await conn.execute(text("CREATE TABLE ledger (note VARCHAR(50) NOT NULL)"))
    engine = (
        store.engine.execution_options(isolation_level=level) if store.postgres else store.engine
    )

    # 1. The first commits after the second took its snapshot.
    async with AsyncSession(engine) as first_session:
        async with first_session.begin():
            await first_session.execute(text("SELECT 1"))
        started, go = asyncio.Event(), asyncio.Event()
        second_task: asyncio.Task[Any] | None = None
        if store.postgres:
            second_task = asyncio.create_task(
                _second(engine, "k1", snapshot_first=True, started=started, go=go)
            )
            await started.wait()
        async with first_session.begin():
            first = (
                await pgqrs.workflow("wf").trigger({}, idempotency_key="k1").execute(first_session)
            )
        go.set()
    outcome = await (
        second_task if second_task is not None else _second(engine, "k1", snapshot_first=True)
    )
    _expect(outcome, level, first, backend)
    assert await _runs_with_key(store, "k1") == [first]

    # 2. Both in flight: the second waits on the first's uncommitted row, then decides.
    async with AsyncSession(engine) as first_session, first_session.begin():
        first = await pgqrs.workflow("wf").trigger({}, idempotency_key="k2").execute(first_session)
        task = asyncio.create_task(_second(engine, "k2", snapshot_first=False))
        if store.postgres:
            await until_a_session_waits_on_a_lock(store, timeout=60)
    outcome = await task
    _expect(outcome, level, first, backend)
    assert await _runs_with_key(store, "k2") == [first]
    assert await _ledger(store) == 2  # both second transactions committed their own write
    stats = await store.queue_stats("wf")
    assert stats[0].ready + stats[0].delayed == 2  # one message per run, no orphan


@pytest.mark.timeout(120)
async def test_a_level_set_behind_sqlalchemys_back_is_still_a_typed_error(
    store: pgqrs.Store,
) -> None:
    """``SET TRANSACTION ISOLATION LEVEL REPEATABLE READ`` in an engine SQLAlchemy believes
    READ COMMITTED: no savepoint guards the trigger, so PostgreSQL aborts the transaction;
    the error is still ``IdempotencyKeyNotVisible``, saying so and how to avoid it."""
    if not store.postgres:
        pytest.skip("PostgreSQL isolation levels")
    await store.create_workflow("wf")
    async with AsyncSession(store.engine) as session, session.begin():
        await session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
        await session.execute(text("SELECT 1"))
        first = await pgqrs.workflow("wf").trigger({}, idempotency_key="k").execute(store)
        with pytest.raises(pgqrs.IdempotencyKeyNotVisible) as info:
            await pgqrs.workflow("wf").trigger({}, idempotency_key="k").execute(session)
        await session.rollback()
    assert info.value.transaction_aborted is True
    assert "isolation_level=" in str(info.value)
    assert await _runs_with_key(store, "k") == [first]
