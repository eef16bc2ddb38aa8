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
import sys
import traceback
from collections.abc import Sequence

from ..errors import ConfigurationError, DatabaseUnavailable, PgqrsError, SchemaMissing
from ..models import DEFAULT_PREFIX, pgqrs_models
from ..store import connect
from ._app import (
    EXIT_DATABASE,
    EXIT_FAILED,
    EXIT_USAGE,
    EXIT_USER_CODE,
    UsageError,
    UserCodeError,
    _database,
    _describe,
    _load_app_store,
    _require_sqlite_file,
    build_parser,
)
from ._output import Output, _say
from .dashboard import check_dashboard_args, cmd_dashboard
from .prune import cmd_prune
from .queues import cmd_dead_letters, cmd_queues
from .runs import cmd_runs
from .schedules import cmd_schedules
from .schema import cmd_alembic_init, cmd_check, cmd_install
from .worker import cmd_worker
from .workers import cmd_workers

COMMANDS = {
    "install": cmd_install,
    "check": cmd_check,
    "queues": cmd_queues,
    "workers": cmd_workers,
    "prune": cmd_prune,
    "runs": cmd_runs,
    "dead-letters": cmd_dead_letters,
    "schedules": cmd_schedules,
    "worker": cmd_worker,
    "dashboard": cmd_dashboard,
}


async def _run(args: argparse.Namespace, out: Output) -> int:
    if args.command == "alembic-init":
        return cmd_alembic_init(args, out)
    if args.command == "dashboard":
        check_dashboard_args(args)  # before anything connects
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
    """The ``pgqrs-sqla`` command: run the command ``argv`` names; returns the exit code.

    Errors are one line on stderr (a traceback with ``--debug``); the exit code says what failed:
    usage, the database, the command, or the user's code.
    """
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


__all__ = ["main"]
