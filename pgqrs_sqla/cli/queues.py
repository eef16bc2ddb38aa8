"""``pgqrs-sqla queues`` and ``dead-letters``."""

from __future__ import annotations

import argparse
import sys

from ..store import Store
from ._app import EXIT_OK
from ._output import Output, _plain


def _warn_unserved(unserved: dict[str, int]) -> None:
    """Say on stderr which workflows have queued runs no worker has ever registered for."""
    for name, queued in unserved.items():
        sys.stderr.write(
            f"warning: workflow {name!r} has {queued} queued run(s) and no worker has ever "
            "served it: start a worker for it, or check the name the trigger used\n"
        )


async def cmd_queues(store: Store, args: argparse.Namespace, out: Output) -> int:
    """``pgqrs-sqla queues``: every queue's message counts, warning of unserved workflows."""
    stats = await store.queue_stats()
    unserved = await store.unserved_workflows()
    _warn_unserved(unserved)
    if out.as_json:
        out.data([{**_plain(s), "unserved_workflow": s.name in unserved} for s in stats])
    else:
        out.table(
            "queues",
            ["queue", "ready", "leased", "delayed", "archived", "dead", "oldest ready (s)"],
            [
                [s.name, s.ready, s.leased, s.delayed, s.archived, s.dead, s.oldest_ready_age]
                for s in stats
            ],
        )
    return EXIT_OK


async def cmd_dead_letters(store: Store, args: argparse.Namespace, out: Output) -> int:
    """``pgqrs-sqla dead-letters list|replay``: a queue's dead letters, listed or put back on it."""
    if args.dl_command == "list":
        dead = await store.dead_letters(args.queue, limit=args.limit)
        if out.as_json:
            out.data(dead)
        else:
            out.table(
                f"dead letters of {args.queue}",
                ["id", "deliveries", "failures", "archived", "last error", "payload"],
                [
                    [m.id, m.read_ct, m.failed_ct, m.archived_at, m.last_error, m.payload]
                    for m in dead
                ],
            )
        return EXIT_OK
    ids = await store.replay_dead_letters(args.queue, args.id or None)
    out.message(f"replayed {len(ids)} message(s) of {args.queue}", {"ok": True, "replayed": ids})
    return EXIT_OK
