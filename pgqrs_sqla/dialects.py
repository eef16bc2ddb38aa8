"""The few real differences between PostgreSQL and SQLite, in one place.

* the database clock (``now()`` vs. ``strftime`` with milliseconds),
* "now plus N seconds" for visibility times,
* JSON column type (JSONB on PostgreSQL), big-integer primary keys on SQLite,
* engine setup for SQLite (WAL, busy timeout, foreign keys, ``BEGIN IMMEDIATE``).

Everything else is ordinary SQLAlchemy Core that both dialects compile.
"""

from __future__ import annotations

import weakref
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Integer, event
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import expression
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import DateTime, TypeEngine

#: JSONB on PostgreSQL, JSON elsewhere. ``none_as_null`` keeps Python ``None`` as SQL NULL.
JSONType: TypeEngine[Any] = JSON(none_as_null=True).with_variant(
    JSONB(none_as_null=True), "postgresql"
)

#: BIGINT keys on PostgreSQL; INTEGER on SQLite, where only INTEGER PRIMARY KEY autoincrements.
BigIntKey: TypeEngine[int] = BigInteger().with_variant(Integer(), "sqlite")

SQLITE_BUSY_TIMEOUT_MS = 30_000
#: execution option marking a connection that only reads (no write lock on SQLite)
READONLY_OPTION = "pgqrs_readonly"
_SET_UP: weakref.WeakSet[Engine] = weakref.WeakSet()
_SQLITE_NOW = "strftime('%Y-%m-%d %H:%M:%f', 'now')"


class utcnow(expression.FunctionElement[datetime]):
    """The database clock, as a timezone-aware UTC timestamp."""

    type = DateTime(timezone=True)
    inherit_cache = True


@compiles(utcnow)
def _utcnow_default(element: utcnow, compiler: SQLCompiler, **kw: Any) -> str:
    return "now()"


@compiles(utcnow, "sqlite")
def _utcnow_sqlite(element: utcnow, compiler: SQLCompiler, **kw: Any) -> str:
    return _SQLITE_NOW


class utcnow_plus(expression.FunctionElement[datetime]):
    """The database clock plus a number of seconds (a float SQL expression)."""

    type = DateTime(timezone=True)
    inherit_cache = True

    def __init__(self, seconds: ColumnElement[float] | float) -> None:
        if not isinstance(seconds, ColumnElement):
            seconds = expression.literal(float(seconds))
        super().__init__(seconds)


@compiles(utcnow_plus)
def _utcnow_plus_default(element: utcnow_plus, compiler: SQLCompiler, **kw: Any) -> str:
    (seconds,) = element.clauses
    return f"(now() + make_interval(secs => {compiler.process(seconds, **kw)}))"


@compiles(utcnow_plus, "sqlite")
def _utcnow_plus_sqlite(element: utcnow_plus, compiler: SQLCompiler, **kw: Any) -> str:
    (seconds,) = element.clauses
    return (
        "strftime('%Y-%m-%d %H:%M:%f', 'now', "
        f"printf('%+.3f seconds', {compiler.process(seconds, **kw)}))"
    )


def aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive UTC datetimes; make them aware so both backends agree."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def is_postgres(dialect_name: str) -> bool:
    return dialect_name == "postgresql"


def setup_sqlite_engine(sync_engine: Engine) -> None:
    """WAL, a busy timeout, foreign keys, and ``BEGIN IMMEDIATE`` for every transaction.

    ``BEGIN IMMEDIATE`` takes SQLite's write lock up front, so a transaction that reads
    and then writes waits (``busy_timeout``) instead of failing on the lock upgrade.
    Idempotent per engine.
    """
    if sync_engine in _SET_UP:
        return
    _SET_UP.add(sync_engine)

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, connection_record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide where transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Readers (Store.read()) take no write lock: a deferred BEGIN reads a snapshot.
        readonly = conn.get_execution_options().get(READONLY_OPTION)
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")


def insert_for(dialect_name: str, table: Any) -> Any:
    """The dialect's INSERT construct, which knows ``ON CONFLICT``."""
    if is_postgres(dialect_name):
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table)
