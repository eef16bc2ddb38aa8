"""Stores: connect() per URL kind, Store(engine), install() idempotency, and typed errors."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

import pgqrs_sqla as pgqrs


async def test_install_is_idempotent_and_check_is_clean(empty_db_url: str) -> None:
    async with await pgqrs.connect(empty_db_url) as store:
        assert len(await store.check()) >= 6  # every table missing
        await store.install()
        await store.install()
        assert await store.check() == []
        await store.create_queue("q")
        await store.install()  # does not touch data
        assert [q.name for q in await store.list_queues()] == ["q"]


async def test_missing_tables_raise_schema_missing(empty_db_url: str) -> None:
    async with await pgqrs.connect(empty_db_url) as store:
        with pytest.raises(pgqrs.SchemaMissing, match="install"):
            await store.create_queue("q")
        with pytest.raises(pgqrs.SchemaMissing):
            await store.require_schema()


async def test_store_wraps_an_engine_it_does_not_own(db_url: str) -> None:
    engine = create_async_engine(pgqrs.store.normalise_url(db_url))
    store = pgqrs.Store.from_engine(engine)
    await store.create_queue("q")
    await store.close()  # must not dispose the app's engine
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT 1"))).scalar() == 1
    await engine.dispose()


async def test_sqlite_pragmas(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = await pgqrs.connect(f"sqlite:///{tmp_path}/p.db")
    async with store, store.engine.connect() as conn:
        assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
        assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar() == 1
        assert (await conn.execute(text("PRAGMA busy_timeout"))).scalar() >= 1000


async def test_sqlite_without_path_uses_a_private_temporary_file() -> None:
    async with await pgqrs.connect("sqlite://") as store:
        await store.install()
        await store.create_queue("q")
        assert store.engine.url.database and store.engine.url.database.endswith(".db")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://localhost/db", "unsupported database"),
        ("postgresql+pg8000://localhost/db", "unsupported PostgreSQL driver"),
        ("not a url", "invalid database URL"),
    ],
)
async def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(pgqrs.ConfigurationError, match=message):
        await pgqrs.connect(url)


async def test_unreachable_server() -> None:
    with pytest.raises(pgqrs.DatabaseUnavailable, match="cannot reach the database") as info:
        await pgqrs.connect("postgresql://nobody:secret@127.0.0.1:1/db")
    assert "secret" not in str(info.value)


async def test_unopenable_sqlite_file() -> None:
    with pytest.raises(pgqrs.DatabaseUnavailable):
        await pgqrs.connect("sqlite:////nonexistent-dir/x.db")


async def test_psycopg_url_is_accepted(pg_server) -> None:  # type: ignore[no-untyped-def]
    if pg_server is None:
        pytest.skip("no PostgreSQL server available")
    name = pg_server.create_database(pg_server.template)
    try:
        url = pg_server.async_url(name).replace("postgresql://", "postgresql+psycopg://")
        async with await pgqrs.connect(url) as store:
            assert store.engine.dialect.driver == "psycopg"
            await store.create_queue("q")
            assert [q.name for q in await store.list_queues()] == ["q"]
    finally:
        pg_server.drop_database(name)
