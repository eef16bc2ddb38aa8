"""Input limits on both backends: one duration rule at every option that takes a duration,
and JSON values that come back from a replay exactly as the live call returned them."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

import pgqrs_sqla as pgqrs
from pgqrs_sqla.errors import MAX_DURATION_SECONDS

TOO_LONG = 1e12  # ~31,700 years: past the cap, and past year 9999 from now


async def _noop(message: pgqrs.Message) -> None: ...


async def _worker_rows(store: pgqrs.Store) -> int:
    async with store._read() as conn:
        w = store.tables.workers
        return int((await conn.execute(select(func.count()).select_from(w))).scalar_one())


def _refused(error: pgqrs.DurationError, option: str) -> None:
    assert error.option == option
    assert error.limit == MAX_DURATION_SECONDS
    assert option in str(error)


async def test_every_duration_option_is_capped(store: pgqrs.Store) -> None:
    """Each option that takes a duration refuses one past ten years (and NaN, inf,
    negatives) with a DurationError naming the option and the limit, before anything is
    written; at the cap itself the deadline is stored and read back on both backends."""
    await store.create_workflow("wf")
    await store.create_queue("q")
    builder = pgqrs.consumer("w", None, "q").handler(_noop)

    sync_cases: list[tuple[str, Callable[[], Any]]] = [
        ("retry_after", lambda: pgqrs.TransientError("x", retry_after=1e13)),
        ("retry_after", lambda: pgqrs.TransientError("x", retry_after=TOO_LONG)),
        ("retry_after", lambda: pgqrs.TransientError("x", retry_after=float("nan"))),
        ("pause duration", lambda: pgqrs.Step.pause(timedelta(days=10**7))),
        ("pause duration", lambda: pgqrs.Step.pause(float("inf"))),
        ("RetryPolicy base", lambda: pgqrs.RetryPolicy(base=TOO_LONG)),
        ("RetryPolicy cap", lambda: pgqrs.RetryPolicy(cap=float("inf"))),
        ("RetryPolicy cap", lambda: pgqrs.RetryPolicy(cap=-1)),
        ("delay", lambda: pgqrs.workflow("wf").trigger({}, delay=timedelta(days=4000))),
        ("delay", lambda: pgqrs.workflow("wf").trigger({}, delay=10**400)),
    ]
    for option, make in sync_cases:
        with pytest.raises(pgqrs.DurationError) as info:
            make()
        _refused(info.value, option)

    async_cases: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("visibility_timeout", lambda: builder.create(store, visibility_timeout=TOO_LONG)),
        ("visibility_timeout", lambda: builder.create(store, visibility_timeout=0)),
        ("poll_interval", lambda: builder.create(store, poll_interval=TOO_LONG)),
        ("heartbeat_interval", lambda: builder.create(store, heartbeat_interval=TOO_LONG)),
        ("delay", lambda: store.queue("q").enqueue(1, delay=TOO_LONG)),
        ("delay", lambda: store.queue("q").enqueue_batch([1, 2], delay=timedelta(days=10**6))),
        ("timeout", lambda: store.wait_for_run(1, timeout=TOO_LONG)),
    ]
    for option, call in async_cases:
        with pytest.raises(pgqrs.DurationError) as info:
            await call()
        _refused(info.value, option)
    assert await _worker_rows(store) == 0  # no worker registered by a refused create()
    assert (await store.queue_stats("q"))[0] == pgqrs.QueueStats("q", 0, 0, 0, 0, 0, None)

    # The lease operations of a live worker.
    worker = await builder.create(store, own_pool=False)
    await store.queue("q").enqueue("m")
    [msg] = await worker.dequeue()
    lease_cases: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("extend() seconds", lambda: worker.extend(msg, TOO_LONG)),
        ("delay", lambda: worker.release(msg, delay=TOO_LONG)),
        ("delay", lambda: worker.fail(msg, "e", delay=TOO_LONG)),
        ("visibility_timeout", lambda: worker.dequeue(visibility_timeout=TOO_LONG)),
        ("timeout", lambda: worker.run_until_idle(timeout=TOO_LONG)),
        ("grace", lambda: worker.stop(grace=float("nan"))),
    ]
    for option, call in lease_cases:
        with pytest.raises(pgqrs.DurationError) as info:
            await call()
        _refused(info.value, option)

    # At the cap: now + ten years is stored and read back on both backends.
    await worker.extend(msg, MAX_DURATION_SECONDS)
    await worker.release(msg, delay=timedelta(seconds=MAX_DURATION_SECONDS))
    far = await store.queue("q").enqueue("far", delay=MAX_DURATION_SECONDS)
    run = await pgqrs.workflow("wf").trigger({}, delay=MAX_DURATION_SECONDS).execute(store)
    assert (await store.get_run(run)).status is pgqrs.RunStatus.QUEUED
    stats = (await store.queue_stats("q"))[0]
    assert (stats.ready, stats.delayed) == (0, 2)
    capped = (
        await pgqrs.consumer("w2", None, "q")
        .handler(_noop)
        .create(
            store,
            visibility_timeout=MAX_DURATION_SECONDS,
            poll_interval=MAX_DURATION_SECONDS,
            own_pool=False,
        )
    )
    assert capped.visibility_timeout == MAX_DURATION_SECONDS
    await worker.stop()
    await capped.stop()
    assert far > 0


async def test_live_step_values_equal_replayed_ones(store: pgqrs.Store) -> None:
    """A step's live return value is the stored one (a tuple comes back a list), so a
    redelivery replaying the recorded steps sees exactly what the first delivery saw; a
    value JSON would change (an int key) is refused with the path inside it."""
    await store.create_workflow("wf")
    seen: list[list[Any]] = []

    async def handler(ctx: pgqrs.RunContext, params: Any) -> Any:
        values = [
            await ctx.step("pair", lambda: (1, 2)),
            await ctx.step("nested", lambda: {"a": (1, ("b",))}),
        ]
        try:
            await ctx.step("int_key", lambda: {"data": {1: "x"}})
        except pgqrs.PayloadError as error:
            values.append((error.reason, error.path))
        seen.append(values)
        if len(seen) == 1:
            await ctx.step("again", _fail_once)
        return values[0][1]

    attempts: list[int] = []

    def _fail_once() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise pgqrs.TransientError("once", retry_after=0)

    run = await pgqrs.workflow("wf").trigger({}).execute(store)
    worker = await pgqrs.consumer("w", None, "wf").handler(handler).create(store)
    await worker.run_until_idle(timeout=60)
    assert await store.wait_for_run(run, timeout=30) == 2
    assert len(seen) == 2  # live, then a redelivery that replayed the recorded steps
    live, replayed = seen
    assert live[:2] == replayed[:2] == [[1, 2], {"a": [1, ["b"]]}]
    assert live[2] == replayed[2] == ("key_not_str", "$.data[1]")
    assert type(live[0]) is list


class Colour(enum.Enum):
    RED = "red"


async def test_json_default_encodes_ids_dates_and_decimals(db_url: str) -> None:
    """With ``json_default=pgqrs.json_default`` UUIDs, datetimes, Decimals and Enums are
    stored (and returned live) as their strings, in params, payloads and step results;
    without it they are refused naming the path."""
    ident = uuid.UUID(int=7)
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    params = {"id": ident, "at": when, "amount": Decimal("1.10"), "colour": Colour.RED}
    stored = {
        "id": str(ident),
        "at": "2026-01-02T03:04:05+00:00",
        "amount": "1.10",
        "colour": "red",
    }
    plain = await pgqrs.connect(db_url)
    try:
        await plain.create_workflow("wf")
        with pytest.raises(pgqrs.PayloadError) as info:
            await pgqrs.workflow("wf").trigger(params).execute(plain)
        assert (info.value.reason, info.value.path) == ("unsupported_type", "$.id")
        async with AsyncSession(plain.engine) as session, session.begin():
            with pytest.raises(pgqrs.PayloadError):
                await pgqrs.workflow("wf").trigger(params).execute(session)
            # The workflow reference's own hook, in the caller's transaction.
            in_session = (
                await pgqrs.workflow("wf", json_default=pgqrs.json_default)
                .trigger(params)
                .execute(session)
            )
    finally:
        await plain.close()

    store = await pgqrs.connect(db_url, json_default=pgqrs.json_default)
    try:
        run = await pgqrs.workflow("wf").trigger(params).execute(store)
        assert (await store.get_run(run)).input == stored
        assert (await store.get_run(in_session)).input == stored
        await store.create_queue("q")
        await store.queue("q").enqueue({"ids": {ident}})
        live: list[Any] = []

        async def handler(ctx: pgqrs.RunContext, p: Any) -> Any:
            live.append(await ctx.step("id", lambda: ident))
            return p

        worker = await pgqrs.consumer("w", None, "wf").handler(handler).create(store)
        await worker.run_until_idle(timeout=60)
        assert await store.wait_for_run(run, timeout=30) == stored
        assert live[0] == str(ident)
        reader = await pgqrs.consumer("r", None, "q").handler(_noop).create(store)
        [msg] = await reader.dequeue()
        assert msg.payload == {"ids": [str(ident)]}
        await reader.stop()
    finally:
        await store.close()


async def test_a_failed_delivery_s_error_text_is_stored_escaped(store: pgqrs.Store) -> None:
    """Worker.fail() with error text holding NUL and a lone surrogate (which PostgreSQL's
    text refuses): stored escaped, not a raw driver error."""
    await store.create_queue("q")
    worker = await pgqrs.consumer("w", None, "q").handler(_noop).create(store, own_pool=False)
    await store.queue("q").enqueue("m")
    [msg] = await worker.dequeue()
    assert await worker.fail(msg, "boom\x00 and \ud83d") is False
    async with store._read() as conn:
        stored = (
            await conn.execute(
                text("SELECT last_error FROM pgqrs_messages WHERE id = :id"), {"id": msg.id}
            )
        ).scalar_one()
    await worker.stop()
    assert "\x00" not in stored and "boom" in stored
    stored.encode()  # no lone surrogate left: encodes as UTF-8


async def test_a_workflow_output_is_encoded_by_json_default(db_url: str) -> None:
    """The store's json_default encodes a run's output too, and wait_for_run returns it as
    stored (the UUID's string), the same as a later read."""
    store = await pgqrs.connect(db_url, json_default=pgqrs.json_default)
    try:
        await store.create_workflow("ids")
        key = uuid.UUID(int=7)

        async def handler(ctx: pgqrs.RunContext, params: Any) -> Any:
            return {"id": key}

        run = await pgqrs.workflow("ids").trigger({}).execute(store)
        worker = await pgqrs.consumer("w", None, "ids").handler(handler).create(store)
        await worker.run_until_idle(timeout=30)
        await worker.stop()
        assert await store.wait_for_run(run, timeout=5) == {"id": str(key)}
        assert (await store.get_run(run)).status is pgqrs.RunStatus.SUCCESS
    finally:
        await store.close()
