"""The part of the Store every layer above needs: engine, tables, transactions, wake-ups."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any, Self, TypeVar

from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ._db import (
    HUB,
    AsyncTarget,
    SyncTarget,
    db_key,
    run_async,
    run_sync,
    safe_url,
    translated,
    wake_after_commit,
)
from .codec import DEFAULT_MAX_PAYLOAD_BYTES, JsonDefault
from .dialects import READONLY_OPTION, Dialect, dialect_for
from .errors import ConfigurationError, duration_seconds
from .models import PgqrsModels, Tables, pgqrs_models

T = TypeVar("T")

_default_models: PgqrsModels | None = None

#: how long finished runs (SUCCESS, CANCELLED), archived messages and stopped worker rows
#: are kept by default: a week
DEFAULT_RETENTION = timedelta(days=7)
#: how long runs ended ERROR are kept by default: 30 days, time to look into them
DEFAULT_ERROR_RETENTION = timedelta(days=30)
#: how often each worker prunes in the background by default (seconds, with jitter)
DEFAULT_PRUNE_INTERVAL = 600.0


def _default() -> PgqrsModels:
    """The library's own models (own MetaData, prefix ``pgqrs_``), made on first use."""
    global _default_models
    if _default_models is None:
        _default_models = pgqrs_models()
    return _default_models


class StoreCore:
    """The engine and the pgqrs tables.

    Make one with :func:`connect`, or wrap an ``AsyncEngine`` the app already has with
    ``Store(engine)`` (never disposed by us).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        models: PgqrsModels | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        listen: bool = True,
        json_default: JsonDefault | None = None,
        retention: float | timedelta = DEFAULT_RETENTION,
        error_retention: float | timedelta = DEFAULT_ERROR_RETENTION,
        prune_interval: float | timedelta | None = DEFAULT_PRUNE_INTERVAL,
    ) -> None:
        if not isinstance(engine, AsyncEngine):
            raise ConfigurationError(
                f"Store() needs an sqlalchemy AsyncEngine, got {type(engine).__name__}; "
                "use `await pgqrs_sqla.connect(url)` to make one from a URL"
            )
        self.engine = engine
        self.models = models or _default()
        self.tables: Tables = self.models.tables
        self.max_payload_bytes = max_payload_bytes
        self.listen = listen
        #: encodes values JSON cannot (``connect(json_default=...)``): params, payloads, results
        self.json_default = json_default
        #: how long a finished run (SUCCESS, CANCELLED), an archived message and a stopped
        #: worker row are kept, in seconds, unless its workflow or queue says otherwise
        self.retention = duration_seconds(retention, "retention", positive=True)
        #: how long a run ended ERROR is kept, in seconds, unless its workflow says otherwise
        self.error_retention = duration_seconds(error_retention, "error_retention", positive=True)
        #: how often each worker prunes in the background, in seconds (None: never)
        self.prune_interval = (
            None
            if prune_interval is None
            else duration_seconds(prune_interval, "prune_interval", positive=True)
        )
        try:
            #: the backend's differences (row locking, wake-ups, upsert, error codes)
            self.dialect: Dialect = dialect_for(engine)
        except KeyError:
            raise ConfigurationError(
                f"unsupported database {engine.dialect.name!r}: pgqrs_sqla runs on PostgreSQL "
                "(postgresql+asyncpg:// or postgresql+psycopg://) or SQLite (sqlite+aiosqlite://); "
                "give Store() an engine on one of them"
            ) from None
        #: kept for callers that ask; code inside the package asks ``dialect``
        self.postgres = self.dialect.name == "postgresql"
        self.db_key = db_key(engine.url)
        self._owns_engine = False
        self._tmpdir: str | None = None
        self._queue_ids: dict[str, int] = {}
        #: reached through a connection pooler (PgBouncer...); None until looked at
        self._pooled: bool | None = None
        self.dialect.setup_engine(engine.sync_engine)

    @classmethod
    def from_engine(cls, engine: AsyncEngine, **options: Any) -> Self:
        """Same as ``Store(engine, ...)``."""
        return cls(engine, **options)

    def __repr__(self) -> str:
        return f"<Store {safe_url(self.engine.url)}>"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Dispose the engine if this store created it (``connect``); otherwise nothing."""
        if self._owns_engine:
            await self.engine.dispose()
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    # ------------------------------------------------------------ transactions

    @contextlib.asynccontextmanager
    async def _begin(self) -> AsyncIterator[AsyncConnection]:
        """A connection in a transaction of the store's own (committed on success)."""
        with translated():
            async with self._writer(), self.engine.begin() as conn:
                yield conn

    def _writer(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Around a write transaction of ours: on SQLite, wait for this process's other writers.

        They are waited for in the event loop rather than in SQLite's sleeping busy handler
        (:func:`~pgqrs_sqla.dialects.sqlite.sqlite_writer`); nothing on PostgreSQL.
        """
        return self.dialect.writer(self.db_key)

    def _transactions_only(self) -> bool:
        """Whether writes must run in transactions: asyncpg behind a transaction pooler.

        SQLAlchemy prepares each statement in a round trip of its own, and outside a transaction the
        pooler may run the next one on another server connection, where that statement does not
        exist. So no autocommit there.
        """
        return bool(self._pooled) and self.engine.dialect.driver == "asyncpg"

    @contextlib.asynccontextmanager
    async def _autocommit(self) -> AsyncIterator[AsyncConnection]:
        """A connection for single-statement writes.

        Autocommit on PostgreSQL (no BEGIN and COMMIT round trips); a short ``BEGIN IMMEDIATE``
        transaction on SQLite.
        """
        with translated():
            if self.dialect.autocommit_writes and not self._transactions_only():
                async with self.engine.connect() as conn:
                    await conn.execution_options(isolation_level="AUTOCOMMIT")
                    yield conn
            else:
                async with self._writer(), self.engine.begin() as conn:
                    yield conn

    @contextlib.asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads: autocommit on PostgreSQL; on SQLite a deferred transaction.

        SQLite's deferred transaction reads a snapshot, without the write lock other transactions
        take.
        """
        with translated():
            async with self.engine.connect() as conn:
                if self.dialect.autocommit_writes and not self._transactions_only():
                    await conn.execution_options(isolation_level="AUTOCOMMIT")
                    yield conn
                else:
                    await conn.execution_options(**{READONLY_OPTION: True})
                    async with conn.begin():
                        yield conn

    async def _in_transaction(
        self,
        fn: Callable[[Connection], T],
        target: AsyncTarget | None = None,
        *,
        single_statement: bool = False,
    ) -> T:
        """Run sync statement logic in ``target``'s transaction, or a new one of our own.

        ``single_statement``: ``fn`` issues one statement (on PostgreSQL), so it needs no
        transaction of its own: run it in autocommit and save the BEGIN/COMMIT round trips.
        """
        if target is not None:
            return await run_async(target, fn)
        if single_statement and self.dialect.autocommit_writes:
            async with self._autocommit() as conn:
                return await conn.run_sync(fn)
        async with self._begin() as conn:
            return await conn.run_sync(fn)

    def _in_transaction_sync(self, target: SyncTarget, fn: Callable[[Connection], T]) -> T:
        """Run sync statement logic ``fn`` in ``target``'s transaction.

        Target first, as :func:`~pgqrs_sqla._db.run_sync`.
        """
        return run_sync(target, fn)

    def _wake(self, channel: str, target: Any = None) -> None:
        """Wake in-process workers on ``channel`` now, or after ``target`` commits."""
        if target is None:
            HUB.notify(self.db_key, channel)
        else:
            wake_after_commit(target, self.db_key, channel)
