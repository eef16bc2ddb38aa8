"""Errors a user can hit say what to do, on SQLite and PostgreSQL: each message names the
problem *and* the call or change that fixes it, and carries its data on typed attributes.
The caller's transaction stays usable after the refusal (the in-session cases write before
and after it, then commit)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

import pgqrs_sqla as pgqrs


async def test_missing_workflow_queue_and_run_say_how_to_create_or_find_them(
    store: pgqrs.Store,
) -> None:
    async with store._begin() as conn:
        await conn.execute(text("CREATE TABLE ledger (note VARCHAR(50) NOT NULL)"))
    # A trigger defines a missing workflow (see test_trigger_defines_workflow.py); a read of
    # one that does not exist says how to create it, and the caller's transaction goes on.
    async with AsyncSession(store.engine) as session, session.begin():
        await session.execute(text("INSERT INTO ledger VALUES ('before')"))
        with pytest.raises(pgqrs.WorkflowNotFound) as wf:
            await store.get_workflow("nightly")
        await session.execute(text("INSERT INTO ledger VALUES ('after')"))
    assert wf.value.workflow == "nightly"
    assert "create it with `await store.create_workflow('nightly')`" in str(wf.value)
    async with store._read() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM ledger"))).scalar_one() == 2
    with pytest.raises(pgqrs.QueueNotFound) as queue:
        await store.queue("mail").enqueue({"to": "ada"})
    assert queue.value.queue == "mail"
    assert "create it with `await store.create_queue('mail')`" in str(queue.value)
    with pytest.raises(pgqrs.QueueNotFound, match=r"store.create_queue\('mail'\)"):
        await store.get_queue("mail")
    with pytest.raises(pgqrs.RunNotFound) as run:
        await store.get_run(999_999)
    assert run.value.run_id == 999_999
    assert "check the id (store.list_runs() lists runs" in str(run.value)


async def test_bad_payloads_and_options_say_what_to_pass_instead(store: pgqrs.Store) -> None:
    await store.create_queue("q")
    queue = store.queue("q")
    with pytest.raises(pgqrs.PayloadError) as not_json:
        await queue.enqueue({"when": datetime(2026, 1, 1)})
    assert "at $.when, a datetime" in str(not_json.value)
    assert "convert it, or pass json_default=pgqrs_sqla.json_default" in str(not_json.value)
    with pytest.raises(pgqrs.PayloadError) as big:
        await pgqrs.workflow("wf", max_payload_bytes=100).trigger("x" * 200).execute(store)
    assert "store large data in a table of yours and pass its id" in str(big.value)
    assert "max_payload_bytes=" in str(big.value)
    with pytest.raises(pgqrs.ValidationError, match=r"use datetime.now\(timezone.utc\)"):
        await queue.enqueue(1, available_at=datetime(2030, 1, 1))
    with pytest.raises(pgqrs.ValidationError, match="max_attempts must be an int >= 1"):
        pgqrs.RetryPolicy(max_attempts=0)

    async def handler(ctx: pgqrs.RunContext, params: Any) -> Any:
        return None

    with pytest.raises(pgqrs.ConfigurationError, match="pass one of them as queue="):
        pgqrs.consumer("w", None, "q").handler(handler, queue="other")
    with pytest.raises(pgqrs.ValidationError, match="concurrency must be an int >= 1, got 0"):
        await pgqrs.consumer("w", None, "q").handler(handler).create(store, concurrency=0)
    registry = pgqrs.WorkflowRegistry()
    registry.workflow("wf")(handler)
    with pytest.raises(pgqrs.ConfigurationError, match="register each workflow or queue once"):
        registry.workflow("wf")(handler)
    with pytest.raises(pgqrs.ConfigurationError, match="pass queues= from those"):
        await registry.create_worker(store, "w", queues=["nope"])
