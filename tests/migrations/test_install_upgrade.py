"""Without Alembic, ``install()`` is the upgrade: on tables an earlier pgqrs version created
it adds the columns a later one introduced, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic import command

import pgqrs_sqla as pgqrs
from tests.migrations.hostapp import HostApp, models_source


async def test_install_adds_the_columns_a_later_version_introduced(
    app: HostApp, backend: str
) -> None:
    app.write_models(models_source())
    app.stock_env(include_object="models.include_object")
    command.upgrade(app.config(), "pgqrs_0001_initial")  # the tables as pgqrs 0001 made them
    metadata = app.import_models().Base.metadata
    # pgqrs_workers.pid, .heartbeat_interval and .queues, pgqrs_workflows.backoff_jitter and
    # .served_at, pgqrs_workflow_steps.next_delivery
    assert {op[0] for op in app.drift(metadata)} == {"add_column"}

    store = await pgqrs.connect(app.url)
    try:
        assert sorted(await store.check()) == [
            "column pgqrs_workers.heartbeat_interval is missing",
            "column pgqrs_workers.pid is missing",
            "column pgqrs_workers.queues is missing",
            "column pgqrs_workflow_steps.next_delivery is missing",
            "column pgqrs_workflows.backoff_jitter is missing",
            "column pgqrs_workflows.served_at is missing",
        ]
        await store.install()
        await store.install()  # idempotent
        assert await store.check() == []
        await store.create_queue("q")
        worker = await pgqrs.consumer("w", None, "q").handler(noop).create(store, own_pool=False)
        [info] = await store.list_workers()
        assert (info.pid, info.heartbeat_interval) == (worker.pid, worker.heartbeat_interval)
        assert info.queues == ["q"]
    finally:
        await store.close()
    assert app.drift(metadata) == []


async def noop(message: pgqrs.Message) -> None:
    return None
