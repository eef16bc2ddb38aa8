"""The include_object hooks, on SQLite and PostgreSQL: a host that takes the shipped branch
runs its own autogenerate, which must neither re-create nor drop the pgqrs tables - whether
its Base carries the pgqrs models or not. Each case first shows what autogenerate does
without the hook, so the test proves the hook is what makes the difference."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from alembic.autogenerate import produce_migrations
from alembic.migration import MigrationContext
from sqlalchemy import Column, Integer, MetaData, Table, create_engine

import pgqrs_sqla as pgqrs
from pgqrs_sqla.alembic_support import exclude_pgqrs_tables
from tests.migrations.hostapp import PGQRS, HostApp, models_source, summary

Hook = Callable[..., bool] | None


def planned(app: HostApp, metadata: MetaData, hook: Hook) -> list[tuple[str, str]]:
    """What `alembic revision --autogenerate` would write, as (operation, table) pairs."""
    engine = create_engine(app.sync_url)
    try:
        with engine.connect() as conn:
            opts: dict[str, Any] = {"target_metadata": metadata}
            if hook is not None:
                opts["include_object"] = hook
            context = MigrationContext.configure(conn, opts=opts)
            return summary(produce_migrations(context, metadata).upgrade_ops)
    finally:
        engine.dispose()


def create(app: HostApp, metadata: MetaData, names: set[str]) -> None:
    engine = create_engine(app.sync_url)
    try:
        metadata.create_all(engine, tables=[t for t in metadata.sorted_tables if t.name in names])
    finally:
        engine.dispose()


def pgqrs_ops(ops: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [op for op in ops if op[1] in PGQRS]


@pytest.mark.parametrize("hook_kind", ["method", "helper", "helper-without-models"])
def test_base_with_pgqrs_models_and_no_pgqrs_tables_yet(app: HostApp, hook_kind: str) -> None:
    """The database has the app's tables only (the branch not applied there yet); the Base
    carries the pgqrs models. Without the hook autogenerate re-creates our tables."""
    app.write_models(models_source())
    host = app.import_models()
    create(app, host.Base.metadata, {"customers"})
    hook = {
        "method": host.models.include_object,
        "helper": exclude_pgqrs_tables(host.models),
        "helper-without-models": exclude_pgqrs_tables(),
    }[hook_kind]

    created = {
        table for op, table in planned(app, host.Base.metadata, None) if op == "CreateTableOp"
    }
    assert created == PGQRS
    assert planned(app, host.Base.metadata, hook) == []


@pytest.mark.parametrize("hook_kind", ["method", "helper-without-models"])
def test_base_without_pgqrs_models_and_the_branch_applied(app: HostApp, hook_kind: str) -> None:
    """The branch made our tables; the app's Base does not know them. Without the hook
    autogenerate drops them."""
    app.write_models(models_source(pgqrs=False))
    host = app.import_models()
    ours = pgqrs.pgqrs_models()
    create(app, ours.metadata, PGQRS)
    create(app, host.Base.metadata, {"customers"})
    hook = ours.include_object if hook_kind == "method" else exclude_pgqrs_tables()

    dropped = {table for op, table in planned(app, host.Base.metadata, None) if op == "DropTableOp"}
    assert dropped == PGQRS
    assert planned(app, host.Base.metadata, hook) == []


def test_the_helper_chains_the_hosts_own_hook(app: HostApp) -> None:
    app.write_models(models_source())
    host = app.import_models()
    create(app, host.Base.metadata, PGQRS | {"customers"})
    legacy = MetaData()
    Table("legacy_import", legacy, Column("id", Integer, primary_key=True))
    create(app, legacy, {"legacy_import"})

    def skip_legacy(
        obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
    ) -> bool:
        return not (type_ == "table" and name is not None and name.startswith("legacy_"))

    assert planned(app, host.Base.metadata, exclude_pgqrs_tables(host.models)) == [
        ("DropTableOp", "legacy_import")
    ]
    chained = exclude_pgqrs_tables(host.models, also=skip_legacy)
    assert planned(app, host.Base.metadata, chained) == []
    # The host's hook sees only what is not ours.
    assert pgqrs_ops(planned(app, MetaData(), chained)) == []
