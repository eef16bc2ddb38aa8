"""Child workflows (``ctx.start_child``, ``ctx.wait_for_run(s)``, ``ctx.child``) and deadlines.

On both backends: a child is started once per parent and recorded; a parent waits durably,
holding no worker, and is woken when its child ends (once, for a fan-in); cancelling a
parent cancels its children; a run past its deadline ends CANCELLED with the reason, and
whatever waits on it is woken.
"""

from __future__ import annotations

import asyncio
import dataclasses
import decimal
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

import pgqrs_sqla as pgqrs
from pgqrs_sqla import RunStatus, StepStatus
from tests._wait import eventually


async def _runs_of(store: pgqrs.Store, workflow: str) -> int:
    r, w = store.tables.runs, store.tables.workflows
    async with store.engine.connect() as conn:
        count = await conn.scalar(
            select(func.count())
            .select_from(r.join(w, w.c.id == r.c.workflow_id))
            .where(w.c.workflow_name == workflow)
        )
        return int(count or 0)


async def _children_of(store: pgqrs.Store, run_id: int) -> list[int]:
    return (await store.get_run(run_id)).children


async def _reached(store: pgqrs.Store, run_id: int, step: str) -> bool:
    return step in {s.name for s in (await store.get_run(run_id)).steps}


async def _serve(store: pgqrs.Store, handlers: dict[str, Any], **options: Any) -> pgqrs.Worker:
    for name in handlers:
        await store.create_workflow(name)
    builder = pgqrs.consumer("family", None, *handlers)
    for name, handler in handlers.items():
        builder = builder.handler(handler, queue=name)
    options.setdefault("poll_interval", 0.05)
    return await builder.create(store, **options)


async def test_a_parent_starts_a_child_once_and_gets_its_output(store: pgqrs.Store) -> None:
    parent_calls: list[int] = []
    parents: list[int | None] = []

    async def parent(ctx: pgqrs.RunContext, params: Any) -> Any:
        parent_calls.append(ctx.attempt)
        child_id = await ctx.start_child("pay", "payment", {"amount": params["amount"]})
        receipt = await ctx.wait_for_run("paid", child_id)
        return {"child": child_id, "receipt": receipt}

    async def payment(ctx: pgqrs.RunContext, params: Any) -> Any:
        parents.append(ctx.parent_run_id)
        return await ctx.step("charge", lambda: f"charged {params['amount']}")

    worker = await _serve(store, {"order": parent, "payment": payment})
    async with worker:
        run_id = await pgqrs.workflow("order").trigger({"amount": 5}).execute(store)
        output = await store.wait_for_run(run_id, timeout=20)
    assert output["receipt"] == "charged 5"
    assert await _runs_of(store, "payment") == 1  # the replay did not start a second child
    assert len(parent_calls) >= 2  # it parked while the child ran, and came back
    parent_run = await store.get_run(run_id)
    assert parent_run.children == [output["child"]]
    child_run = await store.get_run(output["child"])
    assert child_run.parent_run_id == run_id
    assert parents == [run_id]  # what the child's ctx says
    steps = {s.name: (s.kind, s.status) for s in parent_run.steps}
    assert steps == {"pay": ("child", StepStatus.SUCCESS), "paid": ("run", StepStatus.SUCCESS)}


async def test_a_failed_or_cancelled_child_raises_in_the_parent(store: pgqrs.Store) -> None:
    async def parent(ctx: pgqrs.RunContext, params: Any) -> Any:
        try:
            return await ctx.child("job", "flaky", params)
        except pgqrs.RunFailed as failed:
            return {"failed": failed.error["message"]}
        except pgqrs.RunCancelled as cancelled:
            return {"cancelled": cancelled.run_id}

    async def flaky(ctx: pgqrs.RunContext, params: Any) -> Any:
        if params["mode"] == "fail":
            raise ValueError("card declined")
        await ctx.sleep("forever", 3600)

    worker = await _serve(store, {"parent": parent, "flaky": flaky})
    async with worker:
        failing = await pgqrs.workflow("parent").trigger({"mode": "fail"}).execute(store)
        assert await store.wait_for_run(failing, timeout=20) == {"failed": "card declined"}
        sleeping = await pgqrs.workflow("parent").trigger({"mode": "sleep"}).execute(store)
        await store.wait_for_status(sleeping, RunStatus.PAUSED, timeout=20)
        (child,) = await eventually(
            lambda: _children_of(store, sleeping), what="the parent started its child"
        )
        await store.wait_for_status(child, RunStatus.PAUSED, timeout=20)
        await store.cancel_run(child)  # the parent waiting on it is woken
        assert await store.wait_for_run(sleeping, timeout=20) == {"cancelled": child}


async def test_fan_out_200_children_and_the_parent_is_woken_once(store: pgqrs.Store) -> None:
    deliveries: list[int] = []

    async def parent(ctx: pgqrs.RunContext, params: Any) -> Any:
        deliveries.append(ctx.attempt)
        ids = [await ctx.start_child(f"part-{i}", "part", {"i": i}) for i in range(params["n"])]
        ended = await ctx.wait_for_runs("all", ids)
        return sum(row["output"] for row in ended)

    async def part(ctx: pgqrs.RunContext, params: Any) -> Any:
        return params["i"]

    worker = await _serve(store, {"fan": parent, "part": part}, concurrency=16, batch_size=16)
    async with worker:
        run_id = await pgqrs.workflow("fan").trigger({"n": 200}).execute(store)
        assert await store.wait_for_run(run_id, timeout=120) == sum(range(200))
    assert await _runs_of(store, "part") == 200
    # The first delivery fanned out and parked; the last child's end woke it once.
    assert len(deliveries) == 2, deliveries


async def test_cancelling_a_parent_cancels_its_unfinished_children(store: pgqrs.Store) -> None:
    async def parent(ctx: pgqrs.RunContext, params: Any) -> Any:
        first = await ctx.start_child("a", "sleeper", {})
        second = await ctx.start_child("b", "sleeper", {})
        return await ctx.wait_for_runs("both", [first, second])

    async def sleeper(ctx: pgqrs.RunContext, params: Any) -> Any:
        await ctx.sleep("nap", 3600)

    worker = await _serve(store, {"boss": parent, "sleeper": sleeper})
    async with worker:
        run_id = await pgqrs.workflow("boss").trigger().execute(store)

        async def children_parked() -> bool:
            run = await store.get_run(run_id)
            if len(run.children) != 2 or run.status is not RunStatus.PAUSED:
                return False
            kids = [await store.get_run(c) for c in run.children]
            return all(k.status is RunStatus.PAUSED for k in kids)

        await eventually(children_parked, what="parent and children parked")
        info = await store.cancel_run(run_id)
    assert info.status is RunStatus.CANCELLED
    for child in info.children:
        assert (await store.get_run(child)).status is RunStatus.CANCELLED


async def test_waiting_on_itself_or_a_missing_run_is_a_typed_error(store: pgqrs.Store) -> None:
    async def waiter(ctx: pgqrs.RunContext, params: Any) -> Any:
        target = ctx.run_id if params["target"] == "self" else 987654
        try:
            await ctx.wait_for_run("w", target)
        except (pgqrs.ValidationError, pgqrs.RunNotFound) as error:
            return type(error).__name__
        return "waited"

    worker = await _serve(store, {"selfish": waiter})
    async with worker:
        me = await pgqrs.workflow("selfish").trigger({"target": "self"}).execute(store)
        missing = await pgqrs.workflow("selfish").trigger({"target": "x"}).execute(store)
        assert await store.wait_for_run(me, timeout=20) == "ValidationError"
        assert await store.wait_for_run(missing, timeout=20) == "RunNotFound"


async def test_a_wait_for_a_run_times_out_and_replays_the_timeout(store: pgqrs.Store) -> None:
    seen: list[str] = []

    async def parent(ctx: pgqrs.RunContext, params: Any) -> Any:
        child = await ctx.start_child("slow", "slow", {})
        try:
            await ctx.wait_for_run("slow:result", child, timeout=0.3)
        except pgqrs.WaitTimeout as timeout:
            seen.append(f"{timeout.run_id}:{timeout.status}")
        return await ctx.step("gate", lambda: pgqrs.Step.pause(3600))

    async def slow(ctx: pgqrs.RunContext, params: Any) -> Any:
        await ctx.sleep("long", 3600)

    worker = await _serve(store, {"impatient": parent, "slow": slow})
    async with worker:
        run_id = await pgqrs.workflow("impatient").trigger().execute(store)
        await eventually(lambda: _reached(store, run_id, "gate"), what="the run reached gate")
        await store.update_step(run_id, "gate", StepStatus.SUCCESS, "done")
        await store.resume_run(run_id)
        assert await store.wait_for_run(run_id, timeout=20) == "done"
    assert len(seen) == 2 and seen[0] == seen[1]  # raised again on replay, the same


# ---------------------------------------------------------------- deadlines


async def test_a_run_past_its_deadline_is_cancelled_with_the_reason(
    store: pgqrs.Store,
) -> None:
    async def napper(ctx: pgqrs.RunContext, params: Any) -> Any:
        await ctx.step("before", lambda: "ok")
        await ctx.sleep("long", 3600)
        return "woke"

    worker = await _serve(store, {"napper": napper})
    async with worker:
        run_id = await pgqrs.workflow("napper").trigger(timeout=0.5).execute(store)
        with pytest.raises(pgqrs.RunCancelled):
            await store.wait_for_run(run_id, timeout=20)
    run = await store.get_run(run_id)
    assert run.status is RunStatus.CANCELLED and run.deadline_at is not None
    assert run.error["type"] == "pgqrs_sqla.DeadlineExceeded"
    assert run.finished_at is not None and run.finished_at >= run.deadline_at


async def test_a_workflow_default_timeout_applies_and_wakes_the_waiting_parent(
    store: pgqrs.Store,
) -> None:
    async def parent(ctx: pgqrs.RunContext, params: Any) -> Any:
        try:
            return await ctx.child("job", "bounded", {})
        except pgqrs.RunCancelled as cancelled:
            return {"cancelled": str(cancelled)}

    async def bounded(ctx: pgqrs.RunContext, params: Any) -> Any:
        await ctx.wait_for_event("never")

    await store.create_workflow("bounded", timeout=timedelta(seconds=0.5))
    assert (await store.create_workflow("bounded")).timeout == 0.5  # kept when left out
    worker = await _serve(store, {"waits": parent, "bounded": bounded})
    async with worker:
        run_id = await pgqrs.workflow("waits").trigger().execute(store)
        output = await store.wait_for_run(run_id, timeout=20)
    assert "DeadlineExceeded" in output["cancelled"]


@pytest.mark.parametrize("timeout", [0, -1, float("inf"), "1"])
async def test_a_bad_timeout_is_refused_before_anything_is_written(
    store: pgqrs.Store, timeout: Any
) -> None:
    await store.create_workflow("bounded2")
    with pytest.raises(pgqrs.DurationError):
        pgqrs.workflow("bounded2").trigger(timeout=timeout)
    with pytest.raises(pgqrs.DurationError):
        await store.create_workflow("bounded2", timeout=timeout)
    assert await _runs_of(store, "bounded2") == 0


# ---------------------------------------------------------------- upgrading in-flight runs


async def test_a_patch_is_taken_by_new_runs_and_skipped_by_runs_past_it(
    store: pgqrs.Store,
) -> None:
    """A deploy inserts a fraud check before the approval: runs already waiting for the
    approval replay the old path; runs that reach that point on the new code take the new."""
    fraud_checks: list[int] = []

    async def v1(ctx: pgqrs.RunContext, params: Any) -> Any:
        await ctx.step("charge", lambda: "charged")
        return await ctx.wait_for_event("approved")

    async def v2(ctx: pgqrs.RunContext, params: Any) -> Any:
        await ctx.step("charge", lambda: "charged")
        if await ctx.patched("fraud-check"):
            await ctx.step("fraud", lambda: fraud_checks.append(ctx.run_id) or "clean")
        return await ctx.wait_for_event("approved")

    old_worker = await _serve(store, {"checkout": v1})
    async with old_worker:
        in_flight = await pgqrs.workflow("checkout").trigger().execute(store)
        await store.wait_for_status(in_flight, RunStatus.PAUSED, timeout=20)
        queued = await pgqrs.workflow("checkout").trigger(delay=0.5).execute(store)
    new_worker = await _serve(store, {"checkout": v2})  # the deploy: v1 stopped, v2 started
    async with new_worker:
        fresh = await pgqrs.workflow("checkout").trigger().execute(store)
        for run_id in (in_flight, queued, fresh):
            await store.wait_for_status(run_id, RunStatus.PAUSED, timeout=20)
            await store.send_event(run_id, "approved", run_id)
            assert await store.wait_for_run(run_id, timeout=20) == run_id
    assert sorted(fraud_checks) == sorted([queued, fresh])
    patches = {}
    for run_id in (in_flight, queued, fresh):
        steps = {s.name: s for s in (await store.get_run(run_id)).steps}
        patches[run_id] = (steps["fraud-check"].kind, steps["fraud-check"].output)
    assert patches == {
        in_flight: ("patch", False),
        queued: ("patch", True),
        fresh: ("patch", True),
    }


async def test_a_patch_id_asked_twice_in_one_run_is_refused(store: pgqrs.Store) -> None:
    async def twice(ctx: pgqrs.RunContext, params: Any) -> Any:
        await ctx.patched("p")
        try:
            await ctx.patched("p")
        except pgqrs.StepNameReused as reused:
            return reused.step_name
        return "asked twice"

    worker = await _serve(store, {"twice": twice})
    async with worker:
        run_id = await pgqrs.workflow("twice").trigger().execute(store)
        assert await store.wait_for_run(run_id, timeout=20) == "p"


async def test_a_child_that_would_be_its_own_parent_is_refused(store: pgqrs.Store) -> None:
    async def parent(ctx: pgqrs.RunContext, params: Any) -> Any:
        try:  # the key finds the parent's own run: it would become its own child
            await ctx.start_child("me", "loop", {}, idempotency_key="order-1")
        except pgqrs.ValidationError as refused:
            return refused.option
        return "started"

    worker = await _serve(store, {"loop": parent})
    async with worker:
        run_id = await pgqrs.workflow("loop").trigger(idempotency_key="order-1").execute(store)
        assert await store.wait_for_run(run_id, timeout=20) == "idempotency_key"
    run = await store.get_run(run_id)
    assert (run.parent_run_id, run.children) == (None, [])
    assert "me" not in {s.name for s in run.steps}


@dataclasses.dataclass
class Charge:
    order: uuid.UUID
    amount: decimal.Decimal


@dataclasses.dataclass
class Receipt:
    order: uuid.UUID
    charged: decimal.Decimal
    at: datetime


async def test_a_typed_child_gets_its_params_and_returns_its_result_by_their_types(
    store: pgqrs.Store,
) -> None:
    async def payment(ctx: pgqrs.RunContext, params: Charge) -> Receipt:
        assert isinstance(params.amount, decimal.Decimal)
        return Receipt(params.order, params.amount, datetime(2026, 12, 7, tzinfo=UTC))

    seen: list[Receipt] = []

    async def order(ctx: pgqrs.RunContext, params: Any) -> str:
        ref = pgqrs.workflow("typed_payment", payment)
        receipt = await ctx.child(
            "pay", ref, Charge(uuid.UUID(params["id"]), decimal.Decimal("9.90"))
        )
        seen.append(receipt)
        await ctx.step("gate", lambda: pgqrs.Step.pause(3600))  # so the next delivery replays
        return str(receipt.charged)

    worker = await _serve(store, {"typed_order": order, "typed_payment": payment})
    order_id = uuid.uuid4()
    async with worker:
        run_id = await pgqrs.workflow("typed_order").trigger({"id": str(order_id)}).execute(store)
        await eventually(lambda: _reached(store, run_id, "gate"), what="the order reached gate")
        await store.update_step(run_id, "gate", StepStatus.SUCCESS, "ok")
        await store.resume_run(run_id)
        assert await store.wait_for_run(run_id, timeout=20) == "9.90"
    expected = Receipt(order_id, decimal.Decimal("9.90"), datetime(2026, 12, 7, tzinfo=UTC))
    assert seen == [expected, expected]  # the first call and the replay: the same type


async def test_a_parent_past_its_deadline_cancels_its_children_and_a_retry_clears_it(
    store: pgqrs.Store,
) -> None:
    async def parent(ctx: pgqrs.RunContext, params: Any) -> Any:
        return await ctx.child("job", "slow_child", {})

    async def slow_child(ctx: pgqrs.RunContext, params: Any) -> Any:
        await ctx.sleep("nap", 0.3 if params.get("quick") else 3600)
        return "done"

    worker = await _serve(store, {"bounded_parent": parent, "slow_child": slow_child})
    async with worker:
        run_id = await pgqrs.workflow("bounded_parent").trigger(timeout=0.5).execute(store)
        with pytest.raises(pgqrs.RunCancelled):
            await store.wait_for_run(run_id, timeout=20)
        (child,) = (await store.get_run(run_id)).children
        assert (await store.wait_for_status(child, RunStatus.CANCELLED, timeout=20)).error is None
        retried = await store.retry_run(run_id)
        assert retried.deadline_at is None  # else the retry would be cancelled at once
        # The retry runs (no deadline now) and replays: its child was cancelled with it.
        with pytest.raises(pgqrs.RunFailed) as failed:
            await store.wait_for_run(run_id, timeout=20)
    assert failed.value.error["type"].endswith("RunCancelled")


async def test_a_wait_that_timed_out_does_not_keep_a_later_wait_asleep(
    store: pgqrs.Store,
) -> None:
    """The run the first wait gave up on stays unfinished: the second wait, for another run,
    is still woken by that run's end (not at its one-hour safety net)."""

    async def parent(ctx: pgqrs.RunContext, params: Any) -> Any:
        slow = await ctx.start_child("slow", "kid", {"nap": 3600})
        try:
            await ctx.wait_for_run("slow:result", slow, timeout=0.2)
        except pgqrs.WaitTimeout:
            pass
        fast = await ctx.start_child("fast", "kid", {"nap": 0.5})
        return await ctx.wait_for_run("fast:result", fast)

    async def kid(ctx: pgqrs.RunContext, params: Any) -> Any:
        await ctx.sleep("nap", params["nap"])
        return "done"

    worker = await _serve(store, {"patient": parent, "kid": kid})
    async with worker:
        run_id = await pgqrs.workflow("patient").trigger().execute(store)
        assert await store.wait_for_run(run_id, timeout=20) == "done"


async def test_a_cancel_that_lands_while_a_run_parks_ends_it(
    store: pgqrs.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``cancel_run`` commits after the run decided to wait and before its park: the park
    is refused and the worker ends the run CANCELLED, instead of a 30 s sleep."""
    from pgqrs_sqla import _waits

    park = _waits.park

    async def cancel_then_park(x: Any, wait: Any) -> bool:
        info = await store.cancel_run(x.run_id)  # the run is RUNNING: it is only asked
        assert info.status is RunStatus.RUNNING
        return await park(x, wait)

    monkeypatch.setattr(_waits, "park", cancel_then_park)

    async def napper(ctx: pgqrs.RunContext, params: Any) -> Any:
        await ctx.sleep("nap", 30)
        return "woke"

    worker = await _serve(store, {"napper2": napper})
    async with worker:
        run_id = await pgqrs.workflow("napper2").trigger().execute(store)
        run = await store.wait_for_status(run_id, RunStatus.CANCELLED, timeout=10)
    assert [s.status for s in run.steps] == []  # the sleep was never recorded


async def test_children_with_one_concurrency_key_run_one_at_a_time(store: pgqrs.Store) -> None:
    """``ctx.child(..., concurrency_key=)``: the key is the child's (run and message), so its
    workflow's ``key_concurrency=1`` serialises two orders' payments for one customer."""
    running: list[int] = []
    most = 0

    async def order(ctx: pgqrs.RunContext, params: Any) -> Any:
        key = f"customer-{params['customer']}"
        return await ctx.child("pay", "payment", params, concurrency_key=key)

    async def payment(ctx: pgqrs.RunContext, params: Any) -> Any:
        nonlocal most

        async def charge() -> int:
            nonlocal most
            running.append(ctx.run_id)
            most = max(most, len(running))
            try:
                await asyncio.sleep(0.2)  # the charge takes a while: a second one may overlap
            finally:
                running.remove(ctx.run_id)
            return int(params["amount"])

        return await ctx.step("charge", charge)

    await store.create_workflow("payment", key_concurrency=1)
    worker = await _serve(store, {"order": order, "payment": payment}, concurrency=4)
    async with worker:
        orders = [
            await pgqrs.workflow("order").trigger({"customer": 7, "amount": n}).execute(store)
            for n in (1, 2, 3)
        ]
        outputs = [await store.wait_for_run(run_id, timeout=30) for run_id in orders]
    assert outputs == [1, 2, 3]
    children = [child for run_id in orders for child in await _children_of(store, run_id)]
    assert [(await store.get_run(c)).concurrency_key for c in children] == ["customer-7"] * 3
    assert most == 1  # never two payments of one customer at once


async def test_a_bad_concurrency_key_for_a_child_is_refused(store: pgqrs.Store) -> None:
    async def order(ctx: pgqrs.RunContext, params: Any) -> Any:
        try:
            await ctx.start_child("pay", "payment", {}, concurrency_key="")
        except pgqrs.ValidationError as error:
            return {"option": error.option}
        return "started"

    async def payment(ctx: pgqrs.RunContext, params: Any) -> Any:
        return None

    worker = await _serve(store, {"order": order, "payment": payment})
    async with worker:
        run_id = await pgqrs.workflow("order").trigger({}).execute(store)
        assert await store.wait_for_run(run_id, timeout=20) == {"option": "concurrency_key"}
    assert await _runs_of(store, "payment") == 0
