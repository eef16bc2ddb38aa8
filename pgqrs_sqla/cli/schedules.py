"""``pgqrs-sqla schedules``: list schedules with their next tick and last run; pause, resume, delete."""

from __future__ import annotations

import argparse

from ..store import Store
from ._app import EXIT_OK
from ._output import Output


async def cmd_schedules(store: Store, args: argparse.Namespace, out: Output) -> int:
    """``pgqrs-sqla schedules [list|pause|resume|delete NAME]``."""
    action = getattr(args, "schedules_command", None) or "list"
    if action == "list":
        schedules = await store.list_schedules(workflow=getattr(args, "workflow", None))
        if out.as_json:
            out.data(schedules)
        else:
            out.table(
                "schedules",
                ["name", "workflow", "when", "tz", "catch-up", "state", "next tick", "last run"],
                [
                    [
                        s.name,
                        s.workflow,
                        s.cron if s.cron is not None else f"every {s.every:g}s",
                        s.timezone,
                        s.catch_up,
                        "paused" if s.paused else "active",
                        s.next_tick_at,
                        "-"
                        if s.last_run_id is None
                        else f"{s.last_run_id} ({s.last_tick_at:%Y-%m-%d %H:%M:%S})",
                    ]
                    for s in schedules
                ],
            )
        return EXIT_OK
    if action == "delete":
        await store.delete_schedule(args.name)
        out.message(f"schedule {args.name!r} deleted", {"ok": True, "deleted": args.name})
        return EXIT_OK
    if action == "pause":
        info = await store.pause_schedule(args.name)
    else:
        info = await store.resume_schedule(args.name)
    out.message(
        f"schedule {info.name!r} {'paused' if info.paused else 'resumed'}; next tick "
        f"{info.next_tick_at:%Y-%m-%d %H:%M:%S} UTC",
        info,
    )
    return EXIT_OK
