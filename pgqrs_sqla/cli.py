"""The ``pgqrs-sqla`` command (also ``python -m pgqrs_sqla``).

Exit codes: 0 ok; 1 the operation failed (not found, illegal transition, bad input);
2 usage error; 3 the database is unreachable, misconfigured, or lacks the pgqrs tables.
Errors are one line on stderr; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import enum
import importlib
import inspect
import json
import os
import signal
import socket
import sys
import traceback
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from .errors import (
    ConfigurationError,
    DatabaseUnavailable,
    PgqrsError,
    SchemaMissing,
)
from .models import RunStatus
from .registry import WorkflowRegistry
from .store import Store, connect

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_DATABASE = 0, 1, 2, 3


class UsageError(Exception):
    """Bad command-line input (exit 2)."""


# ---------------------------------------------------------------- output


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, dict | list):
        text = json.dumps(value, default=str)
        return text if len(text) <= 60 else text[:57] + "..."
    return str(value)


class Output:
    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def data(self, value: Any) -> None:
        sys.stdout.write(json.dumps(_plain(value), indent=2, default=str) + "\n")

    def table(self, title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        cells = [[_cell(v) for v in row] for row in rows]
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
            sys.stdout.write(f"{title}\n")
            for line in [list(headers), *cells]:
                sys.stdout.write(
                    "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() + "\n"
                )
            return
        table = Table(title=title, title_justify="left")
        for header in headers:
            table.add_column(header)
        for row in cells:
            table.add_row(*row)
        Console(soft_wrap=False, width=max(100, len(headers) * 14)).print(table)

    def message(self, text: str, value: Any = None) -> None:
        if self.as_json:
            self.data(value if value is not None else {"ok": True, "message": text})
        else:
            sys.stdout.write(text + "\n")


# ---------------------------------------------------------------- commands


async def cmd_install(store: Store, args: argparse.Namespace, out: Output) -> int:
    await store.install()
    out.message(f"pgqrs tables installed in {store}")
    return EXIT_OK


async def cmd_check(store: Store, args: argparse.Namespace, out: Output) -> int:
    problems = await store.check()
    if out.as_json:
        out.data({"ok": not problems, "problems": problems})
    else:
        sys.stdout.write(
            "ok: every pgqrs table is present\n" if not problems else "\n".join(problems) + "\n"
        )
    return EXIT_OK if not problems else EXIT_DATABASE


async def cmd_queues(store: Store, args: argparse.Namespace, out: Output) -> int:
    stats = await store.queue_stats()
    if out.as_json:
        out.data(stats)
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


async def cmd_workers(store: Store, args: argparse.Namespace, out: Output) -> int:
    workers = await store.list_workers()
    if out.as_json:
        out.data(workers)
    else:
        out.table(
            "workers",
            ["name", "status", "queue", "host", "port", "heartbeat age (s)"],
            [[w.name, w.status, w.queue, w.hostname, w.port, w.heartbeat_age] for w in workers],
        )
    return EXIT_OK


async def cmd_runs(store: Store, args: argparse.Namespace, out: Output) -> int:
    action = args.runs_command
    if action == "list":
        runs = await store.list_runs(workflow=args.workflow, status=args.status, limit=args.limit)
        if out.as_json:
            out.data(runs)
        else:
            out.table(
                "runs",
                ["id", "workflow", "status", "created", "finished", "error"],
                [
                    [
                        r.id,
                        r.workflow,
                        r.status,
                        r.created_at,
                        r.finished_at,
                        (r.error or {}).get("message"),
                    ]
                    for r in runs
                ],
            )
        return EXIT_OK
    if action == "show":
        run = await store.get_run(args.run_id)
        if out.as_json:
            out.data(run)
            return EXIT_OK
        sys.stdout.write(
            f"run {run.id}  workflow {run.workflow}  status {run.status.value}\n"
            f"  created {_cell(run.created_at)}  started {_cell(run.started_at)}  finished {_cell(run.finished_at)}\n"
            f"  input  {_cell(run.input)}\n  output {_cell(run.output)}\n"
        )
        if run.error:
            sys.stdout.write(f"  error  {run.error.get('type')}: {run.error.get('message')}\n")
        out.table(
            "steps",
            ["step", "status", "attempts", "started", "finished", "seconds", "output / error"],
            [
                [
                    s.name,
                    s.status,
                    s.attempts,
                    s.started_at,
                    s.finished_at,
                    (s.finished_at - s.started_at).total_seconds()
                    if s.started_at and s.finished_at
                    else None,
                    s.output
                    if s.error is None
                    else f"{s.error.get('type')}: {s.error.get('message')}",
                ]
                for s in run.steps
            ],
        )
        return EXIT_OK
    if action == "resume":
        await store.resume_run(args.run_id)
        out.message(f"run {args.run_id} resumed", {"ok": True, "run_id": args.run_id})
        return EXIT_OK
    if action == "cancel":
        info = await store.cancel_run(args.run_id)
        out.message(
            f"run {args.run_id}: {info.status.value}"
            + (" (stops at its next step)" if info.status is RunStatus.RUNNING else ""),
            info,
        )
        return EXIT_OK
    info = await store.retry_run(args.run_id)
    out.message(f"run {args.run_id} queued again", info)
    return EXIT_OK


async def cmd_dead_letters(store: Store, args: argparse.Namespace, out: Output) -> int:
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


async def _load_registry(target: str) -> WorkflowRegistry:
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise UsageError(f"expected MODULE:ATTR, got {target!r}")
    sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise UsageError(f"cannot import {module_name!r}: {error}") from error
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UsageError(f"{module_name!r} has no attribute {attr!r}") from None
    if not isinstance(obj, WorkflowRegistry) and callable(obj):
        obj = obj()
        if inspect.isawaitable(obj):
            obj = await obj
    if not isinstance(obj, WorkflowRegistry):
        raise UsageError(f"{target!r} is not a WorkflowRegistry (or a factory returning one)")
    return obj


async def cmd_worker(store: Store, args: argparse.Namespace, out: Output) -> int:
    registry = await _load_registry(args.target)
    queues = [q for q in args.queues.split(",") if q] if args.queues else None
    worker = await registry.create_worker(
        store,
        args.name or f"{socket.gethostname()}-{os.getpid()}",
        args.port,
        queues=queues,
        concurrency=args.concurrency,
        visibility_timeout=args.visibility_timeout,
        poll_interval=args.poll_interval,
        own_pool=False,
    )
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task[None]] = []

    def on_signal(signum: int) -> None:
        if not stopping:
            sys.stderr.write(f"{signal.Signals(signum).name}: stopping (grace {args.grace:g}s)\n")
            stopping.append(asyncio.ensure_future(worker.stop(grace=args.grace)))

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    sys.stderr.write(
        f"worker {worker.name} serving {', '.join(worker.queues)} (concurrency {worker.concurrency})\n"
    )
    worker.start()
    task = worker._task
    assert task is not None
    await task
    if stopping:
        await stopping[0]
    return EXIT_OK


def cmd_alembic_init(args: argparse.Namespace, out: Output) -> int:
    from .alembic_support import scaffold

    ini = scaffold(args.directory, template=args.template)
    out.message(
        f"created {args.directory}/ and {ini}",
        {"ok": True, "directory": args.directory, "ini": str(ini)},
    )
    return EXIT_OK


# ---------------------------------------------------------------- parsing and running


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pgqrs-sqla", description="Operate pgqrs-sqla queues, workflows and workers."
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("PGQRS_DATABASE_URL"),
        help="default: $PGQRS_DATABASE_URL",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    worker = sub.add_parser("worker", help="run a worker for a registry (MODULE:ATTR)")
    worker.add_argument(
        "target", help="a WorkflowRegistry, or a factory returning one, as module:attr"
    )
    worker.add_argument("--queues", help="comma-separated subset of the registry's names")
    worker.add_argument("--concurrency", type=int, default=1)
    worker.add_argument("--name", help="worker name (default: host-pid)")
    worker.add_argument("--port", type=int)
    worker.add_argument("--visibility-timeout", type=float, default=30.0)
    worker.add_argument("--poll-interval", type=float, default=1.0)
    worker.add_argument(
        "--grace", type=float, default=30.0, help="seconds in-flight runs get on SIGTERM"
    )

    sub.add_parser("install", help="create the pgqrs tables (idempotent)")
    sub.add_parser("check", help="are the pgqrs tables present and complete?")
    sub.add_parser("queues", help="message counts per queue")
    sub.add_parser("workers", help="registered workers and their heartbeats")

    runs = sub.add_parser("runs", help="workflow runs").add_subparsers(
        dest="runs_command", required=True
    )
    listing = runs.add_parser("list")
    listing.add_argument("--workflow")
    listing.add_argument("--status", choices=[s.value for s in RunStatus])
    listing.add_argument("--limit", type=int, default=50)
    for action in ("show", "resume", "cancel", "retry"):
        runs.add_parser(action).add_argument("run_id", type=int)

    dead = sub.add_parser("dead-letters", help="messages that exhausted their deliveries")
    dl = dead.add_subparsers(dest="dl_command", required=True)
    dl_list = dl.add_parser("list")
    dl_list.add_argument("queue")
    dl_list.add_argument("--limit", type=int, default=100)
    replay = dl.add_parser("replay")
    replay.add_argument("queue")
    replay.add_argument("--id", type=int, action="append", help="replay only these (repeatable)")

    init = sub.add_parser(
        "alembic-init", help="scaffold an Alembic environment with pgqrs wired in"
    )
    init.add_argument("directory")
    init.add_argument("--template", choices=["async", "sync"], default="async")
    return parser


COMMANDS = {
    "install": cmd_install,
    "check": cmd_check,
    "queues": cmd_queues,
    "workers": cmd_workers,
    "runs": cmd_runs,
    "dead-letters": cmd_dead_letters,
    "worker": cmd_worker,
}


async def _run(args: argparse.Namespace, out: Output) -> int:
    if args.command == "alembic-init":
        return cmd_alembic_init(args, out)
    if not args.database_url:
        raise UsageError("no database: pass --database-url or set PGQRS_DATABASE_URL")
    store = await connect(args.database_url)
    try:
        if args.command not in ("install", "check"):
            await store.require_schema()
        return await COMMANDS[args.command](store, args, out)
    finally:
        await store.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    out = Output(args.json)
    try:
        return asyncio.run(_run(args, out))
    except UsageError as error:
        return _fail(args, error, EXIT_USAGE)
    except (DatabaseUnavailable, SchemaMissing, ConfigurationError) as error:
        return _fail(args, error, EXIT_DATABASE)
    except PgqrsError as error:
        return _fail(args, error, EXIT_FAILED)
    except KeyboardInterrupt:
        return EXIT_FAILED


def _fail(args: argparse.Namespace, error: BaseException, code: int) -> int:
    if args.debug:
        traceback.print_exception(error, file=sys.stderr)
    sys.stderr.write(f"error: {error}\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
