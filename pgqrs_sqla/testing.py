"""Helpers for testing an app that uses pgqrs_sqla, on SQLite or PostgreSQL.

from pgqrs_sqla.testing import temp_store, drain, triggered

async def test_order_triggers_fulfilment():
    async with temp_store() as store:             # or temp_store(postgres_url)
        await store.create_workflow("fulfil_order")
        run_id = await place_order(store)            # your code, triggering a run
        [run] = await triggered(store, "fulfil_order")
        assert run.input == {"order_id": 1}
        await drain(store, {"fulfil_order": fulfil_order})   # run the worker until idle
        assert (await store.get_run(run_id)).status == "SUCCESS"

See docs/testing.md.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool
from sqlalchemy.schema import CreateSchema, DropSchema

from .consumer import consumer
from .errors import ConfigurationError
from .models import RunStatus
from .runs import RunInfo
from .store import Store, connect, normalise_url


@contextlib.asynccontextmanager
async def temp_store(
    url: str | URL | AsyncEngine | None = None, **options: Any
) -> AsyncIterator[Store]:
    """A Store with the pgqrs tables installed in a place of its own, removed afterwards.

    Without ``url`` (or with ``sqlite://``): a fresh SQLite file in a temporary folder.
    With a PostgreSQL URL (or an ``AsyncEngine``, whose URL is used; the engine itself is
    left alone): a fresh schema ``pgqrs_test_<hex>`` on that database, made the only search
    path of every connection of the store's engine, dropped with everything in it afterwards —
    so tests can run side by side on one database. Create your app's own tables on
    ``store.engine`` too and they land (and go) with it. ``options`` go to the Store
    (``models=``, ``max_payload_bytes=``, ``listen=``).
    """
    if isinstance(url, AsyncEngine):
        url = url.url
    parsed = None if url is None else normalise_url(url)
    if parsed is None or parsed.drivername.startswith("sqlite"):
        if parsed is not None and parsed.database not in (None, "", ":memory:"):
            raise ConfigurationError(
                f"temp_store() makes its own SQLite file, and removes it: pass no URL (or "
                f"sqlite://) rather than {parsed.database!r}"
            )
        with tempfile.TemporaryDirectory(prefix="pgqrs-test-") as directory:
            store = await connect(f"sqlite:///{os.path.join(directory, 'test.db')}", **options)
            try:
                await store.install()
                yield store
            finally:
                await store.close()
        return
    schema = f"pgqrs_test_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(parsed, poolclass=NullPool)
    try:
        async with admin.begin() as conn:
            await conn.execute(CreateSchema(schema))
        try:
            engine = create_async_engine(parsed, pool_size=5, max_overflow=2)
            _search_path(engine, schema)
            store = Store(engine, **options)
            store._owns_engine = True
            try:
                await store.install()
                yield store
            finally:
                await store.close()
        finally:
            async with admin.begin() as conn:
                await conn.execute(DropSchema(schema, cascade=True))
    finally:
        await admin.dispose()


def _search_path(engine: AsyncEngine, schema: str) -> None:
    """Every new connection of ``engine`` finds (and creates) unqualified tables in ``schema``.

    So tables of the same name elsewhere (``public``) are neither seen nor touched (SQLAlchemy's
    documented recipe for a search path set on connect).
    """
    quoted = engine.dialect.identifier_preparer.quote_identifier(schema)

    @event.listens_for(engine.sync_engine, "connect", insert=True)
    def set_search_path(dbapi_connection: Any, _record: Any) -> None:
        autocommit = dbapi_connection.autocommit
        dbapi_connection.autocommit = True
        cursor = dbapi_connection.cursor()
        cursor.execute(f"SET SESSION search_path TO {quoted}")
        cursor.close()
        dbapi_connection.autocommit = autocommit


async def drain(
    store: Store,
    handlers: Mapping[str, Callable[..., Awaitable[Any]]],
    *,
    timeout: float = 30.0,
    name: str = "pgqrs-testing-worker",
    **options: Any,
) -> None:
    """Run a worker over ``handlers`` ({name: handler}) until nothing is left to do.

    That is, until nothing is ready and nothing is in flight. Delayed or paused work is left for
    later.
    """
    builder = consumer(name, None, *handlers)
    for queue, handler in handlers.items():
        builder.handler(handler, queue=queue)
    options.setdefault("poll_interval", 0.05)
    worker = await builder.create(store, **options)
    await worker.run_until_idle(timeout=timeout)


async def triggered(
    store: Store, workflow: str | None = None, *, status: RunStatus | None = None
) -> list[RunInfo]:
    """Runs that were triggered (committed), oldest first, optionally of one workflow/status."""
    runs = await store.list_runs(workflow=workflow, status=status, limit=10_000)
    return list(reversed(runs))
