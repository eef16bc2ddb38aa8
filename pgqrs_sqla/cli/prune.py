"""``pgqrs-sqla prune``: delete what is past its retention now (``Store.prune``)."""

from __future__ import annotations

import argparse
from dataclasses import asdict

from ..store import Store
from ._app import EXIT_OK
from ._output import Output


async def cmd_prune(store: Store, args: argparse.Namespace, out: Output) -> int:
    """``pgqrs-sqla prune [--dry-run]``: finished runs, archived messages, stopped workers.

    The retentions are the workflows' and queues' own, else the store's (the defaults, or
    those of the Store ``--app`` names).
    """
    result = await store.prune(dry_run=args.dry_run)
    verb = "would prune" if args.dry_run else "pruned"
    out.message(
        f"{verb} {result.runs} run(s), {result.messages} archived message(s) and "
        f"{result.workers} stopped worker row(s)",
        {"ok": True, **asdict(result)},
    )
    return EXIT_OK
