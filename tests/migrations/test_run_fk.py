"""docs/existing-app.md's walk-through for an app with no naming convention, on SQLite and
PostgreSQL: an app with an ``orders`` table adds ``pgqrs_models(Base)`` and
``orders.run_id = mapped_column(models.run_fk())`` (the page's model, read from the page);
the console steps the page shows (check, autogenerate, upgrade, check, downgrade) run
through Alembic's command API, and the foreign key reaches the database with its name.

And why it matters: the same step with a plain, unnamed ``ForeignKey`` stops SQLite's batch
rebuild half-way, as the page says."""

from __future__ import annotations

import re
import textwrap

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, inspect

from tests.acceptance.docs_blocks import DOCS
from tests.migrations.hostapp import PGQRS, HostApp

BEFORE = textwrap.dedent(
    """
    from sqlalchemy import String
    from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

    models = None


    class Base(DeclarativeBase):
        pass


    class Order(Base):
        __tablename__ = "orders"
        id: Mapped[int] = mapped_column(primary_key=True)
        item: Mapped[str] = mapped_column(String(100))
    """
)


def page_block(marker: str, lang: str) -> str:
    text = (DOCS / "existing-app.md").read_text()
    [block] = re.findall(rf"<!-- {re.escape(marker)} -->\s*```{lang}\n(.*?)```", text, flags=re.S)
    return str(block)


def run_fks(url: str) -> list[tuple[str | None, list[str], str | None]]:
    engine = create_engine(url)
    try:
        return [
            (fk["name"], fk["constrained_columns"], (fk.get("options") or {}).get("ondelete"))
            for fk in inspect(engine).get_foreign_keys("orders")
        ]
    finally:
        engine.dispose()


def orders_only(app: HostApp) -> tuple[Config, set[str]]:
    """The app before pgqrs (its ``orders`` table, batch mode on), migrated to head: its
    Alembic config and the revisions in its database."""
    app.write_models(BEFORE)
    app.stock_env(batch=True)
    cfg = app.config(branch=False)
    app.autogenerate(cfg, "orders")
    command.upgrade(cfg, "head")
    return cfg, app.versions_in_db()


def test_the_pages_walkthrough_on_an_app_without_naming_convention(app: HostApp) -> None:
    cfg, before = orders_only(app)

    steps = [
        line.split("#")[0].split()
        for line in page_block("walkthrough: autogenerate", "console").splitlines()
        if line.strip()
    ]
    seen: list[str] = []
    for step in steps:
        assert step[0] == "alembic", step
        seen.append(step[1])
        if step[1] == "check":
            command.check(cfg)  # raises on any difference
        elif step[1] == "revision":
            assert "--autogenerate" in step
            app.write_models(page_block("hostapp: no-convention", "python"))
            ops = app.autogenerate(cfg, "add pgqrs")
            assert sorted(t for op, t in ops if op == "CreateTableOp") == sorted(PGQRS)
            assert ("AddColumnOp", "orders") in ops
            assert ("CreateForeignKeyOp", "orders") in ops
        elif step[1] == "upgrade":
            command.upgrade(cfg, step[2])
            assert app.tables() == PGQRS | {"orders"}
            assert app.versions_in_db() == {app.last_revision}
            assert run_fks(app.sync_url) == [
                ("fk_orders_run_id_pgqrs_workflow_runs", ["run_id"], "SET NULL")
            ]
        elif step[1] == "downgrade":
            command.downgrade(cfg, step[2])
            assert app.tables() == {"orders"}
            assert app.versions_in_db() == before
            assert run_fks(app.sync_url) == []
        else:
            raise AssertionError(f"the page shows a step this test does not know: {step}")
    assert seen == ["check", "revision", "upgrade", "check", "downgrade"]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_an_unnamed_foreign_key_stops_sqlites_batch_rebuild_half_way(app: HostApp) -> None:
    """What the page warns of, so the warning goes when Alembic changes: without a name the
    upgrade fails after creating the pgqrs tables, and alembic_version does not move."""
    cfg, before = orders_only(app)
    unnamed = page_block("hostapp: no-convention", "python").replace(
        "mapped_column(models.run_fk())", 'mapped_column(ForeignKey("pgqrs_workflow_runs.id"))'
    )
    app.write_models("from sqlalchemy import ForeignKey\n" + unnamed.split("[fk] =")[0])
    with pytest.warns(UserWarning, match="unnamed constraint"):  # Alembic warns, at least
        app.autogenerate(cfg, "add pgqrs")
    with pytest.raises(ValueError, match="Constraint must have a name"):
        command.upgrade(cfg, "head")
    assert app.tables() == PGQRS | {"orders"}  # half-applied
    assert app.versions_in_db() == before
