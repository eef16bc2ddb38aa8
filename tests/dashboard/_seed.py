"""Runs in every state, made by real workers on the test's database (both backends).

``seed(store, start_worker)`` returns the run id of each state; the RUNNING run holds its
worker until ``Seeded.release`` is set (the fixture sets it before the workers stop).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pgqrs_sqla as pgqrs
from pgqrs_sqla.models import RunStatus

#: what the ERROR run's error and the SUCCESS run's input carry: must render as text
SCRIPT = "<script>alert('pwned')</script>"


@dataclass
class Seeded:
    """The run id of each state, and the event that lets the RUNNING run finish."""

    runs: dict[str, int] = field(default_factory=dict)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    dead_message: int | None = None


async def seed(store: pgqrs.Store, start: Callable[..., Awaitable[pgqrs.Worker]]) -> Seeded:
    """Make one run per state (and a dead letter, a schedule, a child run)."""
    seeded = Seeded()

    async def ok(ctx: pgqrs.RunContext, params: Any) -> Any:
        fetched = await ctx.step("fetch", lambda: {"n": 1})
        await ctx.step("save", lambda: fetched)
        return {"saved": fetched, "note": params.get("note")}

    async def boom(ctx: pgqrs.RunContext, params: Any) -> Any:
        await ctx.step("fetch", lambda: 1)

        def fail() -> None:
            raise RuntimeError(f"card declined {SCRIPT}")

        await ctx.step("charge", fail)

    async def approval(ctx: pgqrs.RunContext, params: Any) -> Any:
        await ctx.step("prepare", lambda: "ready")
        answer = await ctx.wait_for_event("approved")
        return {"approved": answer}

    async def ask(ctx: pgqrs.RunContext, params: Any) -> Any:
        def human() -> None:
            raise pgqrs.Step.pause(3600)

        return {"answer": await ctx.step("human", human)}

    async def nap(ctx: pgqrs.RunContext, params: Any) -> Any:
        await ctx.sleep("cool_off", 3600)

    async def busy(ctx: pgqrs.RunContext, params: Any) -> Any:
        await ctx.step("first", lambda: 1)
        await seeded.release.wait()
        return "done"

    async def parent(ctx: pgqrs.RunContext, params: Any) -> Any:
        child = await ctx.start_child("spawn", pgqrs.workflow("ok"), {"note": "child"})
        return await ctx.wait_for_run("joined", child)

    once = pgqrs.RetryPolicy(max_attempts=1)
    await start("ok", ok)
    await start("boom", boom, retry=once)
    await start("approval", approval)
    await start("ask", ask)
    await start("nap", nap)
    await start("busy", busy)
    await start("parent", parent)
    await store.create_workflow("idle")  # no worker: its runs stay QUEUED

    runs = seeded.runs
    runs["success"] = await pgqrs.workflow("ok").trigger({"note": SCRIPT}).execute(store)
    runs["error"] = await pgqrs.workflow("boom").trigger({}).execute(store)
    runs["waiting_event"] = await pgqrs.workflow("approval").trigger({}).execute(store)
    runs["paused_step"] = await pgqrs.workflow("ask").trigger({}).execute(store)
    runs["sleeping"] = await pgqrs.workflow("nap").trigger({}).execute(store)
    runs["running"] = await pgqrs.workflow("busy").trigger({}).execute(store)
    runs["parent"] = await pgqrs.workflow("parent").trigger({}).execute(store)
    runs["queued"] = (
        await pgqrs.workflow("idle").trigger({"n": 1}, idempotency_key="order-42").execute(store)
    )
    runs["cancelled"] = await pgqrs.workflow("idle").trigger({"n": 2}).execute(store)
    await store.cancel_run(runs["cancelled"])

    ended = (RunStatus.SUCCESS, RunStatus.ERROR, RunStatus.CANCELLED)
    await store.wait_for_status(runs["success"], *ended, timeout=30)
    await store.wait_for_status(runs["error"], *ended, timeout=30)
    await store.wait_for_status(runs["parent"], *ended, timeout=30)
    for name in ("waiting_event", "paused_step", "sleeping"):
        await store.wait_for_status(runs[name], RunStatus.PAUSED, timeout=30)
    await store.wait_for_status(runs["running"], RunStatus.RUNNING, timeout=30)

    # a dead letter on a plain queue: one delivery, failed
    await store.create_queue("mail", max_deliveries=1)
    mailer = (
        await pgqrs.consumer("mailer", None, "mail")
        .handler(_never, queue="mail")
        .create(store, own_pool=False)
    )
    seeded.dead_message = await store.queue("mail").enqueue({"to": SCRIPT})
    [message] = await mailer.dequeue(1)
    await mailer.fail(message, f"smtp down {SCRIPT}")
    await mailer.stop(grace=5)

    await store.create_schedule("nightly", "idle", cron="0 3 * * *")
    return seeded


async def _never(message: Any) -> None:
    raise AssertionError("the mail queue is failed by hand")
