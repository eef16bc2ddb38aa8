"""PostgreSQL: ``SKIP LOCKED`` row locks, ``NOTIFY``/``LISTEN`` wake-ups, autocommit writes.

Also data-modifying CTEs, single-statement writes on autocommit connections, and the SQLSTATE
table of error translation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import ColumnElement, Table, exc, func
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .. import _listen
from ..errors import (
    AuthenticationFailed,
    DatabaseError,
    LockConflict,
    LockTimeout,
    PoolerError,
    QueryCancelled,
    ReadOnlyDatabase,
    SchemaMissing,
    StatementTimeout,
)
from .base import Dialect, S, Upsert

UNDEFINED_TABLE = "42P01"
_CONNECTION_CLASSES = ("08",)  # SQLSTATE class 08: connection exception
_UNAVAILABLE_STATES = {"57P01", "57P02", "57P03", "3D000", "53300"}
# Refusals that mean "unavailable" only when a new connection is being opened (no statement
# ran): 55000 is "database ... is not currently accepting connections" (ALLOW_CONNECTIONS
# false, e.g. during maintenance); elsewhere it is an ordinary prerequisite error.
_REFUSED_AT_CONNECT = {"55000"}
# deadlock_detected, serialization_failure: the transaction was rolled back; a retry may pass.
_LOCK_CONFLICT_STATES = {"40P01", "40001"}
SERIALIZATION_FAILURE = "40001"
_AUTH_STATES = {"28000", "28P01"}
_QUERY_CANCELED = "57014"
_LOCK_NOT_AVAILABLE = "55P03"
READ_ONLY = "25006"  # read_only_sql_transaction
# 26000 invalid_sql_statement_name: a prepared statement the pooler's server connection lacks;
# 08P01 protocol_violation: a pooler's refusal (class 08, but the server is there).
_POOLER_STATES = {"26000", "08P01"}
#: an arbitrary advisory lock key: concurrent installers queue on it
_INSTALL_LOCK = 0x70677172
#: another: the workers' background pruning, one transaction at a time
_PRUNE_LOCK = 0x70677173


def sqlstate(error: BaseException) -> str | None:
    """The SQLSTATE of a driver error (from its structured diagnostics), or None."""
    orig = getattr(error, "orig", None)
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return state if isinstance(state, str) else None


class PostgreSQLDialect(Dialect):
    """PostgreSQL: row locks, ``SKIP LOCKED``, ``NOTIFY``, schemas, autocommit writes."""

    name = "postgresql"
    supports_listen = True
    skip_locked = True
    writable_ctes = True
    autocommit_writes = True
    has_schemas = True
    drops_constraints = True
    may_be_pooled = True
    snapshot_conflicts = True

    def insert(self, table: Table) -> Upsert:
        """PostgreSQL's INSERT (``ON CONFLICT`` upserts)."""
        return pg_insert(table)

    def lock_for_update(self, stmt: S, *, no_key: bool = False) -> S:
        """``stmt`` with ``FOR UPDATE`` (``FOR NO KEY UPDATE`` with ``no_key``)."""
        return stmt.with_for_update(key_share=no_key)

    def lock_claim(self, stmt: S) -> S:
        """``stmt`` with ``FOR UPDATE SKIP LOCKED``."""
        return stmt.with_for_update(skip_locked=True)

    def lock_fence(self, stmt: S, *, held: bool = False) -> S:
        """``stmt`` with ``FOR SHARE``, or ``FOR KEY SHARE`` with ``held``."""
        return stmt.with_for_update(read=True, key_share=held)

    def notify(self, channel: str | ColumnElement[str], payload: Any) -> ColumnElement[Any]:
        """``pg_notify(channel, payload)``: sent when the transaction commits."""
        return func.pg_notify(channel, payload)

    def serialise_installers(self) -> ColumnElement[Any]:
        """A transaction-scoped advisory lock, the same for every ``install()``."""
        return func.pg_advisory_xact_lock(_INSTALL_LOCK)

    def try_prune_lock(self) -> ColumnElement[bool]:
        """``pg_try_advisory_xact_lock``: false, at once, while another worker prunes."""
        return func.pg_try_advisory_xact_lock(_PRUNE_LOCK)

    def lock_skip(self, stmt: S, *of: Any) -> S:
        """``stmt`` with ``FOR UPDATE OF <of> SKIP LOCKED``."""
        return stmt.with_for_update(skip_locked=True, of=list(of) or None)

    async def behind_pooler(self, conn: AsyncConnection) -> bool:
        """Whether ``conn`` reaches the server through a connection pooler (PgBouncer...)."""
        return await _listen.behind_pooler(conn)

    async def open_listener(
        self,
        engine: AsyncEngine,
        channels: list[str],
        on_notification: Callable[[str, str], None],
        **options: Any,
    ) -> _listen.Listener:
        """A LISTEN connection on ``channels``, calling ``on_notification(channel, payload)``."""
        return await _listen.open_listener(engine, channels, on_notification, **options)

    def translate_code(self, error: BaseException, said: str, suffix: str) -> DatabaseError | None:
        """The error the SQLSTATE of ``error`` names (missing table, timeout...), or None."""
        state = sqlstate(error)
        if state is None:
            return None
        text = str(getattr(error, "orig", error))
        if state == UNDEFINED_TABLE:
            return SchemaMissing(
                f"{SchemaMissing.__doc__} Database said: {said}{suffix}", sqlstate=state
            )
        if state in _LOCK_CONFLICT_STATES:
            return LockConflict(
                f"the database aborted the statement to resolve a lock conflict{suffix}: "
                f"{said} — nothing was written; it is safe to retry",
                sqlstate=state,
            )
        if state in _AUTH_STATES:
            return AuthenticationFailed(
                f"the database refused the credentials{suffix}: {said} — check the user and "
                "password in the URL and the server's pg_hba.conf",
                sqlstate=state,
            )
        if state == _QUERY_CANCELED:
            # One SQLSTATE for both; only the server's message tells a timeout from a cancel.
            if "statement timeout" in text:
                return StatementTimeout(
                    f"the statement ran past statement_timeout and was cancelled{suffix}: {said}"
                    " — it is safe to retry; raise statement_timeout if it is too short",
                    sqlstate=state,
                )
            return QueryCancelled(
                f"the server cancelled the statement{suffix}: {said} — nothing was kept; it is "
                "safe to retry",
                sqlstate=state,
            )
        if state == _LOCK_NOT_AVAILABLE:
            return LockTimeout(
                f"a lock was not granted in time{suffix}: {said} — another session holds it; "
                "it is safe to retry (or raise lock_timeout)",
                sqlstate=state,
            )
        if state == READ_ONLY:
            return ReadOnlyDatabase(
                f"the database is read-only{suffix}: {said} — after a failover, point the URL "
                "at the primary (target_session_attrs=read-write); writes resume once it "
                "accepts them",
                sqlstate=state,
            )
        if state in _POOLER_STATES:
            return PoolerError(
                f"the connection lost its session state{suffix}: {said} — behind PgBouncer in "
                "transaction mode, use asyncpg with connect_args={'statement_cache_size': 0}",
                sqlstate=state,
            )
        return None

    def unavailable(self, error: BaseException) -> bool:
        """Whether the SQLSTATE says the server cannot be reached (or refused the connection)."""
        state = sqlstate(error)
        if state is None:
            return False
        return (
            state[:2] in _CONNECTION_CLASSES
            or state in _UNAVAILABLE_STATES
            or (
                state in _REFUSED_AT_CONNECT
                and isinstance(error, exc.DBAPIError)
                and error.statement is None
            )
        )
