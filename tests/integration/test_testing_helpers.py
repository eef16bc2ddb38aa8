"""pgqrs_sqla.testing: what a host app's own tests use."""

from __future__ import annotations

from typing import Any

import pytest

import pgqrs_sqla as pgqrs
from pgqrs_sqla.testing import drain, temp_store, triggered


async def test_temp_store_drain_and_triggered() -> None:
    async def double(ctx: pgqrs.RunContext, params: dict[str, int]) -> int:
        return await ctx.step("double", lambda: params["x"] * 2)

    seen: list[Any] = []

    async def plain(message: pgqrs.Message) -> None:
        seen.append(message.payload)

    async with temp_store() as store:
        await store.create_workflow("double")
        await store.create_queue("plain")
        ids = [await pgqrs.workflow("double").trigger({"x": x}).execute(store) for x in (1, 2)]
        await store.queue("plain").enqueue({"hello": "world"})
        assert [r.input for r in await triggered(store, "double")] == [{"x": 1}, {"x": 2}]
        await drain(store, {"double": double, "plain": plain})
        assert [await store.wait_for_run(i, timeout=1) for i in ids] == [2, 4]
        assert seen == [{"hello": "world"}]
        assert await triggered(store, "double", status=pgqrs.RunStatus.QUEUED) == []


async def test_temp_store_on_postgresql_is_a_schema_of_its_own(backend: str, db_url: str) -> None:
    """temp_store(url) on PostgreSQL: the tables in a fresh schema that is the store's
    whole search path (the app's tables made on store.engine land there too), two stores
    on one database apart, the public tables untouched, and everything dropped afterwards.
    On SQLite, temp_store() makes the file itself."""
    from sqlalchemy import text

    async def greet(ctx: pgqrs.RunContext, params: dict[str, str]) -> str:
        return await ctx.step("greet", lambda: f"hello {params['name']}")

    url = db_url if backend == "postgresql" else None
    async with temp_store(url) as store, temp_store(url) as other:
        await store.create_workflow("greet")
        async with store._begin() as conn:  # the app's own table, on the store's engine
            await conn.execute(text("CREATE TABLE orders (id INTEGER PRIMARY KEY)"))
            await conn.execute(text("INSERT INTO orders (id) VALUES (1)"))
        run_id = await pgqrs.workflow("greet").trigger({"name": "ada"}).execute(store)
        [run] = await triggered(store, "greet")
        assert run.id == run_id
        await drain(store, {"greet": greet})
        assert (await store.get_run(run_id)).output == "hello ada"
        assert await other.list_workflows() == []  # a place of its own
        assert await triggered(other) == []
        if backend == "postgresql":
            async with store._read() as conn:
                schema = (await conn.execute(text("SELECT current_schema()"))).scalar_one()
            assert schema.startswith("pgqrs_test_")
    if backend == "postgresql":
        async with await pgqrs.connect(db_url) as public:
            assert await public.list_workflows() == []  # the database's own tables: untouched
            async with public._read() as conn:
                left = await conn.execute(
                    text(
                        "SELECT count(*) FROM information_schema.schemata "
                        "WHERE schema_name LIKE 'pgqrs_test_%'"
                    )
                )
                assert left.scalar_one() == 0


async def test_temp_store_refuses_a_sqlite_file_it_would_not_remove(tmp_path: Any) -> None:
    with pytest.raises(pgqrs.ConfigurationError, match="makes its own SQLite file"):
        async with temp_store(f"sqlite:///{tmp_path}/mine.db"):
            pass
    assert list(tmp_path.iterdir()) == []
    async with temp_store("sqlite://") as store:
        assert await store.check() == []
