"""``pgqrs-sqla workers``: the worker rows, and pruning stopped ones."""

from __future__ import annotations

import argparse

from ..store import Store
from ._app import EXIT_OK
from ._output import Output


async def cmd_workers(store: Store, args: argparse.Namespace, out: Output) -> int:
    """``pgqrs-sqla workers [prune]``: list the worker rows, or prune the long-stopped ones."""
    if getattr(args, "workers_command", None) == "prune":
        count = await store.prune_workers(older_than=args.older_than, dry_run=args.dry_run)
        verb = "would prune" if args.dry_run else "pruned"
        out.message(
            f"{verb} {count} stopped worker row(s) older than {args.older_than}",
            {"ok": True, "pruned": count, "dry_run": args.dry_run},
        )
        return EXIT_OK
    workers = await store.list_workers()
    if out.as_json:
        out.data(workers)
    else:
        out.table(
            "workers",
            ["name", "status", "queues", "host", "port", "heartbeat age (s)"],
            [
                [w.name, w.status, ", ".join(w.queues), w.hostname, w.port, w.heartbeat_age]
                for w in workers
            ],
        )
    return EXIT_OK
