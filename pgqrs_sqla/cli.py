"""The ``pgqrs-sqla`` command (also ``python -m pgqrs_sqla``).

Exit codes: 0 ok; 1 the operation failed (not found, illegal transition, bad input);
2 usage error (bad arguments, an unknown ``--queues`` name, a MODULE:ATTR that does not
exist); 3 the database is unreachable, misconfigured, or lacks the pgqrs tables; 4 the
user code behind MODULE:ATTR raised while it was imported or called.
Errors are one line on stderr; ``--debug`` adds the traceback.

The database comes from ``--database-url`` / ``$PGQRS_DATABASE_URL``, or from the app itself:
``--app mypkg.jobs:store`` / ``$PGQRS_APP`` names a Store, an AsyncEngine, a sync Engine, a
URL, or a factory (sync or async) returning one of them, so the app's settings are the only
place the URL is written. Commands other than ``install`` never create a SQLite file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from ._logging import configure_cli_logging
from .errors import (
    ConfigurationError,
    DatabaseUnavailable,
    PgqrsError,
    SchemaMissing,
)
from .models import DEFAULT_PREFIX, RunStatus, pgqrs_models
from .registry import WorkflowRegistry
from .runs import RunInfo, StepInfo, step_info
from .store import Store, connect, normalise_url
from .worker import _when_name_free

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_DATABASE, EXIT_USER_CODE = 0, 1, 2, 3, 4


class UsageError(Exception):
    """Bad command-line input (exit 2)."""


class UserCodeError(Exception):
    """The code behind MODULE:ATTR raised while being imported or called (exit 4)."""


def _say(text: str) -> None:
    """Write a line to stderr, which may be gone (a closed pipe): a log line must never stop
    the command. After one failed write, stderr goes to /dev/null, so the interpreter's
    final flush cannot fail either."""
    try:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stderr.fileno())
            os.close(devnull)


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


def _warn_unserved(unserved: dict[str, int]) -> None:
    """Say on stderr which workflows have queued runs no worker has ever registered for."""
    for name, queued in unserved.items():
        sys.stderr.write(
            f"warning: workflow {name!r} has {queued} queued run(s) and no worker has ever "
            "served it: start a worker for it, or check the name the trigger used\n"
        )


async def cmd_queues(store: Store, args: argparse.Namespace, out: Output) -> int:
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


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _duration(text: str) -> timedelta:
    """An argparse type: ``90s``, ``30m``, ``12h``, ``7d``, ``2w`` (a bare number is seconds)."""
    number, unit = (text[:-1], text[-1]) if text[-1:] in _UNITS else (text, "s")
    try:
        value = float(number)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a duration: {text!r} (expected a number with s, m, h, d or w, as in 7d)"
        ) from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return timedelta(seconds=value * _UNITS[unit])


async def cmd_workers(store: Store, args: argparse.Namespace, out: Output) -> int:
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


async def _with_steps(store: Store, runs: list[RunInfo]) -> list[RunInfo]:
    """``runs`` with their steps (``list_runs`` leaves them out), read in one query."""
    if not runs:
        return runs
    s = store.tables.steps
    stmt = select(s).where(s.c.run_id.in_([r.id for r in runs])).order_by(s.c.id)
    async with store.read() as conn:
        rows = (await conn.execute(stmt)).all()
    steps: dict[int, list[StepInfo]] = {}
    for row in rows:
        steps.setdefault(row.run_id, []).append(step_info(row))
    return [dataclasses.replace(r, steps=steps.get(r.id, [])) for r in runs]


async def cmd_runs(store: Store, args: argparse.Namespace, out: Output) -> int:
    action = args.runs_command
    if action == "list":
        runs = await store.list_runs(workflow=args.workflow, status=args.status, limit=args.limit)
        _warn_unserved(await store.unserved_workflows())
        if out.as_json:
            out.data(await _with_steps(store, runs))
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


def _missing_module(error: ImportError, module_name: str) -> bool:
    """Whether ``error`` says ``module_name`` itself (or a parent package) does not exist,
    as opposed to an import failing inside the user's module."""
    missing = error.name
    return (
        isinstance(error, ModuleNotFoundError)
        and missing is not None
        and (module_name == missing or module_name.startswith(missing + "."))
    )


def _describe(error: BaseException) -> str:
    """``ValueError: message``: the error's type and text, on one line."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


async def _load_registry(target: str) -> WorkflowRegistry:
    obj = await _load(target, WorkflowRegistry)
    if not isinstance(obj, WorkflowRegistry):
        raise UsageError(f"{target!r} is not a WorkflowRegistry (or a factory returning one)")
    return obj


#: What ``--app`` may name (or a factory may return): where the app keeps its database.
_APP_TYPES = (Store, AsyncEngine, Engine, URL, str)


async def _load_app_store(target: str, models: Any, *, create: bool) -> Store:
    """The store ``--app MODULE:ATTR`` names: a Store as is; an AsyncEngine wrapped (never
    disposed by us); a sync Engine's URL, or a URL, connected with the async driver. Unless
    ``create``, a SQLite file that does not exist is refused before anything connects."""
    obj = await _load(target, _APP_TYPES)
    if isinstance(obj, Store):
        return obj
    if not create and isinstance(obj, AsyncEngine | Engine | URL | str):
        _require_sqlite_file(obj if isinstance(obj, URL | str) else obj.url)
    if isinstance(obj, AsyncEngine):
        store = Store(obj, models=models)
        async with store.read():  # reachable? said now, as connect() would
            pass
        return store
    if isinstance(obj, Engine):
        return await connect(obj.url, models=models)
    if isinstance(obj, URL | str):
        return await connect(obj, models=models)
    raise UsageError(
        f"{target!r} is not a Store, an AsyncEngine, an Engine or a database URL "
        f"(or a factory returning one); it is a {type(obj).__name__}"
    )


async def _load(target: str, accepted: type | tuple[type, ...]) -> Any:
    """The object ``MODULE:ATTR`` names; a callable that is not ``accepted`` is called (and
    awaited if it returns an awaitable)."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise UsageError(f"expected MODULE:ATTR, got {target!r}")
    sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as error:
        if isinstance(error, ImportError) and _missing_module(error, module_name):
            raise UsageError(f"cannot import {module_name!r}: {error}") from error
        raise UserCodeError(
            f"importing {module_name!r} (for {target}) raised {_describe(error)}"
        ) from error
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UsageError(f"{module_name!r} has no attribute {attr!r}") from None
    if not isinstance(obj, accepted) and callable(obj):
        try:
            obj = obj()
            if inspect.isawaitable(obj):
                obj = await obj
        except PgqrsError:
            raise
        except Exception as error:
            raise UserCodeError(f"calling {target} raised {_describe(error)}") from error
    return obj


async def cmd_worker(store: Store, args: argparse.Namespace, out: Output) -> int:
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


def cmd_alembic_init(args: argparse.Namespace, out: Output) -> int:
    from .alembic_support import scaffold

    ini = scaffold(args.directory, template=args.template)
    out.message(
        f"created {args.directory}/ and {ini}",
        {"ok": True, "directory": args.directory, "ini": str(ini)},
    )
    return EXIT_OK


# ---------------------------------------------------------------- parsing and running


def _number(kind: type[int] | type[float], *, minimum: float, strict: bool) -> Any:
    """An argparse type: a number ``> minimum`` (``strict``) or ``>= minimum``."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value < minimum or (strict and value == minimum):
            raise argparse.ArgumentTypeError(
                f"must be {'>' if strict else '>='} {minimum:g}, got {text}"
            )
        return value

    parse.__name__ = kind.__name__
    return parse


def _common() -> argparse.ArgumentParser:
    """Options accepted before the command and after it (``runs list --json``)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output"
    )
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks"
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pgqrs-sqla", description="Operate pgqrs-sqla queues, workflows and workers."
    )
    common = [_common()]
    parser.add_argument("--database-url", help="default: $PGQRS_DATABASE_URL")
    parser.add_argument(
        "--app",
        help="the app's database as MODULE:ATTR: a Store, AsyncEngine, Engine, URL, or a "
        "factory returning one (default: $PGQRS_APP); instead of --database-url",
    )
    parser.add_argument(
        "--table-prefix",
        default=os.environ.get("PGQRS_TABLE_PREFIX"),
        help="the prefix the app gave pgqrs_models(prefix=...) (default: $PGQRS_TABLE_PREFIX, "
        "else pgqrs_)",
    )
    parser.add_argument(
        "--schema",
        default=os.environ.get("PGQRS_SCHEMA"),
        help="the schema the app gave pgqrs_models(schema=...) (default: $PGQRS_SCHEMA)",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    worker = sub.add_parser(
        "worker", parents=common, help="run a worker for a registry (MODULE:ATTR)"
    )
    worker.add_argument(
        "target", help="a WorkflowRegistry, or a factory returning one, as module:attr"
    )
    worker.add_argument("--queues", help="comma-separated subset of the registry's names")
    worker.add_argument("--concurrency", type=_number(int, minimum=1, strict=False), default=1)
    worker.add_argument("--name", help="worker name (default: host-pid)")
    worker.add_argument("--port", type=int)
    positive = _number(float, minimum=0, strict=True)
    worker.add_argument("--visibility-timeout", type=positive, default=30.0)
    worker.add_argument("--poll-interval", type=positive, default=1.0)
    worker.add_argument(
        "--grace",
        type=_number(float, minimum=0, strict=False),
        default=30.0,
        help="seconds in-flight runs get on SIGTERM",
    )

    sub.add_parser("install", parents=common, help="create the pgqrs tables (idempotent)")
    sub.add_parser("check", parents=common, help="are the pgqrs tables present and complete?")
    sub.add_parser("queues", parents=common, help="message counts per queue")
    workers = sub.add_parser(
        "workers", parents=common, help="registered workers and their heartbeats"
    ).add_subparsers(dest="workers_command")
    workers.add_parser("list", parents=common, help="the worker rows (the default)")
    prune = workers.add_parser(
        "prune", parents=common, help="delete stopped workers' rows (none holding messages)"
    )
    prune.add_argument(
        "--older-than",
        type=_duration,
        default=timedelta(days=7),
        help="stopped longer ago than this: 90s, 30m, 12h, 7d (default), 2w",
    )
    prune.add_argument("--dry-run", action="store_true", help="count them, delete nothing")

    runs = sub.add_parser("runs", parents=common, help="workflow runs").add_subparsers(
        dest="runs_command", required=True
    )
    listing = runs.add_parser("list", parents=common)
    listing.add_argument("--workflow")
    listing.add_argument("--status", choices=[s.value for s in RunStatus])
    listing.add_argument("--limit", type=_number(int, minimum=1, strict=False), default=50)
    for action in ("show", "resume", "cancel", "retry"):
        runs.add_parser(action, parents=common).add_argument("run_id", type=int)

    dead = sub.add_parser(
        "dead-letters", parents=common, help="messages that exhausted their deliveries"
    )
    dl = dead.add_subparsers(dest="dl_command", required=True)
    dl_list = dl.add_parser("list", parents=common)
    dl_list.add_argument("queue")
    dl_list.add_argument("--limit", type=_number(int, minimum=1, strict=False), default=100)
    replay = dl.add_parser("replay", parents=common)
    replay.add_argument("queue")
    replay.add_argument("--id", type=int, action="append", help="replay only these (repeatable)")

    init = sub.add_parser(
        "alembic-init", parents=common, help="scaffold an Alembic environment with pgqrs wired in"
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


def _database(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """``(url, app)``, exactly one set: a flag wins over the environment, and naming both
    ``--database-url`` and ``--app`` is a usage error."""
    if args.database_url and args.app:
        raise UsageError("--database-url and --app both name the database: pass one")
    if args.database_url or args.app:
        return args.database_url, args.app
    url, app = os.environ.get("PGQRS_DATABASE_URL"), os.environ.get("PGQRS_APP")
    if url:
        return url, None
    if app:
        return None, app
    raise UsageError(
        "no database: pass --database-url or --app MODULE:ATTR, or set PGQRS_DATABASE_URL "
        "or PGQRS_APP"
    )


def _require_sqlite_file(url: str | URL) -> None:
    """Refuse a SQLite URL whose file does not exist: only ``install`` may create one (a
    read-only command used to leave an empty database file behind)."""
    parsed = normalise_url(url)
    if not parsed.drivername.startswith("sqlite"):
        return
    path = parsed.database
    if path and path != ":memory:" and not path.startswith("file:") and not os.path.exists(path):
        raise DatabaseUnavailable(
            f"SQLite database {path!r} does not exist: correct the path in the URL "
            "(sqlite:////abs/path.db for an absolute path), or create it with "
            "`pgqrs-sqla install`"
        )


async def _run(args: argparse.Namespace, out: Output) -> int:
    if args.command == "alembic-init":
        return cmd_alembic_init(args, out)
    url, app = _database(args)
    models = None
    if args.table_prefix or args.schema:
        # The tables as the app named them (pgqrs_models validates the prefix).
        models = pgqrs_models(
            prefix=args.table_prefix or DEFAULT_PREFIX, schema=args.schema or None
        )
    if url is not None:
        if args.command != "install":
            _require_sqlite_file(url)
        store = await connect(url, models=models)
    else:
        assert app is not None
        store = await _load_app_store(app, models, create=args.command == "install")
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
    except UserCodeError as error:
        return _fail(args, error, EXIT_USER_CODE)
    except KeyboardInterrupt:
        return EXIT_FAILED
    except Exception as error:  # a bug of ours: still one line, unless --debug
        return _fail(args, error, EXIT_FAILED, unexpected=True)


def _fail(
    args: argparse.Namespace, error: BaseException, code: int, *, unexpected: bool = False
) -> int:
    if args.debug:
        with contextlib.suppress(OSError, ValueError):
            traceback.print_exception(error, file=sys.stderr)
    if unexpected:
        _say(f"error: unexpected {_describe(error)} (--debug shows the traceback)")
    else:
        _say("error: " + " ".join(str(error).split()))  # one line, whatever the message
    return code


if __name__ == "__main__":
    sys.exit(main())
