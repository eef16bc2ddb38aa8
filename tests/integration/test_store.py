"""Stores: connect() per URL kind, Store(engine), install() idempotency, prefix and schema
end to end, and typed errors that say what to do."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase

import pgqrs_sqla as pgqrs
from pgqrs_sqla.alembic_support import pgqrs_table_names
from tests.conftest import PgServer

#: The part of a connection error that tells the user what to do.
CONNECT_GUIDANCE = "check the URL, that the server is running, and the credentials"


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
    ("url", "problem", "guidance"),
    [
        (
            "mysql://u:secret@localhost/db",
            "unsupported database 'mysql'",
            "pgqrs_sqla supports postgresql:// and sqlite:///",
        ),
        (
            "postgresql+pg8000://u:secret@localhost/db",
            "unsupported PostgreSQL driver 'pg8000'",
            "use postgresql:// (asyncpg) or postgresql+psycopg://",
        ),
        (
            "postgresql+psycopg2://u:secret@localhost/db",
            "postgresql+psycopg2:// names a synchronous driver",
            "use postgresql:// (asyncpg) or postgresql+psycopg:// (psycopg 3",
        ),
        (
            "sqlite+pysqlcipher:///x.db",
            "unsupported SQLite driver 'pysqlcipher'",
            "use sqlite:///file.db",
        ),
        (
            "not a url",
            "invalid database URL 'not a url'",
            "expected postgresql://user:password@host:5432/db or sqlite:///path/to/file.db",
        ),
        (
            "postgresql://u:secret@localhost:abc/db",
            "invalid database URL 'postgresql://u:***@localhost:abc/db': its port is not a number",
            "expected postgresql://user:password@host:5432/db",
        ),
    ],
)
async def test_bad_urls(url: str, problem: str, guidance: str) -> None:
    with pytest.raises(pgqrs.ConfigurationError) as info:
        await pgqrs.connect(url)
    message = str(info.value)
    assert problem in message
    assert guidance in message
    assert "secret" not in message


@pytest.mark.parametrize("driver", ["postgresql", "postgresql+asyncpg", "postgresql+psycopg"])
async def test_unreachable_server(driver: str) -> None:
    # Port 1: nothing listens there, so the connection is refused at once.
    with pytest.raises(pgqrs.DatabaseUnavailable) as info:
        await pgqrs.connect(f"{driver}://nobody:secret@127.0.0.1:1/db")
    message = str(info.value)
    assert message.startswith("cannot reach the database (connecting to ")
    assert "nobody:***@127.0.0.1:1/db" in message
    assert message.endswith(CONNECT_GUIDANCE)
    assert "secret" not in message


@pytest.fixture
def postgres(pg_server: PgServer | None) -> PgServer:
    """The session's PostgreSQL server, for the tests here that need one whatever the backend."""
    if pg_server is None:
        pytest.skip("no PostgreSQL server available")
    return pg_server


async def test_unknown_database_on_psycopg_is_unavailable(postgres: PgServer) -> None:
    # psycopg reports a server's refusal (here: no such database) without a SQLSTATE.
    url = make_url(postgres.async_url("pgqrs_no_such_db")).set(drivername="postgresql+psycopg")
    with pytest.raises(pgqrs.DatabaseUnavailable) as info:
        await pgqrs.connect(url)
    message = str(info.value)
    assert 'database "pgqrs_no_such_db" does not exist' in message
    assert message.endswith(CONNECT_GUIDANCE)


async def test_unopenable_sqlite_file() -> None:
    with pytest.raises(pgqrs.DatabaseUnavailable) as info:
        await pgqrs.connect("sqlite:////nonexistent-dir/x.db")
    message = str(info.value)
    assert "cannot open SQLite database '/nonexistent-dir/x.db'" in message
    assert "create the directory, or correct the path in the URL" in message


# ------------------------------------------------------------ prefix and schema


def jobs_models() -> pgqrs.PgqrsModels:
    """Models on a host base, renamed and in their own schema (as docs/existing-app.md)."""

    class Base(DeclarativeBase):
        pass

    return pgqrs.pgqrs_models(Base, prefix="jobs_", schema="background")


async def run_a_workflow(store: pgqrs.Store, models: pgqrs.PgqrsModels) -> None:
    """Install, trigger in an app session, let a worker run it; assert its recorded steps."""

    async def handler(ctx: pgqrs.RunContext, params: dict[str, int]) -> dict[str, int]:
        doubled = await ctx.step("double", lambda: params["n"] * 2)
        return {"doubled": doubled}

    await store.install()
    assert await store.check() == []
    await store.create_workflow("jobs")
    sessions = async_sessionmaker(store.engine)
    async with sessions() as session, session.begin():
        run_id = await pgqrs.workflow("jobs", models=models).trigger({"n": 21}).execute(session)
    worker = await pgqrs.consumer("w", None, "jobs").handler(handler).create(store)
    await worker.run_until_idle(timeout=30)
    run = await store.get_run(run_id)
    assert (run.status, run.output) == (pgqrs.RunStatus.SUCCESS, {"doubled": 42})
    assert [(s.name, s.status, s.output) for s in run.steps] == [
        ("double", pgqrs.StepStatus.SUCCESS, 42)
    ]


async def table_names(engine: AsyncEngine, schema: str | None) -> set[str]:
    async with engine.connect() as conn:
        return await conn.run_sync(lambda c: set(inspect(c).get_table_names(schema=schema)))


async def test_prefix_and_schema_end_to_end(backend: str, empty_db_url: str) -> None:
    models = jobs_models()
    expected = {t.name for t in models.metadata.sorted_tables}
    assert expected == pgqrs_table_names("jobs_")
    if backend == "postgresql":
        # The schema does not exist yet: install() creates it.
        async with await pgqrs.connect(empty_db_url, models=models) as store:
            await run_a_workflow(store, models)
            assert await table_names(store.engine, "background") == expected
            assert await table_names(store.engine, None) == set()  # nothing in public
        return
    # SQLite has no schemas: the documented route maps ours away on the app's engine.
    engine = create_async_engine(
        pgqrs.store.normalise_url(empty_db_url),
        execution_options={"schema_translate_map": {"background": None}},
    )
    try:
        async with pgqrs.Store(engine, models=models) as store:
            await run_a_workflow(store, models)
            assert await table_names(engine, None) == expected
    finally:
        await engine.dispose()


async def test_schema_on_sqlite_is_refused_with_the_fix(tmp_path: Any) -> None:
    models = jobs_models()
    url = f"sqlite:///{tmp_path}/app.db"
    fix = "make the models without schema= (a prefix= keeps their names apart from yours)"
    with pytest.raises(pgqrs.ConfigurationError, match="SQLite has no schema 'background'") as info:
        await pgqrs.connect(url, models=models)
    assert fix in str(info.value)
    assert "'schema_translate_map': {'background': None}" in str(info.value)

    # An engine of the app's own, without the map: refused by each entry point.
    engine = create_async_engine(pgqrs.store.normalise_url(url))
    try:
        async with pgqrs.Store(engine, models=models) as store:
            for call in (store.install, store.check, store.require_schema):
                with pytest.raises(pgqrs.ConfigurationError, match="SQLite has no schema"):
                    await call()
            # A statement cannot tell a missing schema from a missing table; it sends the
            # user to install(), which says what is wrong (above).
            with pytest.raises(pgqrs.SchemaMissing, match=r"run `await store\.install\(\)`"):
                await store.create_queue("q")
    finally:
        await engine.dispose()


async def test_a_missing_postgresql_schema_is_schema_missing_until_install(
    postgres: PgServer,
) -> None:
    name = postgres.create_database()
    try:
        async with await pgqrs.connect(postgres.async_url(name), models=jobs_models()) as store:
            with pytest.raises(pgqrs.SchemaMissing, match=r"run `await store\.install\(\)`"):
                await store.create_queue("q")
            assert "table background.jobs_queues is missing" in await store.check()
            await store.install()
            await store.create_queue("q")
            assert [q.name for q in await store.list_queues()] == ["q"]
    finally:
        postgres.drop_database(name)


async def test_install_into_a_ready_schema_needs_no_create_privilege_on_the_database(
    postgres: PgServer,
) -> None:
    """An app role given a schema by its DBA (no CREATE on the database) can install."""
    name = postgres.create_database()
    role = f"pgqrs_app_{uuid.uuid4().hex[:8]}"
    postgres.admin(f"CREATE ROLE {role} LOGIN")
    try:
        admin = create_async_engine(postgres.async_url(name))
        async with admin.begin() as conn:
            await conn.execute(text("CREATE SCHEMA background"))
            await conn.execute(text(f"GRANT USAGE, CREATE ON SCHEMA background TO {role}"))
            await conn.execute(text(f"REVOKE CREATE ON DATABASE {name} FROM PUBLIC"))
        await admin.dispose()
        url = make_url(postgres.async_url(name)).set(username=role, password=None)
        async with await pgqrs.connect(url, models=jobs_models()) as store:

            def may_create_schemas(conn: Connection) -> bool:
                sql = text("SELECT has_database_privilege(current_database(), 'CREATE')")
                return bool(conn.execute(sql).scalar())

            async with store.engine.connect() as conn:
                assert await conn.run_sync(may_create_schemas) is False
            await store.install()
            assert await store.check() == []
    finally:
        postgres.drop_database(name)
        postgres.admin(f"DROP ROLE IF EXISTS {role}")


async def test_psycopg_url_is_accepted(postgres: PgServer) -> None:
    name = postgres.create_database(postgres.template)
    try:
        url = postgres.async_url(name).replace("postgresql://", "postgresql+psycopg://")
        async with await pgqrs.connect(url) as store:
            assert store.engine.dialect.driver == "psycopg"
            await store.create_queue("q")
            assert [q.name for q in await store.list_queues()] == ["q"]
    finally:
        postgres.drop_database(name)
