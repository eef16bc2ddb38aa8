"""Alembic support: the shipped branch's location, ``include_object`` helpers and templates.

Also a ``render_item`` hook, the options the templates' ``env.py`` passes to
``context.configure``, and scaffolding a new app's ``alembic/`` from the templates.

Scaffold (the templates mirror Alembic's own, with pgqrs wired in)::

    python -m pgqrs_sqla.alembic_support init alembic --template async

Print the shipped branch's directory (for a ``version_locations`` without package resources)::

    python -m pgqrs_sqla.alembic_support version-location
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import MetaData
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import URL, make_url

from .errors import ConfigurationError
from .models import DEFAULT_PREFIX, TABLE_SUFFIXES, PgqrsModels

#: The label of the shipped branch: ``alembic upgrade pgqrs@head``, ``downgrade pgqrs@base``.
BRANCH_LABEL = "pgqrs"
#: The branch as an Alembic package resource (use it with ``path_separator = space``).
VERSION_RESOURCE = "pgqrs_sqla:migrations/versions"
#: The template names :func:`scaffold` accepts.
TEMPLATES = ("async", "sync")

#: The signature of an Alembic ``include_object`` hook.
IncludeObject = Callable[[Any, str | None, str, bool, Any], bool]


def version_location() -> str:
    """Filesystem path of the shipped ``pgqrs`` branch, for ``version_locations``.

    An absolute path has no ``:`` in it, so it also works with ``path_separator = os``
    (which splits the package-resource form ``pgqrs_sqla:migrations/versions`` in two).
    """
    return str(Path(__file__).resolve().parent / "migrations" / "versions")


def pgqrs_table_names(prefix: str = DEFAULT_PREFIX) -> frozenset[str]:
    """The names of the pgqrs tables for ``prefix``."""
    return frozenset(prefix + suffix for suffix in TABLE_SUFFIXES)


def exclude_pgqrs_tables(
    models: PgqrsModels | None = None,
    *,
    prefix: str = DEFAULT_PREFIX,
    also: IncludeObject | None = None,
) -> IncludeObject:
    """An ``include_object`` hook that keeps autogenerate away from the pgqrs tables.

    For a host that takes the shipped branch: autogenerate then neither creates nor drops the pgqrs
    tables (nor their indexes and constraints), whether they are in the host's metadata or only in
    the database. ``also`` chains the host's own hook. (``include_name`` alone is not enough: it
    never sees the metadata's tables.)

    The same as ``models.include_object``, plus chaining, and usable without ``models``
    (tables are recognised by ``prefix``).
    """
    names = pgqrs_table_names(models.prefix if models is not None else prefix)

    def include_object(
        obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
    ) -> bool:
        table = name if type_ == "table" else getattr(getattr(obj, "table", None), "name", None)
        if table in names:
            return False
        return also(obj, name, type_, reflected, compare_to) if also is not None else True

    return include_object


def render_item(type_: str, obj: Any, autogen_context: Any) -> str | Literal[False]:
    """Alembic ``render_item`` hook: writes PostgreSQL ``JSON``/``JSONB`` types as importable code.

    Such as the PostgreSQL variant of pgqrs's JSON columns, on every backend.

    Autogenerating against SQLite, Alembic renders ``postgresql.JSONB(astext_type=Text())``,
    a name the generated migration never imports. Pass this hook to ``context.configure`` in
    your ``env.py`` if you autogenerate on SQLite (the templates do); anything else is left to
    Alembic's own rendering.

    For a SQLModel app it also adds ``import sqlmodel`` to a revision that uses SQLModel's
    types (``sqlmodel.sql.sqltypes.AutoString`` for a ``str`` field), which Alembic writes
    without importing.
    """
    if type_ == "type" and type(obj).__module__.partition(".")[0] == "sqlmodel":
        autogen_context.imports.add("import sqlmodel")
        return False
    if type_ != "type" or not isinstance(obj, postgresql.JSON):  # JSONB is a subclass
        return False
    prefix = autogen_context.opts.get("sqlalchemy_module_prefix") or ""
    autogen_context.imports.add("from sqlalchemy.dialects import postgresql")
    astext = repr(obj.astext_type)
    rendered = repr(obj).replace(f"astext_type={astext}", f"astext_type={prefix}{astext}")
    return f"postgresql.{rendered}"


def migration_url(url: str | URL, *, asynchronous: bool) -> URL:
    """The URL an ``env.py`` connects with, from the URLs :func:`pgqrs_sqla.connect` accepts.

    ``asynchronous=True`` picks asyncpg / aiosqlite (as ``connect`` does);
    ``asynchronous=False`` picks psycopg (3) / the standard ``sqlite3`` module. A URL that
    already names another synchronous driver (``postgresql+psycopg2://``) is kept.

    Raises :class:`ConfigurationError` saying what to install when psycopg is needed and
    missing (it is the ``[psycopg]`` extra), instead of a bare ``ModuleNotFoundError``.
    """
    from .store import normalise_url

    if asynchronous:
        return normalise_url(url)
    parsed = make_url(url)
    backend, _, driver = parsed.drivername.partition("+")
    if backend in ("postgresql", "postgres") and driver in (
        "",
        "asyncpg",
        "psycopg_async",
        "psycopg",
    ):
        _require_psycopg(parsed)
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite" and driver == "aiosqlite":
        return parsed.set(drivername="sqlite")
    return parsed


def _require_psycopg(url: URL) -> None:
    try:
        import psycopg  # noqa: F401
    except ImportError as error:
        raise ConfigurationError(
            "a synchronous Alembic environment connects to PostgreSQL with psycopg (3), "
            'which is not installed: pip install "pgqrs-sqla[psycopg]", or use an async '
            "environment (python -m pgqrs_sqla.alembic_support init DIR --template async) with "
            "a postgresql+asyncpg:// URL",
            url=url.render_as_string(hide_password=True),
        ) from error


def load_metadata(target: str) -> MetaData:
    """``"module:attribute"`` naming a DeclarativeBase subclass or a MetaData."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ConfigurationError(
            f"pgqrs_target_metadata must be 'module:attribute', got {target!r}: name the "
            "module of your models and its declarative base, e.g. myapp.models:Base"
        )
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    metadata = obj if isinstance(obj, MetaData) else getattr(obj, "metadata", None)
    if not isinstance(metadata, MetaData):
        raise ConfigurationError(
            f"{target!r} is neither a MetaData nor a declarative base: point "
            "pgqrs_target_metadata at your Base (the class your models inherit from) or its "
            "MetaData"
        )
    return metadata


def context_options(config: Any) -> dict[str, Any]:
    """What the templates' ``env.py`` passes to ``context.configure``.

    That is ``target_metadata`` (your models, or pgqrs's own), ``render_item``, and, with
    ``pgqrs_tables = exclude``, the hook that keeps autogenerate away from the tables the
    shipped branch manages.

    ``target_metadata`` is a single ``MetaData``: the shipped revisions name keys with its
    naming convention (Alembic applies no convention when given a list).
    """
    target = (config.get_main_option("pgqrs_target_metadata") or "").strip()
    if target:
        metadata = load_metadata(target)
    else:
        from ._core import _default

        metadata = _default().metadata
    mode = (config.get_main_option("pgqrs_tables") or "exclude").strip()
    if mode not in ("include", "exclude"):
        raise ConfigurationError(
            f"pgqrs_tables must be 'include' or 'exclude', got {mode!r}: 'exclude' when the "
            "shipped pgqrs branch manages the tables, 'include' when your autogenerate does"
        )
    options: dict[str, Any] = {"target_metadata": metadata, "render_item": render_item}
    if mode == "exclude":
        options["include_object"] = exclude_pgqrs_tables()
    return options


def templates_directory() -> Path:
    """Where the Alembic templates are.

    Inside the installed package (wheel), or the repository's ``alembic_templates/`` in a source
    checkout.
    """
    here = Path(__file__).resolve().parent
    for candidate in (here / "alembic_templates", here.parent / "alembic_templates"):
        if all((candidate / name / "env.py").is_file() for name in TEMPLATES):
            return candidate
    raise ConfigurationError(
        "the pgqrs Alembic templates are missing from this installation: reinstall it "
        "(pip install --force-reinstall pgqrs-sqla)"
    )


def scaffold(
    directory: str | Path, *, template: str = "async", config_path: str | Path | None = None
) -> Path:
    """Create an app's Alembic environment from a pgqrs template; returns the ini path.

    The template is ``async`` or ``sync``; ``alembic.ini`` goes to ``config_path`` (default: beside
    ``directory``).

    This is Alembic's own ``init`` command, pointed at our templates: ``directory`` must not
    exist or be empty, and an existing ``alembic.ini`` is left as it is.
    """
    from alembic import command
    from alembic.config import Config
    from alembic.util import CommandError

    if template not in TEMPLATES:
        raise ConfigurationError(f"unknown template {template!r}; choose one of {TEMPLATES}")
    directory = Path(directory)
    ini = Path(config_path) if config_path is not None else directory.parent / "alembic.ini"
    templates = templates_directory()

    class _Config(Config):
        def get_template_directory(self) -> str:
            return str(templates)

    try:
        command.init(_Config(str(ini)), str(directory), template=template)
    except CommandError as error:
        raise ConfigurationError(
            f"cannot scaffold {directory}: {error}; choose a new or empty directory"
        ) from error
    return ini


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pgqrs_sqla.alembic_support``: the ``init`` and ``version-location`` commands.

    ``init DIR [--template sync|async] [--config INI]`` and ``version-location``; returns the
    exit status (1 when ``init`` is refused).
    """
    parser = argparse.ArgumentParser(
        prog="python -m pgqrs_sqla.alembic_support",
        description="Alembic with the pgqrs branch wired in.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="create DIRECTORY and alembic.ini from a template")
    init.add_argument("directory")
    init.add_argument("--template", choices=TEMPLATES, default="async")
    init.add_argument("--config", help="path of alembic.ini (default: beside DIRECTORY)")
    sub.add_parser("version-location", help="print the shipped branch's directory")
    args = parser.parse_args(argv)
    if args.command == "version-location":
        sys.stdout.write(version_location() + "\n")
        return 0
    try:
        ini = scaffold(args.directory, template=args.template, config_path=args.config)
    except ConfigurationError as error:  # a CLI: one clear line, no traceback
        sys.stderr.write(f"error: {error}\n")
        return 1
    sys.stdout.write(
        f"created {args.directory}/ and {ini}: set sqlalchemy.url and pgqrs_target_metadata there\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
