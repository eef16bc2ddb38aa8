"""Durable workflows on both backends: triggers in the caller's transaction, replay, retries,
pause/resume, cancellation, idempotency and bad input."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import Session

import pgqrs_sqla as pgqrs
from pgqrs_sqla import RunStatus, Step, StepStatus, TransientError
from tests._rows import message_of
from tests._wait import eventually, failed_run

Handler = Callable[[pgqrs.RunContext, Any], Awaitable[Any]]


async def count(store: pgqrs.Store, table: Any) -> int:
    async with store._begin() as conn:
        return int((await conn.execute(select(text("count(*)")).select_from(table))).scalar_one())


# ---------------------------------------------------------------- triggers


async def test_trigger_in_async_session_commits_with_the_app_writes(
    store: pgqrs.Store, run_worker: Any
) -> None:
    async def handler(ctx: pgqrs.RunContext, params: dict[str, int]) -> int:
        return params["x"] * 2

    await run_worker("double", handler)
    async with store._begin() as conn:
        await conn.execute(text("CREATE TABLE app_rows (id INTEGER PRIMARY KEY, run_id BIGINT)"))
    sessions = async_sessionmaker(store.engine)
    async with sessions() as session, session.begin():
        run_id = await pgqrs.workflow("double").trigger({"x": 21}).execute(session)
        await session.execute(
            text("INSERT INTO app_rows (id, run_id) VALUES (1, :r)"), {"r": run_id}
        )
    assert await store.wait_for_run(run_id, timeout=10) == 42


async def test_rollback_leaves_no_run_and_no_message(store: pgqrs.Store) -> None:
    await store.create_workflow("wf")
    sessions = async_sessionmaker(store.engine)
    async with sessions() as session, session.begin():
        run_id = await pgqrs.workflow("wf").trigger({"a": 1}).execute(session)
        assert (await store.get_run(run_id, target=session)).status is RunStatus.QUEUED
        await session.rollback()
    with pytest.raises(pgqrs.RunNotFound):
        await store.get_run(run_id)
    assert await count(store, store.tables.runs) == 0
    assert await count(store, store.tables.messages) == 0


async def test_trigger_through_async_connection(store: pgqrs.Store) -> None:
    await store.create_workflow("wf")
    async with store.engine.connect() as conn:
        run_id = await pgqrs.workflow("wf").trigger(None).execute(conn)
        await conn.rollback()
    assert await count(store, store.tables.runs) == 0
    assert await count(store, store.tables.messages) == 0
    async with store.engine.begin() as conn:
        run_id = await pgqrs.workflow("wf").trigger([1, 2]).execute(conn)
    assert (await store.get_run(run_id)).input == [1, 2]
    assert await count(store, store.tables.messages) == 1


async def test_trigger_with_a_sync_session(
    store: pgqrs.Store, db_url: str, run_worker: Any
) -> None:
    async def handler(ctx: pgqrs.RunContext, params: str) -> str:
        return params.upper()

    await run_worker("upper", handler)

    def sync_app() -> int:  # a sync app runs in its own thread, not in the worker's loop
        engine = create_engine(db_url.replace("postgresql://", "postgresql+psycopg://"))
        try:
            with Session(engine) as session:
                pgqrs.workflow("upper").trigger("no").execute_sync(session)
                session.rollback()
            with Session(engine) as session, session.begin():
                return pgqrs.workflow("upper").trigger("yes").execute_sync(session)
        finally:
            engine.dispose()

    run_id = await asyncio.to_thread(sync_app)
    assert await store.wait_for_run(run_id, timeout=10) == "YES"
    assert [r.input for r in await store.list_runs()] == ["yes"]  # the rolled-back one left nothing
    assert await count(store, store.tables.messages) == 1


async def test_create_workflow_is_idempotent(store: pgqrs.Store) -> None:
    first = await store.create_workflow("twice")
    again = await store.create_workflow("twice")
    assert (again.id, again.queue_id) == (first.id, first.queue_id)
    assert [w.name for w in await store.list_workflows()] == ["twice"]
    assert [q.name for q in await store.list_queues()] == ["twice"]


async def test_idempotency_key_returns_the_first_run(store: pgqrs.Store) -> None:
    await store.create_workflow("wf")
    first = await pgqrs.workflow("wf").trigger({"n": 1}, idempotency_key="order-7").execute(store)
    sessions = async_sessionmaker(store.engine)
    async with sessions() as session, session.begin():
        again = (
            await pgqrs.workflow("wf").trigger({"n": 2}, idempotency_key="order-7").execute(session)
        )
        # the caller's transaction is still usable
        assert (await session.execute(text("SELECT 1"))).scalar() == 1
    other = await pgqrs.workflow("wf").trigger({"n": 3}, idempotency_key="order-8").execute(store)
    assert again == first != other
    assert await count(store, store.tables.runs) == 2
    assert await count(store, store.tables.messages) == 2
    assert (await store.get_run(first)).input == {"n": 1}


async def test_concurrent_triggers_with_one_key_make_one_run(store: pgqrs.Store) -> None:
    await store.create_workflow("wf")
    ids = await asyncio.gather(
        *(
            pgqrs.workflow("wf").trigger({"i": i}, idempotency_key="k").execute(store)
            for i in range(8)
        )
    )
    assert len(set(ids)) == 1
    assert await count(store, store.tables.runs) == 1
    assert await count(store, store.tables.messages) == 1


async def test_trigger_bad_input_writes_nothing_and_keeps_the_transaction(
    store: pgqrs.Store,
) -> None:
    await store.create_workflow("wf")
    sessions = async_sessionmaker(store.engine)
    async with sessions() as session, session.begin():
        with pytest.raises(pgqrs.PayloadError, match="not JSON-serialisable"):
            # A type a Store's json_default might encode: refused at execute, before any SQL.
            await pgqrs.workflow("wf").trigger({"when": object()}).execute(session)
        with pytest.raises(pgqrs.PayloadError, match="over the limit"):
            pgqrs.workflow("wf", max_payload_bytes=50).trigger({"x": "y" * 100})
        with pytest.raises(pgqrs.InvalidName):
            pgqrs.workflow("bad name!")
        with pytest.raises(pgqrs.ValidationError):
            pgqrs.workflow("wf").trigger({}, idempotency_key="")
        run_id = await pgqrs.workflow("wf").trigger({"ok": True}).execute(session)
    assert await count(store, store.tables.runs) == 1
    assert (await store.get_run(run_id)).input == {"ok": True}


# ---------------------------------------------------------------- steps


async def test_steps_record_results_and_context(store: pgqrs.Store, run_worker: Any) -> None:
    seen: dict[str, Any] = {}

    def blocking() -> str:  # a sync callable runs in a thread
        import threading

        return threading.current_thread().name

    async def handler(ctx: pgqrs.RunContext, params: Any) -> Any:
        seen.update(run_id=ctx.run_id, workflow=ctx.workflow, attempt=ctx.attempt)
        thread = await ctx.step("sync", blocking)
        value = await ctx.step("async", lambda: asyncio.sleep(0, result={"v": 1}))
        return {"thread_is_main": thread == "MainThread", "value": value}

    await run_worker("ctx", handler)
    run_id = await pgqrs.workflow("ctx").trigger().execute(store)
    assert await store.wait_for_run(run_id, timeout=10) == {
        "thread_is_main": False,
        "value": {"v": 1},
    }
    assert seen == {"run_id": run_id, "workflow": "ctx", "attempt": 1}
    run = await store.get_run(run_id)
    assert [(s.name, s.status, s.output) for s in run.steps][1] == (
        "async",
        StepStatus.SUCCESS,
        {"v": 1},
    )
    assert all(s.started_at and s.finished_at and s.started_at <= s.finished_at for s in run.steps)


async def test_non_json_step_result_and_reused_step_name_fail_the_run(
    store: pgqrs.Store, run_worker: Any
) -> None:
    async def bad_result(ctx: pgqrs.RunContext, params: Any) -> Any:
        await ctx.step("make_set", lambda: {1, 2})

    async def reuse(ctx: pgqrs.RunContext, params: Any) -> Any:
        await ctx.step("same", lambda: 1)
        await ctx.step("same", lambda: 2)

    await run_worker("bad_result", bad_result)
    await run_worker("reuse", reuse)
    a = await pgqrs.workflow("bad_result").trigger().execute(store)
    b = await pgqrs.workflow("reuse").trigger().execute(store)
    with pytest.raises(pgqrs.RunFailed) as failed:
        await store.wait_for_run(a, timeout=10)
    assert failed.value.error["type"] == "pgqrs_sqla.errors.PayloadError"
    assert "result of step 'make_set'" in failed.value.error["message"]
    with pytest.raises(pgqrs.RunFailed) as failed:
        await store.wait_for_run(b, timeout=10)
    assert failed.value.error["type"] == "pgqrs_sqla.errors.StepNameReused"


async def test_permanent_error_records_type_message_and_traceback(
    store: pgqrs.Store, run_worker: Any
) -> None:
    async def handler(ctx: pgqrs.RunContext, params: Any) -> Any:
        async def boom() -> None:
            raise KeyError("missing-key")

        await ctx.step("boom", boom)

    await run_worker("perm", handler)
    run_id = await pgqrs.workflow("perm").trigger().execute(store)
    run = await failed_run(store, run_id)
    assert run.status is RunStatus.ERROR and run.finished_at is not None
    assert run.error["type"] == "builtins.KeyError"
    assert "missing-key" in run.error["message"]
    assert "Traceback" in run.error["traceback"] and "boom" in run.error["traceback"]
    assert [(s.name, s.status, s.attempts) for s in run.steps] == [("boom", StepStatus.ERROR, 1)]
    message = await message_of(store, run_id)
    assert message.archived_at is not None


async def test_transient_error_honours_retry_after(store: pgqrs.Store, run_worker: Any) -> None:
    attempts: list[int] = []
    release = asyncio.Event()

    async def handler(ctx: pgqrs.RunContext, params: Any) -> Any:
        async def flaky() -> str:
            attempts.append(ctx.attempt)
            if len(attempts) == 1:
                raise TransientError("try later", retry_after=30)
            return "ok"

        result = await ctx.step("flaky", flaky)
        release.set()
        return result

    await run_worker("flaky", handler)
    run_id = await pgqrs.workflow("flaky").trigger().execute(store)

    async def waiting() -> Any:
        msg = await message_of(store, run_id)
        return msg if msg.consumer_worker_id is None and attempts else None

    msg = await eventually(waiting, what="the run's message released for its retry")
    async with store._begin() as conn:
        now = (await conn.execute(select(pgqrs.dialects.utcnow()))).scalar_one()
    delay = (pgqrs.dialects.aware(msg.vt) - pgqrs.dialects.aware(now)).total_seconds()  # type: ignore[operator]
    assert 25 < delay <= 30.5
    assert msg.failed_ct == 0  # a deliberate retry is not a failed delivery
    run = await store.get_run(run_id)
    assert run.status is RunStatus.RUNNING
    assert [(s.name, s.status, s.attempts) for s in run.steps] == [("flaky", StepStatus.ERROR, 1)]
    assert run.steps[0].error["message"] == "try later"
    # resume_run makes it visible now: the retry happens without waiting 30 s.
    await store.resume_run(run_id)
    assert await store.wait_for_run(run_id, timeout=10) == "ok"
    assert attempts == [1, 2]
    assert (await store.get_run(run_id)).steps[0].attempts == 2


async def test_transient_backoff_and_exhaustion(store: pgqrs.Store, run_worker: Any) -> None:
    calls = 0

    async def handler(ctx: pgqrs.RunContext, params: Any) -> Any:
        async def always() -> None:
            nonlocal calls
            calls += 1
            raise TransientError("still down")

        await ctx.step("always", always)

    await run_worker(
        "exhaust", handler, retry=pgqrs.RetryPolicy(max_attempts=3, base=0.01, cap=0.05)
    )
    run_id = await pgqrs.workflow("exhaust").trigger().execute(store)
    run = await failed_run(store, run_id)
    assert calls == 3
    assert run.error["type"] == "pgqrs_sqla.errors.TransientError" and run.error["attempts"] == 3
    assert [(s.status, s.attempts) for s in run.steps] == [(StepStatus.ERROR, 3)]


async def test_backoff_without_retry_after_follows_the_step_then_the_workflow_policy(
    store: pgqrs.Store, run_worker: Any
) -> None:
    """The message's visibility time, not a wall clock, shows the delay each policy chose."""
    seen: list[str] = []

    async def handler(ctx: pgqrs.RunContext, params: Any) -> Any:
        async def down() -> None:
            seen.append("step" if params["step_policy"] else "workflow")
            raise TransientError("down")

        step_policy = pgqrs.RetryPolicy(base=40, cap=40, jitter=False)
        await ctx.step("down", down, retry=step_policy if params["step_policy"] else None)

    await run_worker("backoff", handler, retry=pgqrs.RetryPolicy(base=20, cap=1000, jitter=False))
    expected = {True: 40.0, False: 20.0}
    for step_policy, delay in expected.items():
        run_id = (
            await pgqrs.workflow("backoff").trigger({"step_policy": step_policy}).execute(store)
        )

        async def released(run_id: int = run_id) -> Any:
            msg = await message_of(store, run_id)
            done = msg.consumer_worker_id is None and msg.read_ct == 1
            return msg if done and (await store.get_run(run_id)).steps else None

        msg = await eventually(released, what=f"{step_policy}: the message released")
        async with store._begin() as conn:
            now = (await conn.execute(select(pgqrs.dialects.utcnow()))).scalar_one()
        waited = (pgqrs.dialects.aware(msg.vt) - pgqrs.dialects.aware(now)).total_seconds()  # type: ignore[operator]
        assert delay - 5 < waited <= delay + 0.5, (step_policy, waited)
        await store.cancel_run(run_id)
    assert seen == ["step", "workflow"]


def test_retry_policy_delays() -> None:
    policy = pgqrs.RetryPolicy(base=2, cap=10, jitter=False)
    assert [policy.delay(n) for n in range(1, 6)] == [2, 4, 8, 10, 10]
    jittered = pgqrs.RetryPolicy(base=4, cap=100)
    assert all(2 <= jittered.delay(1) <= 4 for _ in range(50))
    with pytest.raises(pgqrs.ValidationError):
        pgqrs.RetryPolicy(max_attempts=0)


# ---------------------------------------------------------------- pause / resume


async def test_pause_then_update_step_and_resume_in_the_webhooks_transaction(
    store: pgqrs.Store, run_worker: Any
) -> None:
    sent: list[int] = []

    async def approval(ctx: pgqrs.RunContext, params: Any) -> Any:
        await ctx.step("send_request", lambda: sent.append(ctx.run_id) or "sent")
        data = await ctx.step("wait_for_approval", lambda: Step.pause(timedelta(hours=1)))
        return await ctx.step("process", lambda: {"approved_by": data["by"]})

    await run_worker("approval", approval)
    run_id = await pgqrs.workflow("approval").trigger().execute(store)
    run = await store.wait_for_status(run_id, RunStatus.PAUSED, timeout=10)
    assert run.steps[-1].status is StepStatus.PAUSED
    msg = await message_of(store, run_id)
    assert msg.consumer_worker_id is None and msg.archived_at is None  # worker released it

    sessions = async_sessionmaker(store.engine)
    async with store._begin() as conn:
        await conn.execute(text("CREATE TABLE approvals (run_id BIGINT)"))
    async with sessions() as session, session.begin():  # a webhook that rolls back records nothing
        await store.update_step(
            run_id, "wait_for_approval", StepStatus.SUCCESS, {"by": "x"}, target=session
        )
        await session.rollback()
    assert (await store.get_run(run_id)).steps[-1].status is StepStatus.PAUSED
    async with sessions() as session, session.begin():
        await session.execute(text("INSERT INTO approvals VALUES (:r)"), {"r": run_id})
        await store.update_step(
            run_id, "wait_for_approval", StepStatus.SUCCESS, {"by": "alice"}, target=session
        )
        await store.resume_run(run_id, target=session)
    assert await store.wait_for_run(run_id, timeout=10) == {"approved_by": "alice"}
    assert sent == [run_id]  # send_request replayed from its record
    # Each body ran once: the delivery that paused is not counted for the step after it.
    run = await store.get_run(run_id)
    assert [(s.name, s.attempts) for s in run.steps] == [
        ("send_request", 1),
        ("wait_for_approval", 1),
        ("process", 1),
    ]


async def test_a_paused_step_resumed_runs_its_body_again_and_counts_it(
    store: pgqrs.Store, run_worker: Any
) -> None:
    calls: list[int] = []

    async def handler(ctx: pgqrs.RunContext, params: Any) -> Any:
        def gate() -> Any:
            calls.append(ctx.attempt)
            return Step.pause(timedelta(hours=1)) if len(calls) == 1 else "open"

        opened = await ctx.step("gate", gate)
        return await ctx.step("after", lambda: opened)

    await run_worker("gated", handler)
    run_id = await pgqrs.workflow("gated").trigger().execute(store)
    run = await store.wait_for_status(run_id, RunStatus.PAUSED, timeout=10)
    assert [(s.name, s.status, s.attempts) for s in run.steps] == [("gate", StepStatus.PAUSED, 1)]
    await store.resume_run(run_id)
    assert await store.wait_for_run(run_id, timeout=10) == "open"
    assert calls == [1, 2]
    run = await store.get_run(run_id)
    assert [(s.name, s.attempts) for s in run.steps] == [("gate", 2), ("after", 1)]


async def test_update_step_and_resume_with_a_sync_session(
    store: pgqrs.Store, db_url: str, run_worker: Any
) -> None:
    async def handler(ctx: pgqrs.RunContext, params: Any) -> Any:
        return await ctx.step("gate", lambda: Step.pause(3600))

    await run_worker("gate", handler)
    run_id = await pgqrs.workflow("gate").trigger().execute(store)
    await store.wait_for_status(run_id, RunStatus.PAUSED, timeout=10)

    def webhook() -> None:  # a sync app runs in its own thread, not in the worker's loop
        engine = create_engine(db_url.replace("postgresql://", "postgresql+psycopg://"))
        try:
            with Session(engine) as session, session.begin():
                store.update_step_sync(run_id, "gate", StepStatus.SUCCESS, "opened", target=session)
                store.resume_run_sync(run_id, target=session)
        finally:
            engine.dispose()

    await asyncio.to_thread(webhook)
    assert await store.wait_for_run(run_id, timeout=10) == "opened"


async def test_pause_timeout_reruns_the_step(store: pgqrs.Store, run_worker: Any) -> None:
    checks: list[int] = []

    async def handler(ctx: pgqrs.RunContext, params: Any) -> Any:
        async def check() -> Any:
            checks.append(ctx.attempt)
            return Step.pause(0.1) if len(checks) == 1 else "ready"

        return await ctx.step("poll_status", check)

    await run_worker("polling", handler)
    run_id = await pgqrs.workflow("polling").trigger().execute(store)
    assert await store.wait_for_run(run_id, timeout=10) == "ready"
    assert checks == [1, 2]


# ---------------------------------------------------------------- control and inspection


async def test_cancel_queued_and_running_runs(store: pgqrs.Store, run_worker: Any) -> None:
    await store.create_workflow("slow")
    queued = await pgqrs.workflow("slow").trigger().execute(store)
    assert (await store.cancel_run(queued)).status is RunStatus.CANCELLED
    with pytest.raises(pgqrs.RunCancelled):
        await store.wait_for_run(queued, timeout=1)

    entered, proceed, after = asyncio.Event(), asyncio.Event(), []

    async def handler(ctx: pgqrs.RunContext, params: Any) -> Any:
        await ctx.step("first", lambda: 1)
        entered.set()
        await proceed.wait()
        await ctx.step("second", lambda: after.append(1))

    await run_worker("slow", handler)
    running = await pgqrs.workflow("slow").trigger().execute(store)
    await asyncio.wait_for(entered.wait(), 10)
    assert (
        await store.cancel_run(running)
    ).status is RunStatus.RUNNING  # takes effect at the boundary
    proceed.set()
    with pytest.raises(pgqrs.RunCancelled):
        await store.wait_for_run(running, timeout=10)
    assert after == []
    with pytest.raises(pgqrs.IllegalTransition):
        await store.cancel_run(running)


async def test_retry_run_after_error(store: pgqrs.Store, run_worker: Any) -> None:
    state = {"fail": True, "first": 0}

    async def handler(ctx: pgqrs.RunContext, params: Any) -> Any:
        await ctx.step("first", lambda: state.__setitem__("first", state["first"] + 1))

        async def second() -> str:
            if state["fail"]:
                raise ValueError("bad data")
            return "fixed"

        return await ctx.step("second", second)

    await run_worker("retryable", handler)
    run_id = await pgqrs.workflow("retryable").trigger().execute(store)
    with pytest.raises(pgqrs.RunFailed):
        await store.wait_for_run(run_id, timeout=10)
    state["fail"] = False
    assert (await store.retry_run(run_id)).status is RunStatus.QUEUED
    assert await store.wait_for_run(run_id, timeout=10) == "fixed"
    assert state["first"] == 1


async def test_list_runs_and_wait_timeout(store: pgqrs.Store) -> None:
    await store.create_workflow("a")
    await store.create_workflow("b")
    ids = [await pgqrs.workflow(n).trigger({"i": i}).execute(store) for i, n in enumerate("aab")]
    assert [r.id for r in await store.list_runs(workflow="a")] == ids[1::-1]
    assert len(await store.list_runs(status="QUEUED", limit=2)) == 2
    with pytest.raises(pgqrs.ValidationError):
        await store.list_runs(status="NOPE")
    with pytest.raises(pgqrs.WaitTimeout):
        await store.wait_for_run(ids[0], timeout=0.05)


async def test_update_step_bad_input(store: pgqrs.Store) -> None:
    await store.create_workflow("wf")
    run_id = await pgqrs.workflow("wf").trigger().execute(store)
    with pytest.raises(pgqrs.ValidationError, match="SUCCESS or"):
        await store.update_step(run_id, "s", "DONE", 1)
    with pytest.raises(pgqrs.ValidationError):
        await store.update_step(run_id, "s", StepStatus.PAUSED, 1)
    with pytest.raises(pgqrs.PayloadError):
        await store.update_step(run_id, "s", StepStatus.SUCCESS, object())
    with pytest.raises(pgqrs.RunNotFound):
        await store.update_step(999_999, "s", StepStatus.SUCCESS, 1)
    with pytest.raises(pgqrs.RunNotFound):
        await store.resume_run(999_999)
    await store.update_step(run_id, "s", StepStatus.SUCCESS, 1)
    with pytest.raises(pgqrs.IllegalTransition):  # a success is final
        await store.update_step(run_id, "s", StepStatus.ERROR, "late")
    await store.cancel_run(run_id)
    with pytest.raises(pgqrs.IllegalTransition):
        await store.update_step(run_id, "t", StepStatus.SUCCESS, 1)
    assert [(s.name, s.output) for s in (await store.get_run(run_id)).steps] == [("s", 1)]


async def test_handler_must_be_async(store: pgqrs.Store) -> None:
    def not_async(ctx: Any, params: Any) -> None: ...

    with pytest.raises(pgqrs.HandlerError, match="async def"):
        pgqrs.consumer("w", None, "wf").handler(not_async)  # type: ignore[arg-type]
