"""Expense approvals, end to end: `.venv/bin/python examples/approval/demo.py`.

SQLite by default (in a temporary folder, removed at the end); set
DATABASE_URL=postgresql://user@host/db to run it on PostgreSQL. A worker runs in this
process; the script triggers three approvals and answers them as the app would, each
decision written to the app's own table *and* sent to the run in one transaction:

1. expense 1 is approved at once: the decision is sent before the run has even started,
   and is kept for its wait; the expense is paid after the hold (a durable timer);
2. expense 2 gets no answer in time: the approver is reminded, then rejects it;
3. expense 3 is never answered: reminded, then expired.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import tempfile
from typing import Any

from expenses import WORKFLOW, expense_approval
from sqlalchemy import BigInteger, Boolean, Column, Integer, MetaData, String, Table, insert

import pgqrs_sqla as pgqrs

# The app's own table: who decided what, for which run.
app_metadata = MetaData()
decisions = Table(
    "expense_decisions",
    app_metadata,
    Column("id", Integer, primary_key=True),
    Column("run_id", BigInteger, nullable=False),
    Column("approved", Boolean, nullable=False),
    Column("decided_by", String(64), nullable=False),
)

TIMINGS = {"remind_after": 1.0, "expire_after": 1.0, "hold": 0.5}  # seconds; yours: days


async def decide(store: pgqrs.Store, run_id: int, approved: bool, by: str) -> None:
    """The app's decision handler: its row and the event commit together, or neither does."""
    async with store.engine.begin() as conn:
        await conn.execute(
            insert(decisions).values(run_id=run_id, approved=approved, decided_by=by)
        )
        payload = {"approved": approved, "by": by}
        await store.send_event(run_id, "decision", payload, target=conn)
    print(f"[app] run {run_id}: {'approved' if approved else 'rejected'} by {by}", flush=True)


async def wait_for_step(store: pgqrs.Store, run_id: int, name: str) -> None:
    """Until the run has recorded ``name`` (as an app would look, now and then)."""
    for _ in range(300):
        if any(step.name == name for step in (await store.get_run(run_id)).steps):
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"run {run_id} never reached {name!r}")


async def demo(url: str) -> None:
    async with await pgqrs.connect(url) as store:
        await store.install()  # apps with Alembic use their migrations instead
        async with store.engine.begin() as conn:
            await conn.run_sync(app_metadata.create_all)
        await store.create_workflow(WORKFLOW)
        worker = await (
            pgqrs.consumer("approvals-1", None, WORKFLOW)
            .handler(expense_approval)
            .create(store, poll_interval=0.1)
        )
        runs: dict[int, int] = {}
        for expense_id, amount in [(1, 120.0), (2, 80.5), (3, 999.0)]:
            params: dict[str, Any] = {
                "expense_id": expense_id,
                "amount": amount,
                "approver": "alice",
                **TIMINGS,
            }
            runs[expense_id] = await pgqrs.workflow(WORKFLOW).trigger(params).execute(store)
        print(f"[app] triggered runs {sorted(runs.values())} on {store}", flush=True)
        await decide(store, runs[1], True, "alice")  # before the run waits: kept for it

        async with worker:  # the worker runs as a task in this loop
            await wait_for_step(store, runs[2], "remind")
            await decide(store, runs[2], False, "alice")  # answers the second wait

            for expense_id, run_id in runs.items():
                output = await store.wait_for_run(run_id, timeout=60)
                steps = [step.name for step in (await store.get_run(run_id)).steps]
                line = f"expense {expense_id}: {output['status']:<8} {output}  steps={steps}"
                sys.stdout.write(line + "\n")  # one write: steps print from threads meanwhile


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="pgqrs-approval-") as scratch:
        await demo(os.environ.get("DATABASE_URL") or f"sqlite:///{scratch}/approval.db")


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main())
