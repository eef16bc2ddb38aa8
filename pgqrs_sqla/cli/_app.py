"""The command line: exit codes, argument parsing, and finding the database.

The database is named by a URL, or by the app's own object, ``--app MODULE:ATTR``.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import sys
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from ..errors import DatabaseUnavailable, PgqrsError
from ..models import RunStatus
from ..registry import WorkflowRegistry
from ..store import Store, connect, normalise_url

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_DATABASE, EXIT_USER_CODE = 0, 1, 2, 3, 4


class UsageError(Exception):
    """Bad command-line input (exit 2)."""


class UserCodeError(Exception):
    """The code behind MODULE:ATTR raised while being imported or called (exit 4)."""


# ---------------------------------------------------------------- --app MODULE:ATTR


def _missing_module(error: ImportError, module_name: str) -> bool:
    """Whether ``error`` says ``module_name`` itself (or a parent package) does not exist.

    As opposed to an import failing inside the user's module.
    """
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
    """The store ``--app MODULE:ATTR`` names.

    A Store as is; an AsyncEngine wrapped (never disposed by us); a sync Engine's URL, or a URL,
    connected with the async driver. Unless ``create``, a SQLite file that does not exist is
    refused before anything connects.
    """
    obj = await _load(target, _APP_TYPES)
    if isinstance(obj, Store):
        return obj
    if not create and isinstance(obj, AsyncEngine | Engine | URL | str):
        _require_sqlite_file(obj if isinstance(obj, URL | str) else obj.url)
    if isinstance(obj, AsyncEngine):
        store = Store(obj, models=models)
        async with store._read():  # reachable? said now, as connect() would
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
    """The object ``MODULE:ATTR`` names; a callable that is not ``accepted`` is called.

    Its result is awaited if it is an awaitable.
    """
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


def _database(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """``(url, app)``, exactly one set: a flag wins over the environment.

    Naming both ``--database-url`` and ``--app`` is a usage error.
    """
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
    """Refuse a SQLite URL whose file does not exist: only ``install`` may create one.

    A read-only command used to leave an empty database file behind.
    """
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


# ---------------------------------------------------------------- parsing


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

    board = sub.add_parser(
        "dashboard",
        parents=common,
        help="serve the operator's dashboard on this machine (the dashboard extra)",
    )
    # also after the command (`pgqrs-sqla dashboard --database-url URL`); SUPPRESS keeps a
    # URL given before it
    board.add_argument("--database-url", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    board.add_argument("--host", default="127.0.0.1", help="loopback only (default 127.0.0.1)")
    board.add_argument("--port", type=int, default=8080)
    board.add_argument(
        "--operate",
        action="store_true",
        help="show the actions (cancel, retry, replay...); default: read-only",
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

    prune_all = sub.add_parser(
        "prune",
        parents=common,
        help="delete finished runs, archived messages and stopped workers past their retention",
    )
    prune_all.add_argument("--dry-run", action="store_true", help="count them, delete nothing")

    runs = sub.add_parser("runs", parents=common, help="workflow runs").add_subparsers(
        dest="runs_command", required=True
    )
    listing = runs.add_parser("list", parents=common)
    listing.add_argument("--workflow")
    listing.add_argument("--status", choices=[s.value for s in RunStatus])
    listing.add_argument("--limit", type=_number(int, minimum=1, strict=False), default=50)
    for action in ("show", "resume", "cancel", "retry"):
        runs.add_parser(action, parents=common).add_argument("run_id", type=int)

    schedules = sub.add_parser(
        "schedules", parents=common, help="schedules: next tick and last run; pause, resume, delete"
    ).add_subparsers(dest="schedules_command")
    schedule_list = schedules.add_parser("list", parents=common, help="the schedules (the default)")
    schedule_list.add_argument("--workflow", help="only this workflow's")
    for action in ("pause", "resume", "delete"):
        schedules.add_parser(action, parents=common).add_argument("name")

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
