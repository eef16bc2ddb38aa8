"""The run delivery path on both backends: an outcome that cannot be recorded counts as a
failed delivery (and dead-letters the run), what a run's error records, a superseded
delivery runs no further step body, a transactional step handed an awaitable, and
per-workflow ``max_deliveries``."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, text

import pgqrs_sqla as pgqrs
from pgqrs_sqla import RunStatus, Step, StepStatus, TransientError
from tests._rows import message_of
from tests._wait import failed_run


async def start_worker(
    store: pgqrs.Store, name: str, workflow: str, handler: Any, **options: Any
) -> pgqrs.Worker:
    options.setdefault("poll_interval", 0.05)
    worker = await pgqrs.consumer(name, None, workflow).handler(handler).create(store, **options)
    worker.start()
    return worker


# ---------------------------------------------------------------- outcomes that cannot be stored


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


async def test_an_unprintable_exception_is_recorded_with_its_type_and_a_placeholder(
    store: pgqrs.Store, run_worker: Any
) -> None:
    deliveries: list[int] = []

    async def handler(ctx: pgqrs.RunContext, params: Any) -> Any:
        deliveries.append(ctx.attempt)
        raise Unprintable()

    await run_worker("unprintable", handler)
    run_id = await pgqrs.workflow("unprintable").trigger().execute(store)
    run = await failed_run(store, run_id)
    assert run.error["type"].endswith("Unprintable")
    assert "unprintable Unprintable" in run.error["message"]
    assert deliveries == [1]


@pytest.mark.parametrize(
    "text_", ["NUL \x00 in the middle", "a lone surrogate \ud800 here"], ids=["nul", "surrogate"]
)
async def test_error_text_with_nul_or_lone_surrogates_is_stored_escaped(
    store: pgqrs.Store, run_worker: Any, text_: str
) -> None:
    deliveries: list[int] = []

    async def handler(ctx: pgqrs.RunContext, params: Any) -> Any:
        deliveries.append(ctx.attempt)

        async def bad() -> None:
            raise ValueError(text_)

        await ctx.step("bad", bad)

    await run_worker("nul", handler)
    run_id = await pgqrs.workflow("nul").trigger().execute(store)
    run = await failed_run(store, run_id)
    assert run.error["type"] == "builtins.ValueError"
    assert "\x00" not in run.error["message"]
    assert "\\x00" in run.error["message"] or "\\ud800" in run.error["message"]
    assert [(s.name, s.status) for s in run.steps] == [("bad", StepStatus.ERROR)]
    assert "\\x00" in run.steps[0].error["message"] or "\\ud800" in run.steps[0].error["message"]
    assert deliveries == [1]


def _huge_retry_after() -> None:
    raise TransientError("later", retry_after=1e13)


def _huge_pause() -> Any:
    return Step.pause(timedelta(days=999_999_999))


@pytest.mark.parametrize("body", [_huge_retry_after, _huge_pause], ids=["retry_after", "pause"])
async def test_an_outcome_the_database_refuses_counts_as_a_failed_delivery(
    store: pgqrs.Store, body: Any
) -> None:
    """A delay past what a timestamp holds (PostgreSQL: out of range; SQLite: NULL against
    NOT NULL) cannot be recorded. Each such delivery counts as failed, and the run ends
    ERROR, dead, at max_deliveries — not redelivered forever."""
    deliveries: list[int] = []

    async def handler(ctx: pgqrs.RunContext, params: Any) -> Any:
        deliveries.append(ctx.attempt)
        await ctx.step("far", body)

    await store.create_workflow(
        "far", retry=pgqrs.RetryPolicy(base=0.01, cap=0.05), max_deliveries=3
    )
    worker = await start_worker(store, "w-far", "far", handler)
    try:
        run_id = await pgqrs.workflow("far").trigger().execute(store)
        with pytest.raises(pgqrs.RunFailed):
            await store.wait_for_run(run_id, timeout=60)
    finally:
        await worker.stop(grace=5)
    run = await store.get_run(run_id)
    message = await message_of(store, run_id)
    assert run.status is RunStatus.ERROR
    assert 1 <= len(deliveries) <= 3
    assert message.read_ct == len(deliveries)
    if len(deliveries) == 3:  # (a call-site bound on durations would end it at once instead)
        assert run.error["type"] == "pgqrs_sqla.DeadLetter"
        assert message.archive_reason == "dead" and message.failed_ct == 3
        assert run.error["last_error"]["message"]


# ---------------------------------------------------------------- what a run's error records


async def test_an_exhausted_transient_error_records_its_cause(
    store: pgqrs.Store, run_worker: Any
) -> None:
    async def handler(ctx: pgqrs.RunContext, params: Any) -> Any:
        async def connect() -> None:
            try:
                raise ConnectionError("[Errno 111] connection refused")
            except ConnectionError as e:
                raise TransientError("upstream down", retry_after=0.01) from e

        await ctx.step("connect", connect)

    await run_worker("cause", handler, retry=pgqrs.RetryPolicy(max_attempts=2, base=0.01))
    run_id = await pgqrs.workflow("cause").trigger().execute(store)
    with pytest.raises(pgqrs.RunFailed) as failed:
        await store.wait_for_run(run_id, timeout=30)
    run = await store.get_run(run_id)
    assert run.error["type"] == "builtins.ConnectionError"
    assert run.error["message"] == "[Errno 111] connection refused"
    assert run.error["via"] == {
        "type": "pgqrs_sqla.errors.TransientError",
        "message": "upstream down",
    }
    assert run.error["attempts"] == 2 and run.error["step"] == "connect"
    line = str(failed.value)
    assert "\n" not in line and "Traceback" not in line
    assert "builtins.ConnectionError: [Errno 111] connection refused" in line
    assert "TransientError" in line
    assert failed.value.error == run.error
    assert "Traceback" in (failed.value.traceback or "")


# ---------------------------------------------------------------- a superseded delivery


async def test_a_delivery_that_lost_its_lease_runs_no_further_body(
    store: pgqrs.Store, wait_until: Any
) -> None:
    """Worker 1 records step a, then stalls (no heartbeat, the handler parked) until its
    lease expires, worker 2 takes the run over, runs b and finishes it. When worker 1
    resumes, its step b body must not run: its lease is gone."""
    await store.create_workflow("stall")
    stalled, resume = asyncio.Event(), asyncio.Event()
    bodies: list[tuple[str, str]] = []

    def handler_for(who: str, stall: bool) -> Any:
        async def handler(ctx: pgqrs.RunContext, params: Any) -> str:
            async def a() -> str:
                bodies.append((who, "a"))
                return "A"

            async def b() -> str:
                bodies.append((who, "b"))
                return "B"

            await ctx.step("a", a)
            if stall:
                stalled.set()
                await resume.wait()
            await ctx.step("b", b)
            return who

        return handler

    first = await start_worker(
        store,
        "w1",
        "stall",
        handler_for("w1", True),
        visibility_timeout=1.0,
        heartbeat_interval=3600,
        concurrency=1,
    )
    try:
        run_id = await pgqrs.workflow("stall").trigger().execute(store)
        await asyncio.wait_for(stalled.wait(), 30)
        second = await start_worker(store, "w2", "stall", handler_for("w2", False))
        try:
            assert await store.wait_for_run(run_id, timeout=60) == "w2"
        finally:
            await second.stop(grace=5)
        resume.set()
        await wait_until(lambda: _value(first.stats.lease_lost == 1), timeout=30)
    finally:
        resume.set()
        await first.stop(grace=5)
    assert ("w1", "b") not in bodies
    assert bodies.count(("w2", "b")) == 1
    run = await store.get_run(run_id)
    assert run.status is RunStatus.SUCCESS and run.output == "w2"


async def _value(value: Any) -> Any:
    return value


@pytest.fixture
def refreshes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the lease refreshes (the round trip a step body pays when its deadline passed)."""
    from pgqrs_sqla import _execution as context

    calls: list[int] = []
    real = context.refresh_lease_stmt

    def counted(t: Any) -> Any:
        calls.append(1)
        return real(t)

    monkeypatch.setattr(context, "refresh_lease_stmt", counted)
    return calls


async def test_checking_the_lease_costs_no_round_trip_while_it_is_fresh(
    store: pgqrs.Store, run_worker: Any, refreshes: list[int]
) -> None:
    async def handler(ctx: pgqrs.RunContext, params: Any) -> int:
        total = 0
        for i in range(5):
            total += await ctx.step(f"s{i}", lambda i=i: i)
        return total

    await run_worker("fresh", handler, visibility_timeout=30)
    run_ids = [await pgqrs.workflow("fresh").trigger().execute(store) for _ in range(3)]
    for run_id in run_ids:
        assert await store.wait_for_run(run_id, timeout=30) == 10
    assert refreshes == []


async def test_a_long_delivery_refreshes_its_lease_and_goes_on(
    store: pgqrs.Store, wait_until: Any, refreshes: list[int]
) -> None:
    """Past the tracked deadline, a step body checks its lease with one fenced round trip:
    still held (no one claimed the run), it extends it and runs."""
    await store.create_workflow("slow")
    stalled, resume = asyncio.Event(), asyncio.Event()
    bodies: list[str] = []

    async def handler(ctx: pgqrs.RunContext, params: Any) -> str:
        await ctx.step("a", lambda: bodies.append("a") or "A")
        stalled.set()
        await resume.wait()
        return str(await ctx.step("b", lambda: bodies.append("b") or "B"))

    worker = await start_worker(
        store, "w1", "slow", handler, visibility_timeout=1.0, heartbeat_interval=3600
    )
    try:
        run_id = await pgqrs.workflow("slow").trigger().execute(store)
        await asyncio.wait_for(stalled.wait(), 30)
        message = await message_of(store, run_id)

        async def expired() -> bool:
            async with store._read() as conn:
                now = (await conn.execute(select(pgqrs.dialects.utcnow()))).scalar_one()
            return bool(pgqrs.dialects.aware(now) > pgqrs.dialects.aware(message.vt))  # type: ignore[operator]

        await wait_until(expired, timeout=30)
        resume.set()
        assert await store.wait_for_run(run_id, timeout=30) == "B"
    finally:
        resume.set()
        await worker.stop(grace=5)
    assert bodies == ["a", "b"]
    assert refreshes  # b paid one round trip (a may have too, on a loaded machine)


# ---------------------------------------------------------------- transactional step misuse


async def test_a_transactional_lambda_returning_a_coroutine_is_a_handler_error(
    store: pgqrs.Store, run_worker: Any
) -> None:
    async with store._begin() as conn:
        await conn.execute(text("CREATE TABLE app_rows (id INTEGER PRIMARY KEY)"))

    async def save(session: Any) -> str:  # what the README's example used to call
        return "saved"

    def step(session: Any) -> Any:
        session.execute(text("INSERT INTO app_rows (id) VALUES (1)"))
        return save(session)

    async def handler(ctx: pgqrs.RunContext, params: Any) -> Any:
        return await ctx.step("save", step, transactional=True)

    await run_worker("trap", handler)
    run_id = await pgqrs.workflow("trap").trigger().execute(store)
    run = await failed_run(store, run_id)
    assert run.error["type"] == "pgqrs_sqla.errors.HandlerError"
    assert "async def" in run.error["message"] and "AsyncSession" in run.error["message"]
    assert run.error["step"] == "save"
    async with store._read() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM app_rows"))).scalar_one() == 0


# ---------------------------------------------------------------- max_deliveries per workflow


async def test_max_deliveries_defaults_to_ten_and_is_set_per_workflow(store: pgqrs.Store) -> None:
    await store.create_workflow("a")
    assert (await store.get_queue("a")).max_deliveries == 10
    await store.create_workflow("a")  # unchanged when not given
    assert (await store.get_queue("a")).max_deliveries == 10
    await store.create_workflow("a", max_deliveries=3)
    assert (await store.get_queue("a")).max_deliveries == 3
    await store.create_workflow("b", max_deliveries=25)
    assert (await store.get_queue("b")).max_deliveries == 25
    assert (await store.get_queue("a")).max_deliveries == 3


@pytest.mark.parametrize("bad", [0, -1, 2.5, "3", True])
async def test_bad_max_deliveries_is_a_validation_error(store: pgqrs.Store, bad: Any) -> None:
    with pytest.raises(pgqrs.ValidationError, match="max_deliveries") as raised:
        await store.create_workflow("bad", max_deliveries=bad)
    assert raised.value.value == bad
    with pytest.raises(pgqrs.WorkflowNotFound):
        await store.get_workflow("bad")
