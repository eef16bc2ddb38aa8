"""Store: an engine plus the pgqrs tables; connection, installation and queue administration.

Workflow run control (get/list/wait/cancel/update_step/resume) is mixed in from
:mod:`pgqrs_sqla.runs`.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import case, delete, exc, func, inspect, select, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.engine.url import URL
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import AssertionPool, Pool, QueuePool, SingletonThreadPool, StaticPool
from sqlalchemy.schema import CreateColumn, CreateSchema, Table

from . import queue as q
from ._db import (
    AsyncTarget,
    SyncTarget,
    _sqlstate,
    run_sync,
    safe_url,
    translated,
)
from ._listen import POOLER_CONNECT_ARGS, POOLER_FIX, pooler_unsafe_settings
from ._logging import get_logger
from ._runs_write import requeue_dead_runs_stmt
from .codec import DEFAULT_MAX_PAYLOAD_BYTES, JsonDefault
from .dialects import aware, utcnow, utcnow_plus
from .errors import (
    ConfigurationError,
    DatabaseUnavailable,
    DeadLetterNotFound,
    QueueBusy,
    QueueNotFound,
    SchemaMissing,
    ValidationError,
)
from .models import ArchiveReason, PgqrsModels, WorkerStatus
from .runs import RunControl

log = get_logger("pgqrs_sqla")
T = TypeVar("T")


#: ``user:password@`` in a URL too malformed for SQLAlchemy to parse (and so to hide).
_URL_PASSWORD = re.compile(r"(://[^:/@]*:)[^@]*@")


def _redacted(url: str | URL) -> str:
    """``url`` for an error message, its password replaced by ``***`` even when unparsable."""
    if isinstance(url, URL):
        return safe_url(url)
    return _URL_PASSWORD.sub(r"\1***@", url)


def normalise_url(url: str | URL) -> URL:
    """Pick the async driver for the user: asyncpg for ``postgresql://``, aiosqlite for
    ``sqlite://``. ``postgresql+psycopg://`` is accepted as is.

    A named synchronous PostgreSQL driver (``postgresql+psycopg2://``) is refused rather
    than swapped: the URL asked for that driver, and its libpq-style query options
    (``sslmode=``, ``options=``) mean something else to asyncpg.
    """
    try:
        parsed = make_url(url)
    except (exc.ArgumentError, ValueError) as error:
        # make_url raises ValueError for a port that is not a number ("localhost:abc").
        problem = "its port is not a number" if "int()" in str(error) else str(error)
        raise ConfigurationError(
            f"invalid database URL {_redacted(url)!r}: {problem}; expected "
            "postgresql://user:password@host:5432/db or sqlite:///path/to/file.db"
        ) from error
    backend, _, driver = parsed.drivername.partition("+")
    if backend in ("postgresql", "postgres"):
        if driver in ("", "asyncpg"):
            return parsed.set(drivername="postgresql+asyncpg")
        if driver in ("psycopg", "psycopg_async"):
            return parsed.set(drivername="postgresql+psycopg")
        if driver == "psycopg2":
            raise ConfigurationError(
                "postgresql+psycopg2:// names a synchronous driver; pgqrs_sqla needs an async "
                "one: use postgresql:// (asyncpg) or postgresql+psycopg:// (psycopg 3, "
                "the [psycopg] extra) for the same server",
                url=safe_url(parsed),
            )
        raise ConfigurationError(
            f"unsupported PostgreSQL driver {driver!r}: use postgresql:// (asyncpg) or "
            "postgresql+psycopg://"
        )
    if backend == "sqlite":
        if driver not in ("", "aiosqlite", "pysqlite"):
            raise ConfigurationError(f"unsupported SQLite driver {driver!r}: use sqlite:///file.db")
        return parsed.set(drivername="sqlite+aiosqlite")
    raise ConfigurationError(
        f"unsupported database {backend!r} in {safe_url(parsed)!r}: pgqrs_sqla supports "
        "postgresql:// and sqlite:///"
    )


def _sqlite_schema_error(schema: str) -> ConfigurationError:
    """The error for pgqrs tables in a schema SQLite does not have."""
    return ConfigurationError(
        f"SQLite has no schema {schema!r}: the pgqrs models were made with "
        f"schema={schema!r}, and a SQLite database is one schema. For SQLite, make the models "
        "without schema= (a prefix= keeps their names apart from yours), or map the schema "
        "away on your engine: create_async_engine(url, execution_options="
        f"{{'schema_translate_map': {{{schema!r}: None}}}})",
        schema=schema,
    )


def _sqlite_file(url: URL) -> tuple[URL, str | None]:
    """The file behind a SQLite URL: a private temporary one for ``sqlite://``."""
    if not url.database or url.database == ":memory:":
        tmpdir = tempfile.mkdtemp(prefix="pgqrs-")
        return url.set(database=os.path.join(tmpdir, "pgqrs.db")), tmpdir
    if not os.path.isdir(os.path.dirname(os.path.abspath(url.database))):
        # Said here, plainly, rather than by a driver thread that outlives the failure.
        raise DatabaseUnavailable(
            f"cannot open SQLite database {url.database!r}: its directory does not exist; "
            "create the directory, or correct the path in the URL (sqlite:////abs/path.db "
            "for an absolute path)"
        )
    return url, None


async def connect(
    url: str | URL,
    *,
    models: PgqrsModels | None = None,
    pool_size: int = 5,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    listen: bool = True,
    json_default: JsonDefault | None = None,
    **engine_options: Any,
) -> Store:
    """Create an engine for ``url`` and return a :class:`Store` that owns it.

    ``sqlite://`` (no path) uses a private temporary file, because WAL needs a file.
    ``json_default`` encodes values JSON cannot (as ``json.dumps(default=...)``) in params,
    payloads and step results; :func:`pgqrs_sqla.json_default` handles UUID, datetimes,
    Decimal, Enum and sets. Off by default: such values are refused with ``PayloadError``.
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
            async with store.read() as conn:
                await conn.run_sync(store._require_sqlite_schemas)
    except BaseException:
        await store.close()
        raise
    return store


#: invalid_sql_statement_name, duplicate_prepared_statement: prepared statements that did not
#: stay on the connection, or met another client's (transaction pooling)
_PREPARED_STATEMENT_STATES = {"26000", "42P05"}

#: asyncpg options of ``POOLER_CONNECT_ARGS`` set on every engine connect() makes.
_ALWAYS_ASYNCPG = ("statement_cache_size", "prepared_statement_name_func")


def _driver_defaults(url: URL, engine_options: dict[str, Any], keys: Sequence[str]) -> list[str]:
    """Add the ``POOLER_CONNECT_ARGS`` named by ``keys`` to ``engine_options``'
    ``connect_args``, except those the caller chose (there or in the URL); return the added."""
    wanted = POOLER_CONNECT_ARGS.get(url.get_driver_name(), {})
    given = engine_options.get("connect_args", {})
    added = {k: wanted[k] for k in keys if k in wanted and k not in given and k not in url.query}
    if added:
        engine_options["connect_args"] = {**given, **added}
    return sorted(added)


async def _make_pooler_safe(store: Store, url: URL, engine_options: dict[str, Any]) -> None:
    """``store``'s engine reaches PostgreSQL through a connection pooler: remake it with the
    driver options transaction pooling needs (:data:`~pgqrs_sqla._listen.POOLER_CONNECT_ARGS`)
    the caller did not choose, and say so in one WARNING."""
    driver_options = POOLER_CONNECT_ARGS.get(url.get_driver_name(), {})
    if _driver_defaults(url, engine_options, list(driver_options)):
        old, store.engine = store.engine, create_async_engine(url, **engine_options)
        await old.dispose()
    given = {**url.query, **engine_options.get("connect_args", {})}
    chosen = [f"{k}={given[k]!r}" for k in driver_options if given.get(k) != driver_options[k]]
    log.warning(
        "%s is reached through a connection pooler (PgBouncer or the like: the backend pid it "
        "reported is not the server's): pgqrs turned prepared statements that outlive a "
        "transaction off (%s), as transaction pooling needs%s. Workers poll unless LISTEN "
        "works through it (session pooling); they say which at start.",
        safe_url(url),
        ", ".join(driver_options) or "nothing to turn off for this driver",
        f"; kept as you chose: {', '.join(chosen)}" if chosen else "",
    )


@dataclass(frozen=True)
class QueueInfo:
    """A queue: its ``name`` and ``max_deliveries`` (deliveries a message gets before it
    becomes a dead letter)."""

    id: int
    name: str
    max_deliveries: int
    created_at: datetime


@dataclass(frozen=True)
class QueueStats:
    """Message counts of one queue (:meth:`Store.queue_stats`): ``ready`` to be claimed,
    ``leased`` to a worker now, ``delayed`` (not visible yet), ``archived`` (done), ``dead``
    (dead letters), and the age in seconds of the oldest ready message (None if none)."""

    name: str
    ready: int
    leased: int
    delayed: int
    archived: int
    dead: int
    oldest_ready_age: float | None


@dataclass(frozen=True)
class WorkerInfo:
    """A worker row. ``queue`` is the first queue the worker serves; ``queues`` every
    queue it serves, as its row records them (see the attribute for older rows)."""

    id: int
    name: str
    hostname: str
    port: int | None
    queue: str | None
    status: str
    started_at: datetime
    heartbeat_at: datetime
    heartbeat_age: float
    stopped_at: datetime | None
    #: the registering process's id (None for rows written before pgqrs 0002)
    pid: int | None = None
    #: the worker's heartbeat interval in seconds; its row is stale after three of them
    heartbeat_interval: float | None = None
    #: every queue the worker serves, ``queue`` first, as it registered them. A row written
    #: before pgqrs 0003 records only ``queue``: then ``queue`` and the queues of the messages
    #: it holds now (leases not yet ended), until the worker registers again
    queues: list[str] = field(default_factory=list)


def _pool_like(pool: Pool, size: int) -> Pool:
    """A new, empty pool that connects as ``pool`` does, sized ``size`` (+2 overflow).

    ``Pool.recreate()`` copies the creator (which holds the engine's ``connect_args``),
    the pool's events and options; for a ``QueuePool`` the same constructor call is made
    with the worker's size instead of the app's (``QueuePool.recreate`` has no size
    argument). Other pools (``NullPool``, ``StaticPool``...) are recreated as they are."""
    if not isinstance(pool, QueuePool):
        return pool.recreate()
    return type(pool)(
        pool._creator,
        pool_size=size,
        max_overflow=2,
        pre_ping=pool._pre_ping,
        use_lifo=pool._pool.use_lifo,
        timeout=pool._timeout,
        recycle=pool._recycle,
        echo=pool.echo,
        logging_name=pool._orig_logging_name,
        reset_on_return=pool._reset_on_return,
        _dispatch=pool.dispatch,
        dialect=pool._dialect,
    )


class Store(RunControl):
    """The engine and the pgqrs tables. Make one with :func:`connect`, or wrap an
    ``AsyncEngine`` the app already has with ``Store(engine)`` (never disposed by us)."""

    def _pool_shareable_only(self) -> str | None:
        """Why this store's pool cannot be duplicated (``None`` when it can): a pool that
        holds its one connection (``StaticPool``, ``SingletonThreadPool``, ``AssertionPool``),
        or an in-memory SQLite database, which a new connection would open empty."""
        pool = self.engine.sync_engine.pool
        if isinstance(pool, StaticPool | SingletonThreadPool | AssertionPool):
            return f"its engine's {type(pool).__name__} holds a single connection"
        if self.dialect.in_memory(self.engine.url):
            return "its SQLite database is in memory (a new connection would open an empty one)"
        return None

    def with_own_pool(self, size: int) -> Store:
        """A Store on the same database with its own small connection pool (for a worker,
        so jobs cannot starve the app's request handlers of connections).

        Raises :class:`ConfigurationError` for an engine whose pool cannot be duplicated:
        a ``StaticPool`` (or another single-connection pool) or an in-memory SQLite database,
        where the worker must share the app's engine (``own_pool=False``, the default there).

        The new pool makes connections exactly as the app's does: it is the app's pool
        recreated (what ``engine.dispose()`` does) with ``size`` connections (+2 overflow),
        so it keeps the ``connect_args`` (``ssl``, ``statement_cache_size=0`` for
        PgBouncer, ``server_settings``), a custom ``creator``/``async_creator``, the
        ``do_connect`` and pool events (``connect``, ``checkout``) and the pool options;
        the engine keeps the app's dialect (and its options) and execution options
        (``schema_translate_map``...). Engine-level events (``before_cursor_execute``)
        stay on the app's engine. To choose the worker's engine yourself, pass the worker
        a ``Store(your_engine)`` with ``own_pool=False``.
        """
        why = self._pool_shareable_only()
        if why is not None:
            raise ConfigurationError(
                f"cannot give the worker a pool of its own: {why}; let it share the app's "
                "engine (own_pool=False), or give the app a database file and a QueuePool",
                url=safe_url(self.engine.url),
            )
        app = self.engine.sync_engine
        sync_engine = Engine(
            _pool_like(app.pool, size),
            app.dialect,
            app.url,
            logging_name=app.logging_name,
            echo=app.echo,
            execution_options=app.get_execution_options(),
            hide_parameters=app.hide_parameters,
        )
        engine = AsyncEngine(sync_engine)
        clone = Store(
            engine,
            models=self.models,
            max_payload_bytes=self.max_payload_bytes,
            listen=self.listen,
            json_default=self.json_default,
        )
        clone._owns_engine = True
        clone._pooled = self._pooled  # the same way to the same server
        return clone

    async def _behind_pooler(self) -> bool:
        """Whether the engine reaches PostgreSQL through a connection pooler (looked at once).

        For an engine of the app's, a WARNING names the driver options transaction pooling
        needs and the engine lacks: without them, statements fail on prepared statements
        another client's server connection holds, or does not.
        """
        if self._pooled is None:
            driver = self.engine.dialect.driver
            try:
                async with self.begin() as conn:  # one transaction: one server connection
                    pooled = await self.dialect.behind_pooler(conn)
                    raw = await conn.get_raw_connection()
                    unsafe = pooler_unsafe_settings(driver, raw.dbapi_connection) if pooled else []
            except exc.DBAPIError as error:
                if _sqlstate(error) not in _PREPARED_STATEMENT_STATES:
                    raise
                # Its first statements already met another client's prepared statements.
                pooled, unsafe = True, list(POOLER_CONNECT_ARGS.get(driver, {}))
            self._pooled = pooled
            if unsafe:
                log.warning(
                    "%s is reached through a connection pooler (PgBouncer or the like), and "
                    "this engine's driver lacks %s: under transaction pooling its statements "
                    "fail with 'prepared statement ... does not exist / already exists'. "
                    "Make the engine with %s, or use pgqrs_sqla.connect(url), which does.",
                    safe_url(self.engine.url),
                    ", ".join(unsafe),
                    POOLER_FIX.get(driver, "its prepared statements turned off"),
                )
        return self._pooled

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
        such as ``pgqrs_workers.pid``), so without Alembic this is also the upgrade.

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

        async with self.begin() as conn:
            serialise = self.dialect.serialise_installers()
            if serialise is not None:
                # Serialise concurrent installers; CREATE TABLE IF NOT EXISTS still races.
                await conn.execute(select(serialise))
            await conn.run_sync(create)

    def _add_new_columns(self, conn: Connection, tables: list[Table]) -> None:
        """Add the columns a later pgqrs version gave a table an earlier ``install()`` made
        (such as ``pgqrs_workers.pid``): what the shipped Alembic revisions do, for databases
        installed without Alembic. Such columns are nullable, so ``ADD COLUMN`` is plain DDL on
        both backends; a missing NOT NULL column is left for :meth:`check` to report."""
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

        async with self.read() as conn:
            return await conn.run_sync(missing)

    async def require_schema(self) -> None:
        problems = await self.check()
        if problems:
            raise SchemaMissing(f"{SchemaMissing.__doc__} ({'; '.join(problems)})")

    # ------------------------------------------------------------ queues

    async def create_queue(self, name: str, *, max_deliveries: int = 5) -> QueueInfo:
        """Create a queue (idempotent: an existing queue is returned unchanged)."""
        q.validate_name(name)
        if (
            not isinstance(max_deliveries, int)
            or isinstance(max_deliveries, bool)
            or not 1 <= max_deliveries <= 2**31 - 1
        ):
            raise ValidationError(
                f"max_deliveries must be a positive int of at most 32 bits, got {max_deliveries!r}",
                option="max_deliveries",
                value=max_deliveries,
            )
        return await self.run(lambda c: self._create_queue(c, name, max_deliveries))

    def _create_queue(self, conn: Connection, name: str, max_deliveries: int) -> QueueInfo:
        t = self.tables.queues
        existing = conn.execute(select(t).where(t.c.queue_name == name)).first()
        if existing is None:
            nested = conn.begin_nested()
            try:
                conn.execute(
                    t.insert().values(
                        queue_name=name, max_deliveries=max_deliveries, created_at=utcnow()
                    )
                )
                nested.commit()
            except exc.IntegrityError:
                nested.rollback()  # created concurrently: take theirs
            existing = conn.execute(select(t).where(t.c.queue_name == name)).one()
        m = existing._mapping
        return QueueInfo(m["id"], m["queue_name"], m["max_deliveries"], aware(m["created_at"]))  # type: ignore[arg-type]

    async def get_queue(self, name: str) -> QueueInfo:
        q.validate_name(name)
        t = self.tables.queues
        async with self.read() as conn:
            row = (await conn.execute(select(t).where(t.c.queue_name == name))).first()
        if row is None:
            raise QueueNotFound(
                f"no queue named {name!r}: create it with `await store.create_queue({name!r})`, "
                "or check the name (store.list_queues() lists them)",
                queue=name,
            )
        m = row._mapping
        return QueueInfo(m["id"], m["queue_name"], m["max_deliveries"], aware(m["created_at"]))  # type: ignore[arg-type]

    async def queue_id(self, name: str) -> int:
        if name not in self._queue_ids:
            self._queue_ids[name] = (await self.get_queue(name)).id
        return self._queue_ids[name]

    def queue(self, name: str) -> Queue:
        """A handle for enqueueing onto ``name`` (checked when used)."""
        return Queue(self, q.validate_name(name))

    async def list_queues(self) -> list[QueueInfo]:
        t = self.tables.queues
        async with self.read() as conn:
            rows = (await conn.execute(select(t).order_by(t.c.queue_name))).all()
        return [
            QueueInfo(r.id, r.queue_name, r.max_deliveries, aware(r.created_at))  # type: ignore[arg-type]
            for r in rows
        ]

    async def delete_queue(self, name: str, *, force: bool = False) -> None:
        """Delete a queue and its messages. Refused while messages are leased, unless forced.

        The check holds against concurrent claims: nothing a worker has claimed is deleted
        unless ``force`` says so.
        """
        info = await self.get_queue(name)
        m, t = self.tables.messages, self.tables.queues
        ours, leased = m.c.queue_id == info.id, q.leased_now(self.tables)

        def busy(conn: Connection) -> None:
            count = conn.execute(select(func.count()).where(ours, leased)).scalar_one()
            if count:
                raise QueueBusy(
                    f"queue {name!r} has {count} leased message(s); wait, or pass force=True",
                    queue=name,
                    leased=count,
                )

        def work(conn: Connection) -> None:
            # SQLite: this whole transaction holds the write lock, so no claim interleaves.
            # The queue row first: an enqueue's foreign key check needs a share lock on
            # it, so no message is added until this transaction ends.
            conn.execute(self.dialect.lock_for_update(select(t.c.id).where(t.c.id == info.id)))
            if not force:
                busy(conn)  # the common refusal, before deleting anything
                # A claim can commit after that count. So delete only what is not leased:
                # a row a claim is changing is waited for and re-checked against its new
                # version, and kept if leased. A lease taken meanwhile is then still there
                # to count, and the rollback puts everything back.
                conn.execute(q.delete_messages_stmt(self.tables, info.id, leased=False))
                busy(conn)
            conn.execute(q.delete_messages_stmt(self.tables, info.id))
            conn.execute(delete(t).where(t.c.id == info.id))

        await self.run(work)
        self._queue_ids.pop(name, None)

    async def purge_queue(self, name: str) -> int:
        """Delete every message of the queue that is not leased; return how many."""
        info = await self.get_queue(name)
        stmt = q.delete_messages_stmt(self.tables, info.id, leased=False)
        async with self.begin() as conn:
            return (await conn.execute(stmt)).rowcount

    async def queue_stats(self, name: str | None = None) -> list[QueueStats]:
        """Per-queue counts of ready, leased, delayed, archived and dead messages."""
        m, t = self.tables.messages, self.tables.queues
        now = utcnow()
        live = m.c.archived_at.is_(None)
        leased = live & m.c.consumer_worker_id.is_not(None) & (m.c.vt > now)
        ready = live & (m.c.vt <= now)
        delayed = live & m.c.consumer_worker_id.is_(None) & (m.c.vt > now)

        def count(cond: Any) -> Any:
            return func.coalesce(func.sum(case((cond, 1), else_=0)), 0)

        stmt = (
            select(
                t.c.queue_name,
                count(ready),
                count(leased),
                count(delayed),
                count(m.c.archive_reason == ArchiveReason.DONE.value),
                count(m.c.archive_reason == ArchiveReason.DEAD.value),
            )
            .select_from(t.outerjoin(m, m.c.queue_id == t.c.id))
            .group_by(t.c.queue_name)
            .order_by(t.c.queue_name)
        )
        oldest = (
            select(t.c.queue_name, func.min(m.c.enqueued_at), now)
            .select_from(t.join(m, m.c.queue_id == t.c.id))
            .where(ready)
            .group_by(t.c.queue_name)
        )
        if name is not None:
            stmt = stmt.where(t.c.queue_name == q.validate_name(name))
        async with self.read() as conn:
            rows = (await conn.execute(stmt)).all()
            ages = {
                r[0]: (aware(r[2]) - aware(r[1])).total_seconds()  # type: ignore[operator]
                for r in (await conn.execute(oldest)).all()
            }
        if name is not None and not rows:
            raise QueueNotFound(
                f"no queue named {name!r}: create it with `await store.create_queue({name!r})`, "
                "or check the name (store.list_queues() lists them)",
                queue=name,
            )
        return [
            QueueStats(r[0], int(r[1]), int(r[2]), int(r[3]), int(r[4]), int(r[5]), ages.get(r[0]))
            for r in rows
        ]

    async def dead_letters(self, name: str, *, limit: int = 100) -> list[q.Message]:
        """Messages of ``name`` that exhausted ``max_deliveries`` (oldest first)."""
        qid = (await self.get_queue(name)).id
        m = self.tables.messages
        stmt = (
            select(m)
            .where(m.c.queue_id == qid, m.c.archive_reason == ArchiveReason.DEAD.value)
            .order_by(m.c.id)
            .limit(limit)
        )
        async with self.read() as conn:
            return [q.Message.from_row(r) for r in (await conn.execute(stmt)).all()]

    async def replay_dead_letters(
        self, name: str, message_ids: Sequence[int] | None = None
    ) -> list[int]:
        """Make dead messages (all, or those listed) ready again; returns their ids.

        A workflow run whose message died is put back to ``QUEUED`` with it. A listed id that
        is not a dead letter of ``name`` raises :class:`DeadLetterNotFound` (its
        ``message_ids`` attribute names them) and nothing is replayed.
        """
        qid = (await self.get_queue(name)).id
        wanted = None if message_ids is None else sorted(set(message_ids))

        def work(conn: Connection) -> list[int]:
            ids = sorted(conn.execute(q.replay_dead_stmt(self.tables, qid, wanted)).scalars())
            missing = [i for i in wanted or () if i not in ids]
            if missing:
                # Raised inside the transaction: its rollback undoes the ids that were found.
                raise DeadLetterNotFound(
                    f"no dead letter {', '.join(map(str, missing))} in queue {name!r}: "
                    f"`pgqrs-sqla dead-letters list {name}` (or store.dead_letters) shows them",
                    queue=name,
                    message_ids=missing,
                )
            if ids:
                conn.execute(requeue_dead_runs_stmt(self.tables, ids))
            return ids

        ids = await self.run(work)
        if ids:
            self.wake(name)
        return ids

    async def list_workers(self) -> list[WorkerInfo]:
        """Every worker row, by name, with the queues each serves (see :class:`WorkerInfo`)."""
        w, t, msg = self.tables.workers, self.tables.queues, self.tables.messages
        stmt = (
            select(w, t.c.queue_name, utcnow().label("now"))
            .select_from(w.outerjoin(t, t.c.id == w.c.queue_id))
            .order_by(w.c.worker_name)
        )
        # Rows written before pgqrs 0003 record one queue: such a worker shows the others it
        # serves through the messages it holds (the rows of live, claimed messages: few,
        # whatever the backlog).
        held = (
            select(msg.c.consumer_worker_id, t.c.queue_name)
            .select_from(msg.join(t, t.c.id == msg.c.queue_id))
            .where(msg.c.archived_at.is_(None), msg.c.consumer_worker_id.is_not(None))
            .distinct()
            .order_by(t.c.queue_name)
        )
        async with self.read() as conn:
            rows = (await conn.execute(stmt)).all()
            holding: dict[int, list[str]] = {}
            for worker_id, queue_name in (await conn.execute(held)).all():
                holding.setdefault(worker_id, []).append(queue_name)
        result = []
        for r in rows:
            m = r._mapping
            heartbeat = aware(m["heartbeat_at"])
            assert heartbeat is not None
            first = [m["queue_name"]] if m["queue_name"] is not None else []
            served = m["queues"] if isinstance(m["queues"], list) else first
            result.append(
                WorkerInfo(
                    id=m["id"],
                    name=m["worker_name"],
                    hostname=m["hostname"],
                    port=m["port"],
                    queue=m["queue_name"],
                    status=m["status"],
                    started_at=aware(m["started_at"]),  # type: ignore[arg-type]
                    heartbeat_at=heartbeat,
                    heartbeat_age=(aware(m["now"]) - heartbeat).total_seconds(),  # type: ignore[operator]
                    stopped_at=aware(m["stopped_at"]),
                    pid=m["pid"],
                    heartbeat_interval=m["heartbeat_interval"],
                    queues=served + [n for n in holding.get(m["id"], []) if n not in served],
                )
            )
        return result

    async def prune_workers(
        self,
        *,
        older_than: timedelta | float = timedelta(days=7),
        dry_run: bool = False,
        limit: int = 1000,
    ) -> int:
        """Delete the rows of workers stopped longer than ``older_than`` (a timedelta or
        seconds) ago; return how many (``dry_run``: how many would go, deleting nothing).

        One statement deletes at most ``limit`` rows. A row a live or unfinished message
        still points at (a lease not yet given back) is never deleted, nor a worker that
        has not stopped. Archived messages the worker handled keep their history, with
        their ``consumer_worker_id`` set to NULL. Workers call this at registration with the
        default retention, so rows of restarted ``host-pid`` workers do not pile up.
        """
        seconds = older_than.total_seconds() if isinstance(older_than, timedelta) else older_than
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not seconds >= 0
            or seconds == float("inf")
        ):
            raise ValidationError(
                f"older_than must be a timedelta or a number of seconds >= 0, got {older_than!r}"
            )
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValidationError(f"limit must be a positive int, got {limit!r}")
        w, m = self.tables.workers, self.tables.messages
        prunable = (
            select(w.c.id)
            .where(
                w.c.status == WorkerStatus.STOPPED.value,
                w.c.stopped_at < utcnow_plus(-float(seconds)),
                ~select(m.c.id)
                .where(m.c.consumer_worker_id == w.c.id, m.c.archived_at.is_(None))
                .exists(),
            )
            .order_by(w.c.id)
            .limit(limit)
        )
        if dry_run:
            async with self.read() as conn:
                counted = select(func.count()).select_from(prunable.subquery())
                return int((await conn.execute(counted)).scalar_one())
        # DELETE has no LIMIT on PostgreSQL: bound it by the ids the subquery picks.
        stmt = delete(w).where(w.c.id.in_(prunable.scalar_subquery()))
        async with self.begin() as conn:
            deleted = int((await conn.execute(stmt)).rowcount)
        if deleted:
            log.info("pruned %d stopped worker row(s)", deleted)
        return deleted

    async def _prune_workers_quietly(self, worker: str) -> None:
        """A worker's housekeeping after it registers: drop rows of workers stopped over the
        default retention ago (a ``host-pid`` name adds one per restart), a bounded batch at
        a time. A failure is logged, never raised: it must not stop the worker starting."""
        try:
            await self.prune_workers(limit=100)
        except Exception as error:
            log.warning("worker %s: could not prune stopped worker rows: %s", worker, error)

    async def active_worker_count(self) -> int:
        w = self.tables.workers
        async with self.read() as conn:
            return int(
                (
                    await conn.execute(
                        select(func.count()).where(w.c.status != WorkerStatus.STOPPED.value)
                    )
                ).scalar_one()
            )


class Queue:
    """Enqueue onto one queue, through the store's own transaction or the caller's."""

    def __init__(self, store: Store, name: str) -> None:
        self.store = store
        self.name = name

    def __repr__(self) -> str:
        return f"<Queue {self.name!r}>"

    def _stmt(self, payloads: Sequence[Any], options: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        return q.enqueue_stmt(
            self.store.tables,
            self.name,
            payloads,
            max_bytes=self.store.max_payload_bytes,
            json_default=self.store.json_default,
            **options,
        )

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
        prepared = self._stmt(
            payloads, {"delay": delay, "available_at": available_at, "priority": priority}
        )
        ids = await self.store.run(
            lambda c: q.enqueue_sync(c, self.name, *prepared),
            target,
            single_statement=True,
        )
        self.store.wake(self.name, target)
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
        if not payloads:
            return []
        prepared = self._stmt(
            payloads, {"delay": delay, "available_at": available_at, "priority": priority}
        )
        ids = run_sync(target, lambda c: q.enqueue_sync(c, self.name, *prepared))
        self.store.wake(self.name, target)
        return ids
