"""A new app scaffolded from our templates, on SQLite and PostgreSQL: ``alembic upgrade heads``
creates the pgqrs tables, the app's own branch grows beside them (including a foreign key
from an existing table to runs, which SQLite needs batch mode for), and autogenerate finds
nothing left to do. Plus the scaffold command line."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command

from pgqrs_sqla import alembic_support, pgqrs_models
from pgqrs_sqla.alembic_support import scaffold, version_location
from pgqrs_sqla.errors import ConfigurationError
from tests._cli import Done, run_main
from tests.migrations.hostapp import PGQRS, HostApp, models_source


@pytest.mark.parametrize("template", ["async", "sync"])
def test_new_app_from_a_template(app: HostApp, template: str) -> None:
    app.scaffold(template)
    # The URL as the app gives it to pgqrs_sqla.connect(); env.py picks the driver.
    cfg = app.config(url=app.url)

    command.upgrade(cfg, "heads")
    assert app.tables() == PGQRS
    assert app.drift(pgqrs_models().metadata) == []
    command.check(cfg)

    # The app's models (with pgqrs on its Base) and its first revision: a branch of its own.
    app.write_models(models_source())
    cfg = app.config(url=app.url, pgqrs_target_metadata=f"{app.package}.models:Base")
    first = app.autogenerate(cfg, "customers", head="base", branch_label="app")
    assert first == [("CreateTableOp", "customers")]
    command.upgrade(cfg, "heads")
    customers_revision = app.last_revision

    # A foreign key from the existing customers table to runs (ALTER, or batch on SQLite),
    # depending on the pgqrs branch.
    app.write_models(models_source(customer_run=True))
    second = app.autogenerate(cfg, "customers.run_id", head="app@head", depends_on="pgqrs@head")
    assert second == [("AddColumnOp", "customers"), ("CreateForeignKeyOp", "customers")]
    command.upgrade(cfg, "heads")
    command.check(cfg)
    assert app.drift(app.import_models().Base.metadata) == []

    # A fresh database builds in dependency order; the branch comes down alone.
    command.downgrade(cfg, "base")
    assert app.tables() == set()
    command.upgrade(cfg, "heads")
    command.check(cfg)
    command.downgrade(cfg, "pgqrs@base")
    assert app.tables() == {"customers"}
    assert app.versions_in_db() == {customers_revision}


def test_template_with_pgqrs_tables_included(app: HostApp) -> None:
    """``pgqrs_tables = include`` without the branch: the tables ride in the app's history."""
    app.scaffold("sync")
    app.write_models(models_source())
    cfg = app.config(
        branch=False,
        url=app.url,
        pgqrs_target_metadata=f"{app.package}.models:Base",
        pgqrs_tables="include",
    )
    created = {t for op, t in app.autogenerate(cfg, "everything") if op == "CreateTableOp"}
    assert created == PGQRS | {"customers"}
    command.upgrade(cfg, "head")
    command.check(cfg)


def test_scaffold_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="unknown template"):
        scaffold(tmp_path / "alembic", template="multidb")
    scaffold(tmp_path / "alembic", template="sync")
    with pytest.raises(ConfigurationError, match="cannot scaffold"):
        scaffold(tmp_path / "alembic", template="sync")


def run(*args: str, cwd: Path) -> Done:
    """``python -m pgqrs_sqla.alembic_support``, in this process (docs/existing-app.md's
    console block runs the real ``python -m``: tests/acceptance/test_docs_existing_app.py)."""
    return run_main("pgqrs_sqla.alembic_support", alembic_support.main, *args, cwd=cwd)


def test_command_line(tmp_path: Path) -> None:
    done = run("init", "migrations", "--template", "sync", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "migrations" / "env.py").is_file()
    ini = (tmp_path / "alembic.ini").read_text()
    assert "path_separator = space" in ini
    assert "version_locations = %(here)s/migrations/versions pgqrs_sqla:migrations/versions" in ini
    assert "context_options" in (tmp_path / "migrations" / "env.py").read_text()

    again = run("init", "migrations", cwd=tmp_path)
    assert again.returncode == 1
    assert again.stderr.startswith("error: cannot scaffold")
    assert "Traceback" not in again.stderr

    where = run("version-location", cwd=tmp_path)
    assert where.returncode == 0
    assert where.stdout.strip() == version_location()
    assert (Path(version_location()) / "pgqrs_0001_initial.py").is_file()
