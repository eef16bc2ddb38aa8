"""Alembic support: the shipped branch's location, ``include_object`` helpers, the options
``env.py`` passes to ``context.configure``, and scaffolding a new app's ``alembic/``.

Scaffold (the templates mirror Alembic's own, with pgqrs wired in)::

    python -m pgqrs_sqla.alembic_support init alembic --template async

"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, MetaData

from .errors import ConfigurationError
from .models import DEFAULT_PREFIX, PgqrsModels

BRANCH_LABEL = "pgqrs"
#: The branch as an Alembic package resource (use it with ``path_separator = space``).
VERSION_RESOURCE = "pgqrs_sqla:migrations/versions"
TEMPLATES = ("async", "sync")
_SUFFIXES = ("queues", "messages", "workers", "workflows", "workflow_runs", "workflow_steps")

IncludeObject = Callable[[Any, str | None, str, bool, Any], bool]


def version_location() -> str:
    """Filesystem path of the shipped ``pgqrs`` branch, for ``version_locations``."""
    return str(Path(__file__).resolve().parent / "migrations" / "versions")


def pgqrs_table_names(prefix: str = DEFAULT_PREFIX) -> frozenset[str]:
    return frozenset(prefix + suffix for suffix in _SUFFIXES)


def exclude_pgqrs_tables(
    models: PgqrsModels | None = None,
    *,
    prefix: str = DEFAULT_PREFIX,
    also: IncludeObject | None = None,
) -> IncludeObject:
    """An ``include_object`` hook for a host that takes the shipped branch: autogenerate then
    neither creates nor drops the pgqrs tables (nor their indexes and constraints), whether
    they are in the host's metadata or only in the database. ``also`` chains the host's own
    hook. (``include_name`` alone is not enough: it never sees the metadata's tables.)"""
    names = pgqrs_table_names(models.prefix if models is not None else prefix)

    def include_object(
        obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
    ) -> bool:
        table = name if type_ == "table" else getattr(getattr(obj, "table", None), "name", None)
        if table in names:
            return False
        return also(obj, name, type_, reflected, compare_to) if also is not None else True

    return include_object


def render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    """Alembic ``render_item`` hook: renders pgqrs's JSON/JSONB variant as importable code.

    (Rendered by a non-PostgreSQL backend, Alembic writes ``astext_type=Text()`` without a
    prefix, which the generated migration cannot import.) Pass it to ``context.configure``
    in your ``env.py`` if you autogenerate on SQLite; the templates do.
    """
    if (
        type_ == "type"
        and isinstance(obj, JSON)
        and "postgresql" in getattr(obj, "_variant_mapping", {})
    ):
        autogen_context.imports.add("from sqlalchemy.dialects import postgresql")
        none_as_null = bool(getattr(obj, "none_as_null", False))
        return (
            f"sa.JSON(none_as_null={none_as_null}).with_variant("
            f"postgresql.JSONB(none_as_null={none_as_null}, astext_type=sa.Text()), 'postgresql')"
        )
    return False


def load_metadata(target: str) -> MetaData:
    """``"module:attribute"`` naming a DeclarativeBase subclass or a MetaData."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ConfigurationError(
            f"pgqrs_target_metadata must be 'module:attribute', got {target!r}"
        )
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    metadata = obj if isinstance(obj, MetaData) else getattr(obj, "metadata", None)
    if not isinstance(metadata, MetaData):
        raise ConfigurationError(f"{target!r} is neither a MetaData nor a declarative base")
    return metadata


def context_options(config: Any) -> dict[str, Any]:
    """What the templates' ``env.py`` passes to ``context.configure``: ``target_metadata``
    (your models, or pgqrs's own) and, with ``pgqrs_tables = exclude``, the hook that keeps
    autogenerate away from the tables the shipped branch manages."""
    target = (config.get_main_option("pgqrs_target_metadata") or "").strip()
    if target:
        metadata = load_metadata(target)
    else:
        from ._core import _default

        metadata = _default().metadata
    mode = (config.get_main_option("pgqrs_tables") or "exclude").strip()
    if mode not in ("include", "exclude"):
        raise ConfigurationError(f"pgqrs_tables must be 'include' or 'exclude', got {mode!r}")
    options: dict[str, Any] = {"target_metadata": metadata, "render_item": render_item}
    if mode == "exclude":
        options["include_object"] = exclude_pgqrs_tables()
    return options


def templates_directory() -> Path:
    """Where the Alembic templates are: inside the installed package (wheel), or the
    repository's ``alembic_templates/`` in a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "alembic_templates", here.parent / "alembic_templates"):
        if (candidate / "async" / "env.py").exists():
            return candidate
    raise ConfigurationError("the pgqrs Alembic templates are missing from this installation")


def scaffold(
    directory: str | Path, *, template: str = "async", config_path: str | Path | None = None
) -> Path:
    """Create an app's Alembic environment in ``directory`` from a pgqrs template (``async``
    or ``sync``) and its ``alembic.ini`` (default: beside ``directory``). Returns the ini path.

    This is Alembic's own ``init`` command, pointed at our templates.
    """
    from alembic import command
    from alembic.config import Config

    if template not in TEMPLATES:
        raise ConfigurationError(f"unknown template {template!r}; choose one of {TEMPLATES}")
    directory = Path(directory)
    ini = Path(config_path) if config_path is not None else directory.parent / "alembic.ini"
    templates = templates_directory()

    class _Config(Config):
        def get_template_directory(self) -> str:
            return str(templates)

    command.init(_Config(str(ini)), str(directory), template=template)
    return ini


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pgqrs_sqla.alembic_support",
        description="Scaffold an Alembic environment with the pgqrs branch wired in.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="create DIRECTORY and alembic.ini from a template")
    init.add_argument("directory")
    init.add_argument("--template", choices=TEMPLATES, default="async")
    init.add_argument("--config", help="path of alembic.ini (default: beside DIRECTORY)")
    args = parser.parse_args(argv)
    try:
        ini = scaffold(args.directory, template=args.template, config_path=args.config)
    except Exception as error:  # a CLI: one clear line, no traceback
        sys.stderr.write(f"error: {error}\n")
        return 1
    sys.stdout.write(
        f"created {args.directory}/ and {ini}: set sqlalchemy.url and pgqrs_target_metadata there\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
