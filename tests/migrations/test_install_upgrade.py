"""Without Alembic, ``install()`` is the upgrade: on tables an earlier pgqrs version created
it adds the columns and the tables a later one introduced, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic import command
from sqlalchemy import select

import pgqrs_sqla as pgqrs
from tests.migrations.hostapp import HostApp, models_source


async def test_install_adds_the_columns_and_tables_a_later_version_introduced(
    app: HostApp, backend: str
) -> None:
    app.write_models(models_source())
    app.stock_env(include_object="models.include_object")
    command.upgrade(app.config(), "pgqrs_0001_initial")  # the tables as pgqrs 0001 made them
    metadata = app.import_models().Base.metadata
    # pgqrs_workers.pid, .heartbeat_interval and .queues, pgqrs_workflows.backoff_jitter and
    # .served_at, pgqrs_workflow_steps.next_delivery, .kind, .wake_at and .wait_for, the
    # retentions of pgqrs_workflows and pgqrs_queues, the limits of pgqrs_queues and the
    # concurrency keys, a run's trace_context; the tables pgqrs_workflow_events and
    # pgqrs_schedules and their indexes;
    # and the foreign key pgqrs_messages.consumer_worker_id no longer has (pgqrs_0010)
    assert {op[0] for op in app.drift(metadata)} == {
        "add_column",
        "add_table",
        "add_index",
        "remove_fk",
    }

    store = await pgqrs.connect(app.url)
    try:
        assert sorted(await store.check()) == [
            "column pgqrs_messages.concurrency_key is missing",
            "column pgqrs_queues.concurrency is missing",
            "column pgqrs_queues.key_concurrency is missing",
            "column pgqrs_queues.rate_limit is missing",
            "column pgqrs_queues.rate_period is missing",
            "column pgqrs_queues.rate_window_count is missing",
            "column pgqrs_queues.rate_window_start is missing",
            "column pgqrs_queues.retention is missing",
            "column pgqrs_workers.heartbeat_interval is missing",
            "column pgqrs_workers.pid is missing",
            "column pgqrs_workers.queues is missing",
            "column pgqrs_workflow_runs.awaited_by is missing",
            "column pgqrs_workflow_runs.concurrency_key is missing",
            "column pgqrs_workflow_runs.deadline_at is missing",
            "column pgqrs_workflow_runs.parent_run_id is missing",
            "column pgqrs_workflow_runs.trace_context is missing",
            "column pgqrs_workflow_steps.kind is missing",
            "column pgqrs_workflow_steps.next_delivery is missing",
            "column pgqrs_workflow_steps.wait_for is missing",
            "column pgqrs_workflow_steps.wake_at is missing",
            "column pgqrs_workflows.backoff_jitter is missing",
            "column pgqrs_workflows.error_retention is missing",
            "column pgqrs_workflows.retention is missing",
            "column pgqrs_workflows.served_at is missing",
            "column pgqrs_workflows.timeout is missing",
            "table pgqrs_schedules is missing",
            "table pgqrs_workflow_events is missing",
        ]
        await store.install()
        await store.install()  # idempotent
        assert await store.check() == []
        # The retired key is dropped on PostgreSQL; SQLite keeps it (a table copy's job).
        retired = [op[0] for op in app.drift(metadata) if op[0] == "remove_fk"]
        assert len(retired) == (1 if backend == "sqlite" else 0)
        await store.create_queue("q")
        worker = await pgqrs.consumer("w", None, "q").handler(noop).create(store, own_pool=False)
        [info] = await store.list_workers()
        assert (info.pid, info.heartbeat_interval) == (worker.pid, worker.heartbeat_interval)
        assert info.queues == ["q"]
        # An event goes to the added table (send_event reads the added step columns too).
        run_id = await pgqrs.workflow("wf").trigger().execute(store)
        await store.send_event(run_id, "approved", {"by": "ops"})
        events = store.tables.events
        async with store.engine.connect() as conn:
            rows = (await conn.execute(select(events.c.run_id, events.c.payload))).all()
        assert [tuple(row) for row in rows] == [(run_id, {"by": "ops"})]
        # The added retention columns are read and written (and a prune reads them).
        info = await store.create_workflow("wf", retention=3600, error_retention=7200)
        assert (info.retention, info.error_retention) == (3600.0, 7200.0)
        assert (await store.create_queue("kept", retention=60)).retention == 60.0
        assert await store.prune(dry_run=True) == pgqrs.PruneResult(0, 0, 0, dry_run=True)
        # The added limit columns too, and a run's concurrency_key.
        info = await store.create_workflow("wf", concurrency=2, rate_limit=(5, 60))
        assert (info.concurrency, info.rate_limit) == (2, (5, 60.0))
        keyed = await pgqrs.workflow("wf").trigger(concurrency_key="k").execute(store)
        assert (await store.get_run(keyed)).concurrency_key == "k"
    finally:
        await store.close()
    assert [op[0] for op in app.drift(metadata)] == retired  # nothing else is left


async def noop(message: pgqrs.Message) -> None:
    return None
