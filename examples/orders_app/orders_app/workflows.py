"""The fulfil_order workflow: reserve stock, charge payment (the collect_payment child
workflow), wait for the warehouse, ship. And the nightly_report workflow, on a schedule."""

from __future__ import annotations

import asyncio
import logging
import os
from datetime import timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

import pgqrs_sqla as pgqrs

registry = pgqrs.WorkflowRegistry()
log = logging.getLogger("orders_app")


class OutOfStock(Exception):
    pass


class PaymentGateway:
    """A stand-in for a payment API. ``flaky`` orders fail once with a timeout."""

    def __init__(self) -> None:
        self.calls: dict[int, int] = {}

    async def charge(self, run_id: int, amount: int, *, flaky: bool) -> dict[str, Any]:
        self.calls[run_id] = self.calls.get(run_id, 0) + 1
        gate = os.environ.get("ORDERS_PAYMENT_GATE")
        if gate:  # a slow gateway: it answers when the unix socket ``gate`` sends a byte
            reader, writer = await asyncio.open_unix_connection(gate)
            try:
                await reader.readexactly(1)
            finally:
                writer.close()
        if flaky and self.calls[run_id] == 1:
            raise TimeoutError("payment gateway timed out")
        return {"charged": amount, "reference": f"pay-{run_id}"}


gateway = PaymentGateway()

#: How long an order waits for the warehouse's approval before the warehouse is reminded.
REMINDER_AFTER = timedelta(seconds=float(os.environ.get("ORDERS_REMINDER_AFTER", 24 * 3600)))


# One payment per customer at a time (the gateway refuses concurrent charges of one card):
# key_concurrency=1 over the customer's key, enforced by the claim across every worker.
@registry.workflow(
    "collect_payment",
    retry=pgqrs.RetryPolicy(max_attempts=5, base=0.2, cap=2),
    key_concurrency=1,
)
async def collect_payment(ctx: pgqrs.RunContext, params: dict[str, Any]) -> dict[str, Any]:
    """A child run of ``fulfil_order``: charge the order's amount, retrying the gateway's
    timeouts under this workflow's own retry policy."""

    async def charge() -> dict[str, Any]:
        try:
            # Keyed by the order's run (the parent), not this child run: the gateway knows
            # the order.
            return await gateway.charge(
                params["order_run_id"], params["amount"], flaky=params["flaky"]
            )
        except TimeoutError as error:
            raise pgqrs.TransientError(str(error), retry_after=0.2) from error

    result: dict[str, Any] = await ctx.step("charge", charge)
    return result


@registry.workflow("fulfil_order", retry=pgqrs.RetryPolicy(max_attempts=5, base=0.2, cap=2))
async def fulfil_order(ctx: pgqrs.RunContext, params: dict[str, Any]) -> dict[str, Any]:
    sku, quantity = params["sku"], params["quantity"]

    async def reserve(session: AsyncSession) -> int:
        # Exactly once: this write commits together with the step's record.
        taken = await session.execute(
            text("UPDATE stock SET quantity = quantity - :q WHERE sku = :sku AND quantity >= :q"),
            {"q": quantity, "sku": sku},
        )
        if taken.rowcount != 1:  # type: ignore[attr-defined]
            raise OutOfStock(f"not enough {sku}")
        await session.execute(
            text("UPDATE orders SET status = 'reserved' WHERE run_id = :r"), {"r": ctx.run_id}
        )
        return int(quantity)

    await ctx.step("reserve_stock", reserve, transactional=True)

    # The payment is a child run: started once (a replay of this run finds it recorded), and
    # this run holds no worker while it waits for the child's result.
    payment = await ctx.child(
        "charge_payment",
        "collect_payment",
        {
            "order_run_id": ctx.run_id,
            "amount": quantity * 10,
            "flaky": params.get("flaky_payment", False),
        },
        concurrency_key=f"customer-{params.get('customer_id')}",
    )

    # The warehouse approves through the webhook (POST /orders/{id}/approve), which sends
    # the event in the request's transaction. The run holds no worker while it waits. Each
    # REMINDER_AFTER without an approval, the warehouse is reminded (a recorded step: a
    # replay does not send it again) and the run waits on.
    reminders = 0

    async def remind() -> dict[str, int]:
        # A stand-in for a message to the warehouse (an e-mail, a ticket).
        log.info("run %d waits for the warehouse's approval: reminder %d", ctx.run_id, reminders)
        return {"reminder": reminders}

    while True:
        try:
            approval = await ctx.wait_for_event("warehouse_approved", timeout=REMINDER_AFTER)
            break
        except pgqrs.EventTimeout:
            reminders += 1
            await ctx.step(f"remind_warehouse_{reminders}", remind)

    async def ship(session: AsyncSession) -> str:
        await session.execute(
            text("UPDATE orders SET status = 'shipped' WHERE run_id = :r"), {"r": ctx.run_id}
        )
        return "shipped"

    status = await ctx.step("ship", ship, transactional=True)
    return {
        "status": status,
        "payment": payment["reference"],
        "approved_by": approval["by"],
        "reminders": reminders,
    }


#: The shop's time zone: the nightly report runs at 02:00 there, summer time or not.
SHOP_TIMEZONE = os.environ.get("ORDERS_TIMEZONE", "Europe/Berlin")

# Declared next to its workflow: every worker of this registry reconciles it at start, so a
# deploy that changes the time (or removes the line) takes effect without a manual call.
# After a night without any worker, the one missed report runs once ("latest").
registry.schedule("nightly-report", "nightly_report", cron="0 2 * * *", timezone=SHOP_TIMEZONE)


@registry.workflow("nightly_report")
async def nightly_report(ctx: pgqrs.RunContext, params: Any) -> dict[str, Any]:
    """Count the orders by status. Each tick of the schedule is one run, however many workers
    serve it; the tick it is for is ``ctx.scheduled_at``."""

    async def count(session: AsyncSession) -> dict[str, int]:
        rows = await session.execute(text("SELECT status, count(*) FROM orders GROUP BY status"))
        return {status: int(n) for status, n in rows.all()}

    counts: dict[str, int] = await ctx.step("count_orders", count, transactional=True)
    tick = ctx.scheduled_at
    return {"for": tick.isoformat() if tick else None, "orders": counts}
