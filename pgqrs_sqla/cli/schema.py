"""``pgqrs-sqla install``, ``check`` and ``alembic-init``: the pgqrs tables."""

from __future__ import annotations

import argparse
import sys

from ..store import Store
from ._app import EXIT_DATABASE, EXIT_OK
from ._output import Output


async def cmd_install(store: Store, args: argparse.Namespace, out: Output) -> int:
    """``pgqrs-sqla install``: create the pgqrs tables (idempotent)."""
    await store.install()
    out.message(f"pgqrs tables installed in {store}")
    return EXIT_OK


async def cmd_check(store: Store, args: argparse.Namespace, out: Output) -> int:
    """``pgqrs-sqla check``: what is missing from the database (exit code 3 if anything)."""
    problems = await store.check()
    if out.as_json:
        out.data({"ok": not problems, "problems": problems})
    else:
        sys.stdout.write(
            "ok: every pgqrs table is present\n" if not problems else "\n".join(problems) + "\n"
        )
    return EXIT_OK if not problems else EXIT_DATABASE


def cmd_alembic_init(args: argparse.Namespace, out: Output) -> int:
    """``pgqrs-sqla alembic-init``: scaffold an Alembic environment from a pgqrs template."""
    from ..alembic_support import scaffold

    ini = scaffold(args.directory, template=args.template)
    out.message(
        f"created {args.directory}/ and {ini}",
        {"ok": True, "directory": args.directory, "ini": str(ini)},
    )
    return EXIT_OK
