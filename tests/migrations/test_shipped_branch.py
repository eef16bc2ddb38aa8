"""The shipped ``pgqrs`` branch, on SQLite and PostgreSQL: it builds exactly the tables the
models describe, names keys with the host's naming convention, lives beside an app's own
history (ordering by ``depends_on``), downgrades alone, and prints reviewable SQL."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.schema import CreateIndex

from pgqrs_sqla.alembic_support import BRANCH_LABEL, version_location
from tests.migrations.hostapp import (
    PGQRS,
    HostApp,
    constraint_names,
    models_source,
)

#: The primary key name of pgqrs_queues each convention gives, per backend.
EXPECTED_PK = {
    ("default", "postgresql"): "pk_pgqrs_queues",
    ("default", "sqlite"): "pk_pgqrs_queues",
    ("none", "postgresql"): "pgqrs_queues_pkey",  # the server's own choice
    ("none", "sqlite"): None,
    ("custom", "postgresql"): "pgqrs_queues_pk",
    ("custom", "sqlite"): "pgqrs_queues_pk",
}


def test_the_branch_is_one_root_labelled_pgqrs(tmp_path: Path) -> None:
    app = HostApp(tmp_path, f"sqlite:///{tmp_path}/unused.db")
    try:
        app.stock_env()
        script = ScriptDirectory.from_config(app.config())
    finally:
        app.close()
    [root] = script.get_bases()
    assert root == "pgqrs_0001_initial"
    revision = script.get_revision(root)
    assert revision is not None
    assert revision.branch_labels == {BRANCH_LABEL}
    assert revision.dependencies is None


@pytest.mark.parametrize("convention", ["default", "none", "custom"])
def test_branch_builds_what_the_models_describe_named_by_the_hosts_convention(
    app: HostApp, backend: str, convention: str
) -> None:
    """After ``upgrade pgqrs@head``: autogenerate's compare is empty, and every key,
    unique, foreign key, check and index is named exactly as ``create_all`` of the host's
    metadata names it. Then ``downgrade pgqrs@base`` leaves nothing behind."""
    app.write_models(models_source(convention=convention))
    app.stock_env(include_object="models.include_object")
    cfg = app.config()
    metadata = app.import_models().Base.metadata

    command.upgrade(cfg, "pgqrs@head")
    assert app.tables() == PGQRS
    assert app.drift(metadata) == []
    migrated = constraint_names(app.sync_url)
    assert migrated["pgqrs_queues"]["pk"] == EXPECTED_PK[convention, backend]

    command.downgrade(cfg, "pgqrs@base")
    assert app.tables() == set()

    engine = create_engine(app.sync_url)
    try:
        pgqrs_tables = [t for t in metadata.sorted_tables if t.name in PGQRS]
        metadata.create_all(engine, tables=pgqrs_tables)
    finally:
        engine.dispose()
    assert constraint_names(app.sync_url) == migrated


def test_branch_beside_an_app_history(app: HostApp, backend: str) -> None:
    """The app keeps its own branch; a revision pointing a foreign key at a pgqrs table
    depends on the pgqrs branch, so a fresh database builds in the right order, and
    ``downgrade pgqrs@base`` takes down that revision and the pgqrs tables, nothing else."""
    app.write_models(models_source(pgqrs=False))
    app.stock_env(include_object="exclude_pgqrs_tables()")
    cfg = app.config()
    command.upgrade(cfg, "heads")
    assert app.tables() == PGQRS

    # The app's first revision starts its own branch. The pgqrs tables are in the database
    # but not in these models: include_object keeps autogenerate from dropping them.
    first = app.autogenerate(cfg, "customers", head="base", branch_label="app")
    assert first == [("CreateTableOp", "customers")]
    customers_revision = app.last_revision
    command.upgrade(cfg, "heads")

    # Now the models carry pgqrs, and orders point at runs.
    app.write_models(models_source(orders=True))
    app.stock_env(include_object="models.include_object")
    second = app.autogenerate(cfg, "orders", head="app@head", depends_on="pgqrs@head")
    assert second == [("CreateTableOp", "orders")]
    command.upgrade(cfg, "heads")
    assert app.tables() == PGQRS | {"customers", "orders"}
    command.check(cfg)  # nothing left for autogenerate
    assert app.autogenerate(cfg, "nothing", head="app@head", write=False) == []

    # A fresh database: every head, in dependency order (orders after pgqrs_workflow_runs).
    command.downgrade(cfg, "base")
    assert app.tables() == set()
    command.upgrade(cfg, "heads")
    assert app.tables() == PGQRS | {"customers", "orders"}

    # The branch comes down with the one revision that depends on it.
    command.downgrade(cfg, "pgqrs@base")
    assert app.tables() == {"customers"}
    assert app.versions_in_db() == {customers_revision}


def test_offline_sql_for_review(app: HostApp, backend: str) -> None:
    """``alembic upgrade pgqrs@head --sql``: the DDL a reviewer reads, per dialect."""
    app.write_models(models_source())
    app.stock_env(include_object="models.include_object")
    out = io.StringIO()
    cfg = app.config()
    cfg.stdout = out
    cfg.output_buffer = out
    command.upgrade(cfg, "pgqrs@head", sql=True)
    sql = out.getvalue()
    for table in PGQRS:
        assert f"CREATE TABLE {table} (" in sql
    # Every index exactly as the models' own DDL has it (partial index included).
    models = app.import_models().models
    dialect = create_engine(app.sync_url).dialect
    for table in models.metadata.sorted_tables:
        for index in table.indexes if table.name in PGQRS else ():
            assert str(CreateIndex(index).compile(dialect=dialect)).strip() in sql
    assert ("JSONB" in sql) is (backend == "postgresql")
    assert app.tables() == set()  # nothing ran


def test_version_location_and_the_path_separator_trap(
    app: HostApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``path_separator = os`` the package resource is cut at its colon (into the
    relative paths ``pgqrs_sqla`` and ``migrations/versions``) and the branch silently goes
    missing; the absolute path from ``version_location()`` works with any separator."""
    monkeypatch.chdir(app.root)  # as in an app's project directory
    app.write_models(models_source())
    app.stock_env(include_object="models.include_object")
    trap = app.config(
        separator="os", locations=f"{app.versions}{os.pathsep}pgqrs_sqla:migrations/versions"
    )
    # No error anywhere: the branch just is not there, and `upgrade heads` creates nothing.
    assert ScriptDirectory.from_config(trap).get_heads() == []
    command.upgrade(trap, "heads")
    assert app.tables() == set()

    cfg = app.config(separator="os", locations=f"{app.versions}{os.pathsep}{version_location()}")
    assert ScriptDirectory.from_config(cfg).get_bases() == ["pgqrs_0001_initial"]
    command.upgrade(cfg, "heads")
    assert app.tables() == PGQRS


def _columns(sync_url: str, table: str) -> list[tuple[str, str, bool]]:
    engine = create_engine(sync_url)
    try:
        return [
            (c["name"], str(c["type"]), bool(c["nullable"]))
            for c in inspect(engine).get_columns(table)
        ]
    finally:
        engine.dispose()


@pytest.mark.parametrize("convention", ["default", "none"])
def test_0002_upgrades_and_downgrades_in_place(app: HostApp, backend: str, convention: str) -> None:
    """``pgqrs_0002`` adds ``pid`` and ``heartbeat_interval`` to a populated pgqrs_workers,
    and its downgrade (a table copy on SQLite, batch mode) gives back the table exactly as
    0001 made it: columns, keys, the foreign key pointing at it, the CHECK, and the rows."""
    app.write_models(models_source(convention=convention))
    app.stock_env(include_object="models.include_object")
    cfg = app.config()
    command.upgrade(cfg, "pgqrs_0001_initial")
    columns, names = _columns(app.sync_url, "pgqrs_workers"), constraint_names(app.sync_url)
    engine = create_engine(app.sync_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO pgqrs_queues (id, queue_name, max_deliveries, created_at) "
                    "VALUES (1, 'q', 5, CURRENT_TIMESTAMP)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO pgqrs_workers (id, worker_name, hostname, status, started_at, "
                    "heartbeat_at, queue_id) VALUES (7, 'w', 'h', 'polling', CURRENT_TIMESTAMP, "
                    "CURRENT_TIMESTAMP, 1)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO pgqrs_messages (queue_id, priority, enqueued_at, vt, read_ct, "
                    "failed_ct, consumer_worker_id) VALUES (1, 0, CURRENT_TIMESTAMP, "
                    "CURRENT_TIMESTAMP, 1, 0, 7)"
                )
            )

        command.upgrade(cfg, "pgqrs@head")
        assert app.drift(app.import_models().Base.metadata) == []
        with engine.connect() as conn:
            assert conn.execute(
                text("SELECT worker_name, pid, heartbeat_interval FROM pgqrs_workers")
            ).all() == [("w", None, None)]  # a row from before: judged as before

        command.downgrade(cfg, "pgqrs_0001_initial")
        assert _columns(app.sync_url, "pgqrs_workers") == columns
        assert constraint_names(app.sync_url) == names
        with engine.connect() as conn:
            assert conn.execute(text("SELECT id, worker_name FROM pgqrs_workers")).all() == [
                (7, "w")
            ]
            assert conn.execute(text("SELECT consumer_worker_id FROM pgqrs_messages")).all() == [
                (7,)
            ]
    finally:
        engine.dispose()


@pytest.mark.parametrize("convention", ["default", "none"])
def test_0004_to_0006_upgrade_and_downgrade_in_place(
    app: HostApp, backend: str, convention: str
) -> None:
    """``pgqrs_0004`` adds ``kind``, ``wake_at`` and ``wait_for`` to a populated
    pgqrs_workflow_steps (NULL on the rows from before: they are steps) and creates
    pgqrs_workflow_events; ``pgqrs_0005`` adds the runs' ``parent_run_id``, ``awaited_by``
    and ``deadline_at`` (NULL before) and the workflows' ``timeout``; ``pgqrs_0006`` the
    workflows' ``retention`` and ``error_retention`` and the queues' ``retention`` (NULL
    before: the store's defaults); ``pgqrs_0008`` the queues' limits and the runs' and
    messages' ``concurrency_key`` (NULL before: no limit, no key); ``pgqrs_0009`` the runs'
    ``finished_at`` index; ``pgqrs_0011`` the runs' ``trace_context`` (NULL before). The
    downgrade drops that table and gives back the steps, runs, workflows, queues and
    messages tables exactly as 0003 left them (a table copy on SQLite): columns, keys, the
    CHECK, the rows. Upgrading again then works: nothing was left behind."""
    app.write_models(models_source(convention=convention))
    app.stock_env(include_object="models.include_object")
    cfg = app.config()
    command.upgrade(cfg, "pgqrs_0003_workflow_served")
    assert "pgqrs_workflow_events" not in app.tables()
    columns = _columns(app.sync_url, "pgqrs_workflow_steps")
    run_columns = _columns(app.sync_url, "pgqrs_workflow_runs")
    workflow_columns = _columns(app.sync_url, "pgqrs_workflows")
    queue_columns = _columns(app.sync_url, "pgqrs_queues")
    message_columns = _columns(app.sync_url, "pgqrs_messages")
    names = constraint_names(app.sync_url)
    now = "CURRENT_TIMESTAMP"
    engine = create_engine(app.sync_url)
    try:
        with engine.begin() as conn:
            for statement in (
                f"INSERT INTO pgqrs_queues (id, queue_name, max_deliveries, created_at) "
                f"VALUES (1, 'ship', 5, {now})",
                f"INSERT INTO pgqrs_workflows (id, workflow_name, max_attempts, backoff_base, "
                f"backoff_cap, created_at, queue_id) VALUES (1, 'ship', 5, 1.0, 300.0, {now}, 1)",
                f"INSERT INTO pgqrs_workflow_runs (id, status, cancel_requested, created_at, "
                f"updated_at, workflow_id) VALUES (3, 'RUNNING', false, {now}, {now}, 1)",
                f"INSERT INTO pgqrs_workflow_steps (id, step_name, status, attempts, started_at, "
                f"run_id) VALUES (9, 'charge', 'SUCCESS', 1, {now}, 3)",
            ):
                conn.execute(text(statement))

        command.upgrade(cfg, "pgqrs@head")
        assert app.drift(app.import_models().Base.metadata) == []
        with engine.begin() as conn:
            assert conn.execute(
                text("SELECT step_name, kind, wake_at, wait_for FROM pgqrs_workflow_steps")
            ).all() == [("charge", None, None, None)]  # a step from before is a step
            assert conn.execute(  # pgqrs_0005: no parent, waiter or deadline before it
                text("SELECT parent_run_id, awaited_by, deadline_at FROM pgqrs_workflow_runs")
            ).all() == [(None, None, None)]
            assert conn.execute(  # pgqrs_0006: the store's retentions for rows from before
                text("SELECT retention, error_retention, timeout FROM pgqrs_workflows")
            ).all() == [(None, None, None)]
            assert conn.execute(text("SELECT retention FROM pgqrs_queues")).all() == [(None,)]
            assert conn.execute(  # pgqrs_0008: no limits, no keys before it
                text(
                    "SELECT concurrency, key_concurrency, rate_limit, rate_period FROM pgqrs_queues"
                )
            ).all() == [(None, None, None, None)]
            assert conn.execute(text("SELECT concurrency_key FROM pgqrs_workflow_runs")).all() == [
                (None,)
            ]
            assert conn.execute(  # pgqrs_0011: no trace context before it
                text("SELECT trace_context FROM pgqrs_workflow_runs")
            ).all() == [(None,)]
            conn.execute(text("UPDATE pgqrs_queues SET concurrency = 2, rate_limit = 5"))
            conn.execute(text("UPDATE pgqrs_workflows SET retention = 60, error_retention = 120"))
            conn.execute(
                text(
                    "INSERT INTO pgqrs_workflow_events (run_id, event_name, created_at) "
                    f"VALUES (3, 'approved', {now})"
                )
            )

        command.downgrade(cfg, "pgqrs_0003_workflow_served")
        assert "pgqrs_workflow_events" not in app.tables()
        assert _columns(app.sync_url, "pgqrs_workflow_steps") == columns
        assert _columns(app.sync_url, "pgqrs_workflow_runs") == run_columns
        assert _columns(app.sync_url, "pgqrs_workflows") == workflow_columns
        assert _columns(app.sync_url, "pgqrs_queues") == queue_columns
        assert _columns(app.sync_url, "pgqrs_messages") == message_columns
        assert constraint_names(app.sync_url) == names
        with engine.connect() as conn:
            assert conn.execute(
                text("SELECT id, step_name, status, run_id FROM pgqrs_workflow_steps")
            ).all() == [(9, "charge", "SUCCESS", 3)]

        command.upgrade(cfg, "pgqrs@head")
        assert app.drift(app.import_models().Base.metadata) == []
    finally:
        engine.dispose()
