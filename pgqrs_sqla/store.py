"""Store: an engine plus the pgqrs tables; ``connect()``, installation, and enqueueing.

The Store is composed of mixins, one job each: queue administration
(:mod:`pgqrs_sqla._queues_admin`), worker rows (:mod:`pgqrs_sqla._registration`), its
pools and the pooler (:mod:`pgqrs_sqla._connect`), and workflow run control
(get/list/wait/cancel/update_step/resume, :mod:`pgqrs_sqla.runs`), and schedules
(:mod:`pgqrs_sqla._schedules`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import inspect, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.engine.url import URL
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.schema import CreateColumn, CreateSchema, Table
from sqlalchemy.sql.dml import ReturningInsert

from . import queue as q
from ._connect import (
    _ALWAYS_ASYNCPG,
    Pooling,
    _driver_defaults,
    _make_pooler_safe,
    _sqlite_file,
    _sqlite_schema_error,
    normalise_url as normalise_url,
)
from ._core import DEFAULT_ERROR_RETENTION, DEFAULT_PRUNE_INTERVAL, DEFAULT_RETENTION
from ._db import AsyncTarget, SyncTarget, run_sync, safe_url, translated
from ._logging import get_logger
from ._queues_admin import QueueInfo as QueueInfo, QueuesAdmin, QueueStats as QueueStats
from ._registration import WorkerInfo as WorkerInfo
from ._retention import PruneResult as PruneResult, Retention
from ._schedules import ScheduleInfo as ScheduleInfo, Schedules
from .codec import DEFAULT_MAX_PAYLOAD_BYTES, JsonDefault
from .errors import SchemaMissing
from .events import Events
from .models import PgqrsModels
from .runs import RunControl

log = get_logger("pgqrs_sqla")
T = TypeVar("T")


async def connect(
    url: str | URL,
    *,
    models: PgqrsModels | None = None,
    pool_size: int = 5,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    listen: bool = True,
    json_default: JsonDefault | None = None,
    retention: float | timedelta = DEFAULT_RETENTION,
    error_retention: float | timedelta = DEFAULT_ERROR_RETENTION,
    prune_interval: float | timedelta | None = DEFAULT_PRUNE_INTERVAL,
    **engine_options: Any,
) -> Store:
    """Create an engine for ``url`` and return a :class:`Store` that owns it.

    ``sqlite://`` (no path) uses a private temporary file, because WAL needs a file.
    ``json_default`` encodes values JSON cannot (as ``json.dumps(default=...)``) in params,
    payloads and step results; :func:`pgqrs_sqla.json_default` handles UUID, datetimes,
    Decimal, Enum and sets. Off by default: such values are refused with ``PayloadError``.
    ``retention`` (default 7 days) is how long finished runs, archived messages and stopped
    worker rows are kept, ``error_retention`` (default 30 days) how long runs that ended
    ``ERROR`` are, unless a workflow or queue sets its own; every worker prunes what is past
    it once per ``prune_interval`` seconds (default 600, with jitter; None: never), and
    :meth:`Store.prune` does it now.
    Raises :class:`DatabaseUnavailable` if the database cannot be reached, and
    :class:`ConfigurationError` for models made with ``schema=`` on SQLite (which has no
    schemas; see :meth:`Store.install`).
    """
    parsed = normalise_url(url)
    tmpdir: str | None = None
    if parsed.drivername.startswith("sqlite"):
        parsed, tmpdir = _sqlite_file(parsed)
        engine = create_async_engine(parsed, **engine_options)
    else:
        engine_options.setdefault("pool_size", pool_size)
        engine_options.setdefault("max_overflow", 2)
        # Safe behind a pooler from the first statement on, and free when connected
        # directly (SQLAlchemy prepares every statement itself, by the name this gives it):
        # asyncpg's own statement names restart at 1 in every process, and meet the
        # statements an earlier process left on a pooler's server connections.
        _driver_defaults(parsed, engine_options, _ALWAYS_ASYNCPG)
        engine = create_async_engine(parsed, **engine_options)
    store = Store(
        engine,
        models=models,
        max_payload_bytes=max_payload_bytes,
        listen=listen,
        json_default=json_default,
        retention=retention,
        error_retention=error_retention,
        prune_interval=prune_interval,
    )
    store._owns_engine = True
    store._tmpdir = tmpdir
    try:
        with translated(f"connecting to {safe_url(parsed)}"):
            async with engine.connect() as conn:
                if store.dialect.may_be_pooled:
                    async with conn.begin():  # one server connection, even behind a pooler
                        store._pooled = await store.dialect.behind_pooler(conn)
        if store._pooled:
            await _make_pooler_safe(store, parsed, engine_options)
        if not store.dialect.has_schemas:
            # Said now, not at the first statement that names a table.
            async with store._read() as conn:
                await conn.run_sync(store._require_sqlite_schemas)
    except BaseException:
        await store.close()
        raise
    return store


#: invalid_sql_statement_name, duplicate_prepared_statement: prepared statements that did not
#: stay on the connection, or met another client's (transaction pooling)
class Store(QueuesAdmin, Retention, Pooling, RunControl, Events, Schedules):
    """The engine and the pgqrs tables: queues, workflows, runs and workers, administered.

    Make one with :func:`connect`, or wrap an ``AsyncEngine`` the app already has with
    ``Store(engine)`` (never disposed by us).
    """

    # ------------------------------------------------------------ schema

    def _all_tables(self) -> list[Table]:
        return [getattr(self.tables, f) for f in self.tables.__dataclass_fields__]

    def _schemas(self, conn: Connection) -> set[str]:
        """The schemas our tables live in on ``conn`` (after any ``schema_translate_map``)."""
        return {s for t in self._all_tables() if (s := conn.schema_for_object(t)) is not None}

    def _require_sqlite_schemas(self, conn: Connection) -> None:
        """SQLite: refuse models whose schema is not an attached database of ``conn``."""
        attached = {row[1] for row in conn.exec_driver_sql("PRAGMA database_list")}
        missing = sorted(self._schemas(conn) - attached)
        if missing:
            raise _sqlite_schema_error(missing[0])

    def _create_schemas(self, conn: Connection) -> None:
        """PostgreSQL: create our schema if it is missing.

        Looked up first: ``CREATE SCHEMA IF NOT EXISTS`` needs the CREATE privilege on the
        database even when the schema exists, which an app role given a ready schema lacks.
        """
        inspector = inspect(conn)
        for schema in sorted(self._schemas(conn)):
            if not inspector.has_schema(schema):
                conn.execute(CreateSchema(schema, if_not_exists=True))

    async def install(self) -> None:
        """Create the pgqrs tables and indexes if they are missing (idempotent).

        Tables an earlier pgqrs version created get the columns added since (all nullable,
        such as ``pgqrs_workers.pid``) and their indexes, so without Alembic this is also the
        upgrade.

        On PostgreSQL the models' ``schema`` is created too if it does not exist. On
        SQLite, which has no schemas, models made with ``schema=`` raise
        :class:`ConfigurationError` (unless the engine's ``schema_translate_map`` maps
        the schema away, or the schema is an attached database).

        Apps with Alembic should use the shipped ``pgqrs`` branch or autogenerate instead.
        """
        tables = self._all_tables()

        def create(conn: Connection) -> None:
            if self.dialect.has_schemas:
                self._create_schemas(conn)
            else:
                self._require_sqlite_schemas(conn)
            self.models.metadata.create_all(conn, tables=tables, checkfirst=True)
            self._add_new_columns(conn, tables)
            self._drop_retired_keys(conn)

        async with self._begin() as conn:
            serialise = self.dialect.serialise_installers()
            if serialise is not None:
                # Serialise concurrent installers; CREATE TABLE IF NOT EXISTS still races.
                await conn.execute(select(serialise))
            await conn.run_sync(create)

    def _add_new_columns(self, conn: Connection, tables: list[Table]) -> None:
        """Add the columns a later pgqrs version gave a table an earlier ``install()`` made.

        Such as ``pgqrs_workers.pid``: what the shipped Alembic revisions do, for databases
        installed without Alembic. Such columns are nullable, so ``ADD COLUMN`` is plain DDL on both
        backends; a missing NOT NULL column is left for :meth:`check` to report.
        """
        inspector = inspect(conn)
        quote = conn.dialect.identifier_preparer.quote
        for table in tables:
            schema = conn.schema_for_object(table)
            present = {c["name"] for c in inspector.get_columns(table.name, schema=schema)}
            missing = [c for c in table.columns if c.name not in present and c.nullable]
            name = quote(table.name) if schema is None else f"{quote(schema)}.{quote(table.name)}"
            for column in missing:
                spec = CreateColumn(column).compile(dialect=conn.dialect)
                conn.execute(text(f"ALTER TABLE {name} ADD COLUMN {spec}"))
                log.info("added column %s.%s", table.fullname, column.name)
            if missing:  # and the indexes a later version put on them
                indexed = {i["name"] for i in inspector.get_indexes(table.name, schema=schema)}
                for index in table.indexes:
                    if index.name not in indexed:
                        index.create(conn)
                        log.info("added index %s", index.name)

    def _drop_retired_keys(self, conn: Connection) -> None:
        """Drop the foreign key an earlier version put on ``pgqrs_messages.consumer_worker_id``.

        What ``pgqrs_0010`` does, on PostgreSQL: with it, each pruned worker row cost a scan
        of the messages table. SQLite keeps it (dropping a key copies the table: that is the
        shipped revision's job); there it costs only the worker rows' pruning.
        """
        if not self.dialect.drops_constraints:
            return
        m = self.tables.messages
        schema = conn.schema_for_object(m)
        quote = conn.dialect.identifier_preparer.quote
        table = quote(m.name) if schema is None else f"{quote(schema)}.{quote(m.name)}"
        for key in inspect(conn).get_foreign_keys(m.name, schema=schema):
            if key["constrained_columns"] == ["consumer_worker_id"] and key["name"]:
                conn.execute(text(f"ALTER TABLE {table} DROP CONSTRAINT {quote(key['name'])}"))
                log.info("dropped foreign key %s.%s", m.fullname, key["name"])

    async def check(self) -> list[str]:
        """Return what is missing from the database (empty when every table is present)."""

        def missing(conn: Connection) -> list[str]:
            if not self.dialect.has_schemas:
                self._require_sqlite_schemas(conn)
            inspector = inspect(conn)
            problems = []
            for table in self._all_tables():
                # The inspector takes schemas literally; the engine may translate ours.
                schema = conn.schema_for_object(table)
                if not inspector.has_table(table.name, schema=schema):
                    problems.append(f"table {table.fullname} is missing")
                    continue
                present = {c["name"] for c in inspector.get_columns(table.name, schema=schema)}
                for col in table.columns:
                    if col.name not in present:
                        problems.append(f"column {table.fullname}.{col.name} is missing")
            return problems

        async with self._read() as conn:
            return await conn.run_sync(missing)

    async def require_schema(self) -> None:
        """Raise :class:`SchemaMissing`, listing what :meth:`check` found, if it found anything."""
        problems = await self.check()
        if problems:
            raise SchemaMissing(f"{SchemaMissing.__doc__} ({'; '.join(problems)})")

    # ------------------------------------------------------------ queues

    def queue(self, name: str) -> Queue:
        """A handle for enqueueing onto ``name`` (checked when used)."""
        return Queue(self, q.validate_name(name))


class Queue:
    """Enqueue onto one queue, through the store's own transaction or the caller's."""

    def __init__(self, store: Store, name: str) -> None:
        self.store = store
        self.name = name

    def __repr__(self) -> str:
        return f"<Queue {self.name!r}>"

    def _stmt(
        self, payloads: Sequence[Any], options: dict[str, Any]
    ) -> tuple[ReturningInsert[Any], dict[str, Any]]:
        return q.enqueue_stmt(
            self.store.tables,
            self.name,
            payloads,
            max_bytes=self.store.max_payload_bytes,
            json_default=self.store.json_default,
            dialect_name=self.store.dialect.name,
            **options,
        )

    def _writer(
        self, payloads: Sequence[Any], options: dict[str, Any]
    ) -> Callable[[Connection], list[int]]:
        """The enqueue both entry points run, written once over a sync ``Connection``.

        The statement is built (and the payloads checked) now, before any transaction is
        touched.
        """
        prepared = self._stmt(payloads, options)
        return lambda conn: q.enqueue_rows(conn, self.name, *prepared)

    async def enqueue(
        self,
        payload: Any,
        *,
        target: AsyncTarget | None = None,
        delay: float | timedelta | None = None,
        available_at: datetime | None = None,
        priority: int = 0,
    ) -> int:
        """Enqueue one JSON payload; returns the message id.

        With ``target`` (the caller's ``AsyncSession``/``AsyncConnection``) the message is
        written in the caller's transaction and appears only if it commits.
        """
        ids = await self.enqueue_batch(
            [payload], target=target, delay=delay, available_at=available_at, priority=priority
        )
        return ids[0]

    async def enqueue_batch(
        self,
        payloads: Sequence[Any],
        *,
        target: AsyncTarget | None = None,
        delay: float | timedelta | None = None,
        available_at: datetime | None = None,
        priority: int = 0,
    ) -> list[int]:
        """Enqueue many payloads in one statement; returns their ids in order."""
        if not payloads:
            return []
        write = self._writer(
            payloads, {"delay": delay, "available_at": available_at, "priority": priority}
        )
        ids = await self.store._in_transaction(write, target, single_statement=True)
        self.store._wake(self.name, target)
        return ids

    def enqueue_sync(
        self,
        payload: Any,
        *,
        target: SyncTarget,
        delay: float | timedelta | None = None,
        available_at: datetime | None = None,
        priority: int = 0,
    ) -> int:
        """Enqueue in a sync ``Session``/``Connection``'s transaction; returns the id."""
        return self.enqueue_batch_sync(
            [payload], target=target, delay=delay, available_at=available_at, priority=priority
        )[0]

    def enqueue_batch_sync(
        self,
        payloads: Sequence[Any],
        *,
        target: SyncTarget,
        delay: float | timedelta | None = None,
        available_at: datetime | None = None,
        priority: int = 0,
    ) -> list[int]:
        """Enqueue many in a sync ``Session``/``Connection``'s transaction; returns their ids."""
        if not payloads:
            return []
        write = self._writer(
            payloads, {"delay": delay, "available_at": available_at, "priority": priority}
        )
        ids = run_sync(target, write)
        self.store._wake(self.name, target)
        return ids
