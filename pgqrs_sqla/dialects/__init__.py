"""The real differences between the backends, behind one :class:`Dialect` per backend.

* :mod:`.types`: what only renders differently (the database clock, "now plus N seconds",
  JSON, big-integer keys), compiled by SQLAlchemy for the backend at hand;
* :mod:`.base`: the :class:`Dialect` interface (row locking and ``SKIP LOCKED``, upsert,
  notify/listen, autocommit writes, engine setup, the single-writer queue, error codes);
* :mod:`.postgresql`, :mod:`.sqlite`: one implementation each.

A store holds its dialect (``store.dialect``). A new backend is one module here, registered
in :data:`DIALECTS`, plus its test parametrisation.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table

from .base import Dialect as Dialect, Upsert as Upsert
from .postgresql import PostgreSQLDialect
from .sqlite import (
    READONLY_OPTION as READONLY_OPTION,
    SQLITE_BUSY_TIMEOUT_MS as SQLITE_BUSY_TIMEOUT_MS,
    SQLiteDialect,
    setup_sqlite_engine as setup_sqlite_engine,
)
from .types import (
    BigIntKey as BigIntKey,
    JSONType as JSONType,
    aware as aware,
    utcnow as utcnow,
    utcnow_plus as utcnow_plus,
)

POSTGRESQL = PostgreSQLDialect()
SQLITE = SQLiteDialect()

#: the supported backends, by SQLAlchemy dialect name
DIALECTS: dict[str, Dialect] = {d.name: d for d in (POSTGRESQL, SQLITE)}


def dialect_for(engine_or_name: Any) -> Dialect:
    """The :class:`Dialect` of an engine, connection, SQLAlchemy dialect, or dialect name.

    ``KeyError`` for an unsupported backend (the Store turns it into a clear error).
    """
    name = engine_or_name
    if not isinstance(name, str):
        dialect = getattr(engine_or_name, "dialect", engine_or_name)
        name = dialect.name
    return DIALECTS[name]


def is_postgres(dialect_name: str) -> bool:
    """Whether ``dialect_name`` is SQLAlchemy's name for PostgreSQL."""
    return dialect_name == POSTGRESQL.name


def insert_for(dialect_name: str, table: Table) -> Upsert:
    """The dialect's INSERT construct, which knows ``ON CONFLICT``."""
    return dialect_for(dialect_name).insert(table)
