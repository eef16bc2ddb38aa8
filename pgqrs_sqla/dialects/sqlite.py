"""SQLite: one writer at a time (queued in-process before ``BEGIN IMMEDIATE``), WAL, no row locks.

No ``LISTEN`` either (in-process wake-ups only); and SQLite's result-code table of error
translation.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import Any

from sqlalchemy import Table, event
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL, Engine

from ..errors import DatabaseBusy, DatabaseError, ReadOnlyDatabase, SchemaMissing
from .base import Dialect, Upsert

SQLITE_BUSY_TIMEOUT_MS = 30_000
#: execution option marking a connection that only reads (no write lock on SQLite)
READONLY_OPTION = "pgqrs_readonly"
_SET_UP: weakref.WeakSet[Engine] = weakref.WeakSet()
# SQLite primary result codes (the low byte of the extended code).
_SQLITE_ERROR = 1
_SQLITE_BUSY_CODES = {5, 6}  # SQLITE_BUSY, SQLITE_LOCKED
_SQLITE_READONLY = 8


def sqlite_code(error: BaseException) -> int | None:
    """SQLite's extended result code, read from the sqlite3 exception.

    Python 3.11+; aiosqlite passes sqlite3's exceptions through.
    """
    code = getattr(getattr(error, "orig", error), "sqlite_errorcode", None)
    return code if isinstance(code, int) and not isinstance(code, bool) else None


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
        # Readers (Store._read()) take no write lock: a deferred BEGIN reads a snapshot.
        readonly = conn.get_execution_options().get(READONLY_OPTION)
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")


class SQLiteDialect(Dialect):
    """SQLite: one writer at a time, no row locks, no ``LISTEN``, no schemas."""

    name = "sqlite"
    supports_listen = False
    skip_locked = False  # the single writer never meets a locked row
    writable_ctes = False
    autocommit_writes = False
    has_schemas = False
    may_be_pooled = False
    snapshot_conflicts = False  # one writer at a time: BEGIN IMMEDIATE serialises
    reuses_deleted_ids = True  # INTEGER PRIMARY KEY without AUTOINCREMENT

    def insert(self, table: Table) -> Upsert:
        """SQLite's INSERT (``ON CONFLICT`` upserts)."""
        return sqlite_insert(table)

    def in_memory(self, url: URL) -> bool:
        """True for ``:memory:``, an empty database name or ``mode=memory``."""
        return url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"

    def setup_engine(self, sync_engine: Engine) -> None:
        """The engine's per-connection setup (see :func:`setup_sqlite_engine`)."""
        setup_sqlite_engine(sync_engine)

    def writer(self, db_key: str) -> contextlib.AbstractAsyncContextManager[None]:
        """Queue this process's writers of database ``db_key`` (:func:`sqlite_writer`)."""
        return sqlite_writer(db_key, SQLITE_BUSY_TIMEOUT_MS / 1000)

    def translate_code(self, error: BaseException, said: str, suffix: str) -> DatabaseError | None:
        """The error SQLite's result code names (missing table, read-only, busy), or None.

        "no such table" comes with the generic SQLITE_ERROR code: its message is read for it.
        """
        code = sqlite_code(error)
        primary = None if code is None else code & 0xFF
        text = str(getattr(error, "orig", error))
        # SQLite says "no such table" with its generic SQLITE_ERROR code: the text is all
        # there is.
        if primary in (None, _SQLITE_ERROR) and "no such table" in text:
            return SchemaMissing(
                f"{SchemaMissing.__doc__} Database said: {said}{suffix}", sqlite_code=code
            )
        if primary == _SQLITE_READONLY:
            return ReadOnlyDatabase(
                f"the database is read-only{suffix}: {said} — after a failover, point the URL "
                "at the primary (target_session_attrs=read-write); writes resume once it "
                "accepts them",
                sqlite_code=code,
            )
        if primary in _SQLITE_BUSY_CODES:
            return DatabaseBusy(
                f"the SQLite database is locked by another connection{suffix}: {said} — "
                "another writer held it past the busy timeout; it is safe to retry",
                sqlite_code=code,
            )
        return None

    def unavailable(self, error: BaseException) -> bool:
        """Whether SQLite could not open the database file."""
        from sqlalchemy import exc

        text = str(getattr(error, "orig", error))
        return isinstance(error, exc.OperationalError) and "unable to open database" in text


_WRITERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = (
    weakref.WeakKeyDictionary()
)
_WRITING: ContextVar[frozenset[str]] = ContextVar("pgqrs_sqla_writing", default=frozenset())


@contextlib.asynccontextmanager
async def sqlite_writer(db: str, wait: float) -> AsyncIterator[None]:
    """Queue this process's write transactions on SQLite database ``db`` in the event loop.

    SQLite lets one writer in at a time; a second connection's ``BEGIN IMMEDIATE`` meets a
    busy database and SQLite's busy handler *sleeps* (1, 2, 5, 10 … ms) before trying again,
    long after the first writer's sub-millisecond commit. Several workers' tasks of one
    process writing at once spent more time asleep than writing (4 worker tasks drained
    fewer runs per second than 1). Waiting here instead hands the database over the moment
    the previous writer is done. Re-entrant per task (and the tasks it starts): a write
    nested in another simply goes on to SQLite's own lock, as it did before. Other processes,
    and the app's own sessions, still meet SQLite's lock and its busy timeout.
    """
    if db in _WRITING.get():
        yield
        return
    locks = _WRITERS.setdefault(asyncio.get_running_loop(), {})
    lock = locks.setdefault(db, asyncio.Lock())
    try:
        # No longer than SQLite itself would wait: past that (a writer that waits on this
        # very task, say) go on to SQLite's own lock and its busy timeout, as without this.
        async with asyncio.timeout(wait):
            await lock.acquire()
    except TimeoutError:
        queued = False
    else:
        queued = True
    if not queued:
        yield
        return
    token = _WRITING.set(_WRITING.get() | {db})
    try:
        yield
    finally:
        _WRITING.reset(token)
        lock.release()
