"""A SQLModel app, on SQLite and PostgreSQL: ``pgqrs_models`` on its SQLModel base puts the
pgqrs tables in its metadata, a SQLModel table points a named foreign key and a
``Relationship()`` at runs, and Alembic's autogenerate (Alembic's own env.py, as
docs/existing-app.md says) creates exactly those tables, then finds nothing left to do.

(The SQLModel base here has a registry of its own, so every test's app starts from an empty
metadata; docs/existing-app.md runs the same with ``SQLModel`` itself, in its own process.)"""

from __future__ import annotations

import textwrap

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect

from tests.migrations.hostapp import PGQRS, HostApp

pytest.importorskip("sqlmodel")

MODELS = textwrap.dedent(
    """
    from sqlalchemy.orm import registry
    from sqlmodel import Field, Relationship, SQLModel

    import pgqrs_sqla


    class Base(SQLModel, registry=registry()):
        pass


    models = pgqrs_sqla.pgqrs_models(Base)


    class Shipment(Base, table=True):
        id: int | None = Field(default=None, primary_key=True)
        carrier: str = Field(max_length=50)
        run_id: int | None = Field(default=None, sa_column_args=[models.run_fk()])
        run: models.WorkflowRun | None = Relationship()
    """
)


def test_sqlmodel_app_autogenerates_the_pgqrs_tables_and_its_foreign_key(app: HostApp) -> None:
    app.write_models(MODELS)
    host = app.import_models()
    assert host.models.metadata is host.Base.metadata
    assert set(host.Base.metadata.tables) >= PGQRS
    assert host.Shipment.__mapper__.relationships["run"].mapper.class_ is host.models.WorkflowRun

    app.stock_env(batch=True)
    cfg = app.config(branch=False)
    ops = app.autogenerate(cfg, "shipments and pgqrs")
    assert sorted(t for op, t in ops if op == "CreateTableOp") == sorted(PGQRS | {"shipment"})
    command.upgrade(cfg, "head")
    assert app.tables() == PGQRS | {"shipment"}
    command.check(cfg)  # nothing left to do
    assert app.drift(host.Base.metadata) == []

    engine = create_engine(app.sync_url)
    try:
        [fk] = inspect(engine).get_foreign_keys("shipment")
    finally:
        engine.dispose()
    assert fk["name"] == "fk_shipment_run_id_pgqrs_workflow_runs"
    assert fk["referred_table"] == "pgqrs_workflow_runs"

    command.downgrade(cfg, "base")
    assert app.tables() == set()
