"""``pgqrs-sqla worker MODULE:ATTR``: run a registry's worker until SIGTERM / SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket

from .._logging import configure_cli_logging
from ..store import Store
from ..worker import _when_name_free
from ._app import EXIT_OK, UsageError, _load_registry
from ._output import Output, _say


async def cmd_worker(store: Store, args: argparse.Namespace, out: Output) -> int:
    """``pgqrs-sqla worker``: run the registry's worker until SIGTERM or SIGINT."""
    configure_cli_logging(debug=args.debug)
    registry = await _load_registry(args.target)
    queues = [q for q in args.queues.split(",") if q] if args.queues is not None else None
    if queues is not None:
        unknown = [q for q in queues if q not in registry.names]
        if unknown or not queues:
            raise UsageError(
                f"--queues: {', '.join(unknown) or 'no name given'} not in {args.target} "
                f"(it has {', '.join(registry.names) or 'nothing'})"
            )
    # Restarted right after a crash, the name's row may look alive for a few more seconds:
    # wait for it (bounded) instead of aborting.
    worker = await _when_name_free(
        lambda: registry.create_worker(
            store,
            args.name or f"{socket.gethostname()}-{os.getpid()}",
            args.port,
            queues=queues,
            concurrency=args.concurrency,
            visibility_timeout=args.visibility_timeout,
            poll_interval=args.poll_interval,
            own_pool=False,
        )
    )
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task[None]] = []

    def on_signal(signum: int) -> None:
        if not stopping:
            # Stop first: the message is a courtesy, and stderr may be a closed pipe.
            stopping.append(asyncio.ensure_future(worker.stop(grace=args.grace)))
            _say(f"{signal.Signals(signum).name}: stopping (grace {args.grace:g}s)")

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    _say(
        f"worker {worker.name} serving {', '.join(worker.queues)} (concurrency {worker.concurrency})"
    )
    worker.start()
    task = worker._task
    assert task is not None
    await task
    if stopping:
        await stopping[0]
    return EXIT_OK
