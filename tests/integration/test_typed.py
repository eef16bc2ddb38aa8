"""Typed params and results (``pgqrs_sqla.typed``), on both backends.

A handler annotated with dataclasses or pydantic models gets its params as the model, a
step's result comes back as its function's return type on the first run and on a replay
alike, the output is stored as JSON and read back typed, and a stored value that does not
fit fails the run with a ``DecodeError`` naming the run, the step and the field.
"""

from __future__ import annotations

import dataclasses
import enum
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pydantic
import pytest

import pgqrs_sqla as pgqrs
from pgqrs_sqla import RunStatus, Step, StepStatus


class Priority(enum.Enum):
    LOW = "low"
    HIGH = "high"


@dataclasses.dataclass(frozen=True)
class Line:
    sku: str
    quantity: int
    unit_price: Decimal


@dataclasses.dataclass(frozen=True)
class Order:
    order_id: uuid.UUID
    placed_at: datetime
    ship_by: date
    priority: Priority
    lines: list[Line]
    note: str | None = None


@dataclasses.dataclass(frozen=True)
class Quote:
    total: Decimal
    valid_until: datetime
    lines: tuple[Line, ...]


@dataclasses.dataclass(frozen=True)
class Approval:
    approved_by: str
    at: datetime


@dataclasses.dataclass(frozen=True)
class Receipt:
    order_id: uuid.UUID
    total: Decimal
    priority: Priority
    approved_by: str
    by_sku: dict[str, Decimal]


ORDER = Order(
    order_id=uuid.UUID("12345678-1234-5678-1234-567812345678"),
    placed_at=datetime(2026, 3, 1, 9, 30, tzinfo=timezone(timedelta(hours=2))),
    ship_by=date(2026, 3, 4),
    priority=Priority.HIGH,
    lines=[Line("tea", 2, Decimal("3.10")), Line("cup", 1, Decimal("7.25"))],
)


def _quote(order: Order) -> Quote:
    total = sum((line.unit_price * line.quantity for line in order.lines), Decimal("0"))
    return Quote(total, order.placed_at + timedelta(days=1), tuple(order.lines))


async def test_dataclass_params_steps_and_result_round_trip(store: pgqrs.Store) -> None:
    """The handler sees an ``Order`` (UUID, aware datetime, date, Decimal, Enum, nested
    lines); a typed step's result is a ``Quote`` on the first run and on the replay after a
    pause, equal both times; the output is stored as JSON strings and read back a
    ``Receipt`` by the typed reference."""
    seen: list[tuple[str, Any]] = []
    quotes = 0

    async def handler(ctx: pgqrs.RunContext, order: Order) -> Receipt:
        seen.append(("params", order))

        async def quote() -> Quote:
            nonlocal quotes
            quotes += 1
            return _quote(order)

        priced = await ctx.step("quote", quote)
        seen.append(("quote", priced))

        def approval() -> Approval:
            raise Step.pause(3600)

        approved = await ctx.step("approval", approval)
        seen.append(("approval", approved))
        by_sku = {line.sku: line.unit_price * line.quantity for line in priced.lines}
        return Receipt(order.order_id, priced.total, order.priority, approved.approved_by, by_sku)

    ref = pgqrs.workflow("orders", handler)
    await store.create_workflow("orders")
    worker = await (
        pgqrs.consumer("w", None, "orders").handler(handler).create(store, poll_interval=0.05)
    )
    worker.start()
    try:
        run_id = await ref.trigger(ORDER).execute(store)
        run = await store.wait_for_status(run_id, RunStatus.PAUSED, timeout=30)
        assert run.input == {
            "order_id": "12345678-1234-5678-1234-567812345678",
            "placed_at": "2026-03-01T09:30:00+02:00",
            "ship_by": "2026-03-04",
            "priority": "high",
            "lines": [
                {"sku": "tea", "quantity": 2, "unit_price": "3.10"},
                {"sku": "cup", "quantity": 1, "unit_price": "7.25"},
            ],
            "note": None,
        }
        stored_quote = {s.name: s.output for s in run.steps}["quote"]
        assert stored_quote["total"] == "13.45"
        # An operator records the approval as JSON, as the guide does.
        when = "2026-03-01T10:00:00+00:00"
        await store.update_step(
            run_id, "approval", StepStatus.SUCCESS, {"approved_by": "ann", "at": when}
        )
        await store.resume_run(run_id)
        receipt = await ref.wait_for_run(store, run_id, timeout=30)
    finally:
        await worker.stop()

    assert receipt == Receipt(
        ORDER.order_id,
        Decimal("13.45"),
        Priority.HIGH,
        "ann",
        {"tea": Decimal("6.20"), "cup": Decimal("7.25")},
    )
    assert quotes == 1  # replayed, not re-run
    params = [value for kind, value in seen if kind == "params"]
    assert params == [ORDER, ORDER]  # two deliveries, the same Order each time
    assert all(type(p.lines[0].unit_price) is Decimal for p in params)
    assert params[0].placed_at.utcoffset() == timedelta(hours=2)
    live, replayed = (value for kind, value in seen if kind == "quote")
    assert type(live) is type(replayed) is Quote
    assert live == replayed == _quote(ORDER)
    assert type(live.lines) is tuple and type(live.lines[0]) is Line
    [approval] = [value for kind, value in seen if kind == "approval"]
    assert approval == Approval("ann", datetime(2026, 3, 1, 10, tzinfo=UTC))
    assert (await store.get_run(run_id)).output["by_sku"] == {"tea": "6.20", "cup": "7.25"}


class Customer(pydantic.BaseModel):
    customer_id: uuid.UUID
    since: date
    tier: Priority


class Invoice(pydantic.BaseModel):
    number: int
    customer: Customer
    amount: Decimal
    issued_at: datetime


class Summary(pydantic.BaseModel):
    invoice: Invoice
    paid: bool


CUSTOMER = Customer(customer_id=uuid.UUID(int=42), since=date(2020, 1, 31), tier=Priority.LOW)


async def test_pydantic_params_steps_and_result_round_trip(
    store: pgqrs.Store, run_worker: Any
) -> None:
    """The same with pydantic models: model_dump(mode="json") stored, model_validate read."""
    seen: list[Any] = []

    async def handler(ctx: pgqrs.RunContext, customer: Customer) -> Summary:
        async def invoice() -> Invoice:
            issued = datetime(2026, 5, 1, 12, tzinfo=UTC)
            return Invoice(number=7, customer=customer, amount=Decimal("19.99"), issued_at=issued)

        seen.append(customer)
        made = await ctx.step("invoice", invoice)
        seen.append(made)
        return Summary(invoice=made, paid=True)

    ref = pgqrs.workflow("billing", params_type=Customer, result_type=Summary)
    await run_worker("billing", handler)
    run_id = await ref.trigger(CUSTOMER).execute(store)
    summary = await ref.wait_for_run(store, run_id, timeout=30)

    assert seen[0] == CUSTOMER and type(seen[1]) is Invoice
    assert summary == Summary(invoice=seen[1], paid=True)
    assert summary.invoice.customer.tier is Priority.LOW
    run = await store.get_run(run_id)
    assert run.input == {
        "customer_id": str(uuid.UUID(int=42)),
        "since": "2020-01-31",
        "tier": "low",
    }
    assert run.output["invoice"]["amount"] == "19.99"


async def test_a_stored_value_that_does_not_fit_fails_the_run_naming_run_step_and_field(
    store: pgqrs.Store, run_worker: Any
) -> None:
    """A step's record set by hand to a value its type cannot read: on the replay the run
    ends ERROR with a DecodeError naming the run, the step and the field."""

    async def handler(ctx: pgqrs.RunContext, params: Any) -> str:
        def approval() -> Approval:
            return Step.pause(3600)  # type: ignore[return-value]  # returned, as lambdas do

        approved = await ctx.step("approval", approval)
        return approved.approved_by

    await run_worker("approvals", handler)
    run_id = await pgqrs.workflow("approvals").trigger({}).execute(store)
    await store.wait_for_status(run_id, RunStatus.PAUSED, timeout=30)
    await store.update_step(
        run_id, "approval", StepStatus.SUCCESS, {"approved_by": "ann", "at": "yesterday"}
    )
    await store.resume_run(run_id)
    with pytest.raises(pgqrs.RunFailed) as failed:
        await store.wait_for_run(run_id, timeout=30)
    error = failed.value.error
    assert error["type"] == "pgqrs_sqla.errors.DecodeError"
    message = error["message"]
    assert f"run {run_id}:" in message and "step 'approval'" in message, message
    assert "at $.at" in message and "'yesterday'" in message, message
    assert (await store.get_run(run_id)).status is RunStatus.ERROR


async def test_params_that_do_not_fit_the_handler_fail_the_run(
    store: pgqrs.Store, run_worker: Any
) -> None:
    """Params triggered untyped that the handler's annotation cannot read: the run ends
    ERROR naming the params and the field, and the handler never runs."""
    called: list[Order] = []

    async def handler(ctx: pgqrs.RunContext, order: Order) -> None:
        called.append(order)

    await run_worker("strict", handler)
    bad = {**pgqrs.encode(ORDER), "lines": [{"sku": "tea", "quantity": "two", "unit_price": "1"}]}
    run_id = await pgqrs.workflow("strict").trigger(bad).execute(store)
    with pytest.raises(pgqrs.RunFailed) as failed:
        await store.wait_for_run(run_id, timeout=30)
    message = failed.value.error["message"]
    assert "params of workflow 'strict'" in message and "$.lines[0].quantity" in message, message
    assert called == []


async def test_untyped_handlers_and_steps_see_json_as_before(
    store: pgqrs.Store, run_worker: Any
) -> None:
    """No annotation, ``Any`` or ``dict[str, Any]``: params and step results are the JSON
    values, unchanged; a model passed anyway is stored as its JSON object."""
    seen: list[Any] = []

    async def handler(ctx: pgqrs.RunContext, params: dict[str, Any]) -> dict[str, Any]:
        seen.append(params)
        seen.append(await ctx.step("line", lambda: Line("tea", 1, Decimal("2"))))
        return {"line": Line("cup", 2, Decimal("1.5"))}

    await run_worker("plain", handler)
    run_id = await pgqrs.workflow("plain").trigger(ORDER).execute(store)
    output = await store.wait_for_run(run_id, timeout=30)
    assert seen[0] == (await store.get_run(run_id)).input and seen[0]["priority"] == "high"
    assert seen[1] == {"sku": "tea", "quantity": 1, "unit_price": "2"}
    assert output == {"line": {"sku": "cup", "quantity": 2, "unit_price": "1.5"}}
    with pytest.raises(pgqrs.PayloadError) as refused:  # a bare UUID, untyped: as before
        await pgqrs.workflow("plain").trigger({"id": uuid.UUID(int=1)}).execute(store)
    assert (refused.value.reason, refused.value.path) == ("unsupported_type", "$.id")


async def test_transactional_steps_are_typed_too(store: pgqrs.Store, run_worker: Any) -> None:
    """A transactional step's function (async with an AsyncSession, sync with a Session)
    is decoded by its return annotation like any other."""
    seen: list[Any] = []

    async def handler(ctx: pgqrs.RunContext, params: Any) -> None:
        async def reserve(session: Any) -> Line:
            return Line("tea", 1, Decimal("2.5"))

        def count(session: Any) -> dict[Priority, int]:
            return {Priority.HIGH: 2}

        seen.append(await ctx.step("reserve", reserve, transactional=True))
        seen.append(await ctx.step("count", count, transactional=True))

    await run_worker("tx", handler)
    run_id = await pgqrs.workflow("tx").trigger().execute(store)
    await store.wait_for_run(run_id, timeout=30)
    assert seen == [Line("tea", 1, Decimal("2.5")), {Priority.HIGH: 2}]
    steps = {s.name: s.output for s in (await store.get_run(run_id)).steps}
    assert steps == {
        "reserve": {"sku": "tea", "quantity": 1, "unit_price": "2.5"},
        "count": {"high": 2},
    }


async def test_a_model_enqueued_on_a_plain_queue_is_stored_as_its_json(
    store: pgqrs.Store,
) -> None:
    await store.create_queue("lines")
    await store.queue("lines").enqueue(Line("tea", 2, Decimal("3.10")))
    worker = await pgqrs.consumer("r", None, "lines").handler(_noop).create(store, own_pool=False)
    try:
        [message] = await worker.dequeue()
    finally:
        await worker.stop()
    assert message.payload == {"sku": "tea", "quantity": 2, "unit_price": "3.10"}
    assert pgqrs.decode(message.payload, Line) == Line("tea", 2, Decimal("3.10"))


async def _noop(message: pgqrs.Message) -> None:
    pass
