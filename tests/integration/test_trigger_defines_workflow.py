"""A trigger for a workflow with no definition row creates it (and its queue) in the
trigger's transaction, so migrations are all a web process needs; a worker's
``create_workflow`` then sets its options, its registration marks it served, and until then
``unserved_workflows()`` (and the CLI) show it, so a misspelt name stays visible."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

import pgqrs_sqla as pgqrs
from pgqrs_sqla import runs as pgqrs_runs
from tests._wait import until_a_session_waits_on_a_lock
from tests.acceptance.test_cli import cli, cli_json


async def _count(store: pgqrs.Store, table: Any) -> int:
    async with store._read() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def _echo(ctx: pgqrs.RunContext, params: Any) -> Any:
    return params


@pytest.mark.timeout(120)
async def test_first_trigger_defines_the_workflow(store: pgqrs.Store, db_url: str) -> None:
    t = store.tables
    # In the caller's transaction: a rollback takes the definition back with the run.
    async with AsyncSession(store.engine) as session:
        await pgqrs.workflow("welcome").trigger({"n": 0}).execute(session)
        await session.rollback()
    assert (await _count(store, t.workflows), await _count(store, t.queues)) == (0, 0)

    async with AsyncSession(store.engine) as session, session.begin():
        first = await pgqrs.workflow("welcome").trigger({"n": 1}).execute(session)
        await session.execute(text("SELECT 1"))  # the caller's transaction goes on
    engine = _sync_engine(store, db_url)
    try:
        with Session(engine) as sync_session, sync_session.begin():
            second = pgqrs.workflow("welcome").trigger({"n": 2}).execute_sync(sync_session)
    finally:
        engine.dispose()
    third = await pgqrs.workflow("welcome").trigger({"n": 3}).execute(store)
    info = await store.get_workflow("welcome")
    assert info.retry == pgqrs.RetryPolicy()
    assert (
        (await store.get_queue("welcome")).max_deliveries == pgqrs_runs.WORKFLOW_MAX_DELIVERIES
    )  # a workflow's default, as create_workflow's
    assert await store.unserved_workflows() == {"welcome": 3}
    shown = await asyncio.to_thread(cli, db_url, "queues")
    assert "workflow 'welcome' has 3 queued run(s) and no worker has ever served it" in (
        shown.stderr
    )
    queues = await asyncio.to_thread(cli_json, db_url, "queues")
    assert [(q["name"], q["unserved_workflow"]) for q in queues] == [("welcome", True)]

    # The worker's create_workflow sets the options of the row the trigger made...
    policy = pgqrs.RetryPolicy(max_attempts=2, base=0.5, cap=4, jitter=False)
    await store.create_workflow("welcome", retry=policy, max_deliveries=3)
    assert (await store.get_workflow("welcome")).retry == policy
    assert (await store.get_queue("welcome")).max_deliveries == 3
    # ... and its registration marks it served.
    worker = await pgqrs.consumer("w", None, "welcome").handler(_echo).create(store)
    assert await store.unserved_workflows() == {}
    await worker.run_until_idle(timeout=60)
    for run, n in ((first, 1), (second, 2), (third, 3)):
        assert await store.wait_for_run(run, timeout=30) == {"n": n}
    queues = await asyncio.to_thread(cli_json, db_url, "queues")
    assert [(q["name"], q["unserved_workflow"]) for q in queues] == [("welcome", False)]


def _sync_engine(store: pgqrs.Store, db_url: str) -> Any:
    from sqlalchemy import create_engine, make_url

    url = make_url(db_url)
    if store.postgres:
        url = url.set(drivername="postgresql+psycopg")
    return create_engine(url)


@pytest.mark.timeout(120)
async def test_concurrent_first_triggers_define_it_once(store: pgqrs.Store) -> None:
    """Two transactions trigger a workflow nobody defined: the second waits for the first's
    definition and uses it; no unique violation reaches (and aborts) either transaction."""
    t = store.tables
    async with AsyncSession(store.engine) as first, first.begin():
        one = await pgqrs.workflow("fresh").trigger(1).execute(first)

        async def second() -> int:
            async with AsyncSession(store.engine) as session, session.begin():
                run = await pgqrs.workflow("fresh").trigger(2).execute(session)
                await session.execute(text("SELECT 1"))
                return run

        task = asyncio.create_task(second())
        if store.postgres:
            await until_a_session_waits_on_a_lock(store, timeout=60)
    two = await task
    assert one != two
    assert (await _count(store, t.workflows), await _count(store, t.queues)) == (1, 1)
    assert await store.unserved_workflows() == {"fresh": 2}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("level", ["REPEATABLE READ", "SERIALIZABLE"])
async def test_a_definition_newer_than_the_snapshot_is_a_typed_conflict(
    store: pgqrs.Store, level: str
) -> None:
    """At REPEATABLE READ / SERIALIZABLE, a first trigger whose snapshot predates another
    transaction's definition of the workflow cannot use it: ``WorkflowNotVisible`` (a
    ``Conflict``) naming the workflow, nothing written, the caller's transaction usable."""
    if not store.postgres:
        pytest.skip("SQLite serialises transactions (BEGIN IMMEDIATE): no older snapshot")
    t = store.tables
    engine = store.engine.execution_options(isolation_level=level)
    async with AsyncSession(engine) as session, session.begin():
        await session.execute(text("SELECT 1"))  # the snapshot is taken here
        async with AsyncSession(store.engine) as definer, definer.begin():
            other = await pgqrs.workflow("late").trigger(1).execute(definer)  # defines it
        with pytest.raises(pgqrs.WorkflowNotVisible) as info:
            await pgqrs.workflow("late").trigger(2).execute(session)
        assert isinstance(info.value, pgqrs.Conflict)
        assert info.value.workflow == "late"
        assert "retry it" in str(info.value)
        await session.execute(text("SELECT 1"))  # the transaction is still usable
    runs = store.tables.runs
    async with store._read() as conn:
        ids = list((await conn.execute(select(runs.c.id))).scalars())
    assert ids == [other]
    assert (await _count(store, t.workflows), await _count(store, t.queues)) == (1, 1)


async def test_a_store_s_own_first_trigger_defines_the_workflow(store: pgqrs.Store) -> None:
    """The store's own trigger (autocommit on PostgreSQL, no transaction for a savepoint)
    on a freshly installed database: the run is written and its workflow defined."""
    run_id = await pgqrs.workflow("fresh").trigger({"n": 1}).execute(store)
    assert (await store.get_run(run_id)).status is pgqrs.RunStatus.QUEUED
    assert (await store.get_workflow("fresh")).name == "fresh"
    assert await store.unserved_workflows() == {"fresh": 1}
