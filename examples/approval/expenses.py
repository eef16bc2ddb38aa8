"""An expense approval that waits for a decision, reminds the approver, and pays after a hold.

- ``ctx.wait_for_event("decision", timeout=...)`` waits for the approver's decision, sent by
  the app with ``store.send_event`` (see ``demo.py``). The run holds no worker meanwhile.
- If none comes in time, ``EventTimeout``: the workflow sends a reminder and waits again
  (that second wait is recorded as ``decision#2``); if none comes then either, it expires.
- An approved expense is paid after a hold: ``ctx.sleep("hold", ...)``, a durable timer.

The durations come from the run's params so that the demo runs in seconds; yours would be
days.
"""

from __future__ import annotations

import sys
from typing import Any

import pgqrs_sqla as pgqrs

WORKFLOW = "expense_approval"


def say(text: str) -> str:
    """What a real workflow would send (a mail, a chat message), printed; returns the text."""
    # One write with its newline: a step's body runs in a thread, and print() writes the text
    # and the newline separately, so a line printed meanwhile could land inside this one.
    sys.stdout.write(f"    {text}\n")
    sys.stdout.flush()
    return text


async def expense_approval(ctx: pgqrs.RunContext, params: dict[str, Any]) -> dict[str, Any]:
    expense = f"expense {params['expense_id']} ({params['amount']:.2f})"
    await ctx.step("request", lambda: say(f"to {params['approver']}: please approve {expense}"))
    try:
        decision = await ctx.wait_for_event("decision", timeout=params["remind_after"])
    except pgqrs.EventTimeout:
        await ctx.step("remind", lambda: say(f"to {params['approver']}: reminder, {expense}"))
        try:
            decision = await ctx.wait_for_event("decision", timeout=params["expire_after"])
        except pgqrs.EventTimeout:
            return {"status": "expired"}
    if not decision["approved"]:
        return {"status": "rejected", "by": decision["by"]}
    await ctx.sleep("hold", params["hold"])  # payouts go out after a hold
    await ctx.step("pay", lambda: say(f"paying {expense}"))
    return {"status": "paid", "by": decision["by"]}
