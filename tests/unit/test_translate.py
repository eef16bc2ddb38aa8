"""``translate()``: each driver error, produced against the real servers, becomes its named
``DatabaseError`` with the SQLSTATE / SQLite code on it and the driver's error chained."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import exc, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

import pgqrs_sqla as pgqrs
from pgqrs_sqla._db import translate, translated
from tests.conftest import PgServer, pg_or_skip


@pytest.fixture(params=["asyncpg", "psycopg"])
async def pg(request: pytest.FixtureRequest, pg_server: PgServer | None) -> AsyncIterator[Any]:
    """An autocommit engine on a fresh PostgreSQL database, through each async driver."""
    server = pg_or_skip(pg_server)
    name = server.create_database()
    url = make_url(server.async_url(name)).set(drivername=f"postgresql+{request.param}")
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        yield engine
    finally:
        await engine.dispose()
        server.drop_database(name)


async def _run(engine: AsyncEngine, statements: tuple[str, ...]) -> None:
    with translated("test"):
        async with engine.connect() as conn:
            for statement in statements:
                await conn.execute(text(statement))


async def _raised(engine: AsyncEngine, *statements: str) -> pgqrs.PgqrsError:
    with pytest.raises(pgqrs.PgqrsError) as caught:
        await _run(engine, statements)
    error = caught.value
    assert isinstance(error.__cause__, exc.DBAPIError)  # raised from the driver's error
    return error


async def _raised_on(url: str, statement: str, **engine_options: Any) -> pgqrs.PgqrsError:
    """:func:`_raised` on an engine of its own for ``url``, disposed after."""
    engine = create_async_engine(url, **engine_options)
    try:
        return await _raised(engine, statement)
    finally:
        await engine.dispose()


def _raise(state: str) -> str:
    return f"DO $$ BEGIN RAISE EXCEPTION 'raised' USING ERRCODE = '{state}'; END $$"


async def test_statement_timeout(pg: AsyncEngine) -> None:
    error = await _raised(pg, "SET statement_timeout = 50", "SELECT pg_sleep(5)")
    assert type(error) is pgqrs.StatementTimeout
    assert isinstance(error, pgqrs.QueryCancelled)
    assert (error.sqlstate, error.sqlite_code, error.transient) == ("57014", None, True)
    assert "statement_timeout" in str(error)


async def test_query_cancelled(pg: AsyncEngine) -> None:
    error = await _raised(pg, "SELECT pg_cancel_backend(pg_backend_pid()), pg_sleep(5)")
    assert type(error) is pgqrs.QueryCancelled
    assert (error.sqlstate, error.transient) == ("57014", True)


async def test_lock_timeout(pg: AsyncEngine) -> None:
    async with pg.connect() as holder:
        await holder.execute(text("CREATE TABLE t (x int)"))
        await holder.execute(text("BEGIN"))
        await holder.execute(text("LOCK TABLE t IN ACCESS EXCLUSIVE MODE"))
        try:
            error = await _raised(pg, "SET lock_timeout = 50", "SELECT * FROM t")
        finally:
            await holder.execute(text("ROLLBACK"))
    assert type(error) is pgqrs.LockTimeout
    assert (error.sqlstate, error.transient) == ("55P03", True)


async def test_read_only(pg: AsyncEngine) -> None:
    error = await _raised(pg, "SET default_transaction_read_only = on", "CREATE TABLE t (x int)")
    assert type(error) is pgqrs.ReadOnlyDatabase
    assert (error.sqlstate, error.transient) == ("25006", True)


async def test_undefined_table(pg: AsyncEngine) -> None:
    error = await _raised(pg, "SELECT * FROM pgqrs_nowhere")
    assert type(error) is pgqrs.SchemaMissing
    assert (error.sqlstate, error.transient) == ("42P01", False)


@pytest.mark.parametrize(
    ("state", "kind", "transient"),
    [
        ("26000", pgqrs.PoolerError, True),
        ("08P01", pgqrs.PoolerError, True),
        ("40001", pgqrs.LockConflict, True),
        ("40P01", pgqrs.LockConflict, True),
        ("28P01", pgqrs.AuthenticationFailed, False),
        ("28000", pgqrs.AuthenticationFailed, False),
        ("22012", pgqrs.DatabaseError, False),
    ],
)
async def test_raised_sqlstates(pg: AsyncEngine, state: str, kind: type, transient: bool) -> None:
    """SQLSTATEs a test cannot provoke on a trust-auth server without a pooler, raised by
    the server itself (the driver error is the one those conditions produce)."""
    error = await _raised(pg, _raise(state))
    assert type(error) is kind
    assert isinstance(error, pgqrs.DatabaseError)
    assert (error.sqlstate, error.transient) == (state, transient)
    if kind is pgqrs.LockConflict:
        assert isinstance(error, pgqrs.Conflict)
    if kind is pgqrs.AuthenticationFailed:
        assert isinstance(error, pgqrs.DatabaseUnavailable)


@pytest.fixture
def sqlite_file(tmp_path: Any) -> str:
    path = f"{tmp_path}/t.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE t (x int)")
    return path


async def test_sqlite_busy(sqlite_file: str) -> None:
    holder = sqlite3.connect(sqlite_file, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        error = await _raised_on(
            f"sqlite+aiosqlite:///{sqlite_file}",
            "INSERT INTO t VALUES (1)",
            connect_args={"timeout": 0.05},
        )
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert type(error) is pgqrs.DatabaseBusy
    assert error.sqlite_code is not None and error.sqlite_code & 0xFF == sqlite3.SQLITE_BUSY
    assert (error.sqlstate, error.transient) == (None, True)


async def test_sqlite_read_only(sqlite_file: str) -> None:
    error = await _raised_on(
        f"sqlite+aiosqlite:///file:{sqlite_file}?mode=ro&uri=true", "INSERT INTO t VALUES (1)"
    )
    assert type(error) is pgqrs.ReadOnlyDatabase
    assert error.sqlite_code is not None and error.sqlite_code & 0xFF == sqlite3.SQLITE_READONLY


async def test_sqlite_missing_table(sqlite_file: str) -> None:
    error = await _raised_on(f"sqlite+aiosqlite:///{sqlite_file}", "SELECT * FROM pgqrs_nowhere")
    assert type(error) is pgqrs.SchemaMissing
    assert error.sqlite_code == sqlite3.SQLITE_ERROR


def test_what_is_not_a_database_error_passes_through() -> None:
    error = ValueError("not ours")
    assert translate(error) is error
    mine = pgqrs.LeaseLost()
    assert translate(mine) is mine
