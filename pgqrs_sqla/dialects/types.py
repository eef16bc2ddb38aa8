"""The column types and SQL functions whose rendering differs per backend.

SQLAlchemy compiles them for the dialect at hand: the database clock (``now()`` vs.
``strftime`` with milliseconds), "now plus N seconds", JSON (JSONB on PostgreSQL) and
big-integer keys (INTEGER on SQLite, where only INTEGER PRIMARY KEY autoincrements).

A new backend adds its ``@compiles`` variants here; everything else it needs is a
:class:`~pgqrs_sqla.dialects.base.Dialect`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Integer
from sqlalchemy.dialects.postgresql import JSONB
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
