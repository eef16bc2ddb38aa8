"""The interface every backend implements: :class:`Dialect`.

Code above this layer asks the store's dialect (``store.dialect``) instead of testing the
backend's name: how rows are locked (a claim's ``SKIP LOCKED``, a lease fence's shared
lock), whether a write can run without a transaction of its own, how other processes are
woken (``NOTIFY``), how the engine is set up, and what the driver's error codes mean.
Types and SQL functions that only *render* differently live in
:mod:`pgqrs_sqla.dialects.types` (SQLAlchemy compiles them per backend).
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from sqlalchemy import ColumnElement, Select, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..errors import DatabaseError

S = TypeVar("S", bound=Select[Any])

#: An INSERT that knows ``ON CONFLICT (...) DO NOTHING / DO UPDATE ... WHERE``.
Upsert = postgresql.Insert | sqlite.Insert


class Dialect(abc.ABC):
    """What differs between backends, and only that.

    One instance per backend (:func:`~pgqrs_sqla.dialects.dialect_for`); instances are hashable,
    so statement builders cached per ``(tables, dialect)`` stay cached.
    """

    #: SQLAlchemy's dialect name (``engine.dialect.name``)
    name: ClassVar[str]
    #: other processes can be woken (``NOTIFY`` sent with a write, heard by ``LISTEN``)
    supports_listen: ClassVar[bool]
    #: a claim skips rows other claims lock (``SKIP LOCKED``): when the top priority's ready
    #: rows are all locked, a second try across priorities can find work
    skip_locked: ClassVar[bool]
    #: data-modifying CTEs: a claim can start its runs in the same statement
    writable_ctes: ClassVar[bool]
    #: a single-statement write may run on an autocommit connection (no BEGIN/COMMIT)
    autocommit_writes: ClassVar[bool]
    #: the database has schemas (``CREATE SCHEMA``); SQLite has attached databases only
    has_schemas: ClassVar[bool]
    #: ``ALTER TABLE ... DROP CONSTRAINT`` in place (SQLite copies the table to drop a key)
    drops_constraints: ClassVar[bool] = False
    #: a server that may sit behind a connection pooler (PgBouncer...), looked for at connect
    may_be_pooled: ClassVar[bool]
    #: a transaction may keep one snapshot (REPEATABLE READ, SERIALIZABLE) and refuse a write
    #: with a serialization failure: triggers in a caller's transaction guard with savepoints
    snapshot_conflicts: ClassVar[bool]
    #: a deleted row's id may be handed out again (SQLite's largest rowid, without
    #: AUTOINCREMENT): retention then keeps the newest run and message of each table
    reuses_deleted_ids: ClassVar[bool] = False

    def __repr__(self) -> str:
        return f"<Dialect {self.name}>"

    # ------------------------------------------------------------ statements

    @abc.abstractmethod
    def insert(self, table: Table) -> Upsert:
        """The backend's INSERT construct, which knows ``ON CONFLICT`` (upserts)."""

    def lock_for_update(self, stmt: S, *, no_key: bool = False) -> S:
        """``stmt`` taking an exclusive row lock (``FOR UPDATE``) where the backend has row locks.

        ``no_key``: one that still admits key-share locks (``FOR NO KEY UPDATE``), as an
        UPDATE of non-key columns takes. A backend whose write transaction serialises
        everything returns it as is.
        """
        return stmt

    def lock_claim(self, stmt: S) -> S:
        """A claim's candidate rows: locked, skipping rows other claims hold, where the backend can.

        That is ``FOR UPDATE SKIP LOCKED``.
        """
        return stmt

    def lock_skip(self, stmt: S, *of: Any) -> S:
        """``stmt`` locking the rows of the tables ``of`` it reads, skipping rows others hold.

        ``FOR UPDATE OF ... SKIP LOCKED`` where the backend has row locks.
        """
        return stmt

    def lock_fence(self, stmt: S, *, held: bool = False) -> S:
        """A lease fence's read of the message row, locked so that a concurrent takeover is seen.

        ``FOR SHARE`` for one-statement writes; with ``held`` (a transactional step holds it to
        commit) ``FOR KEY SHARE``, which the worker's own heartbeat (an UPDATE of ``vt``) still gets
        through.
        """
        return stmt

    def notify(self, channel: str | ColumnElement[str], payload: Any) -> ColumnElement[Any] | None:
        """An expression that notifies ``channel`` when the transaction commits, or None.

        For a SELECT list or a CTE; None where other processes cannot be notified.
        """
        return None

    def serialise_installers(self) -> ColumnElement[Any] | None:
        """An expression that makes concurrent ``install()`` calls queue up, or None."""
        return None

    def try_prune_lock(self) -> ColumnElement[bool] | None:
        """An expression true for the one transaction that may prune now, without waiting.

        None where the backend's write lock serialises writers anyway (SQLite).
        """
        return None

    # ------------------------------------------------------------ engine and connections

    def in_memory(self, url: URL) -> bool:
        """Whether ``url`` names a database that lives in its connection.

        A new connection would open an empty one.
        """
        return False

    def setup_engine(self, sync_engine: Engine) -> None:  # noqa: B027 - optional hook
        """Per-connection setup the backend needs (idempotent per engine)."""

    def writer(self, db_key: str) -> contextlib.AbstractAsyncContextManager[None]:
        """Around one of our write transactions: queue this process's writers, if need be.

        Where the backend has a single writer, queue this process's writers in the event loop;
        elsewhere nothing.
        """
        return contextlib.nullcontext()

    async def behind_pooler(self, conn: AsyncConnection) -> bool:
        """Whether ``conn`` reaches the server through a connection pooler."""
        return False

    async def open_listener(
        self,
        engine: AsyncEngine,
        channels: list[str],
        on_notification: Callable[[str, str], None],
        **options: Any,
    ) -> Any:
        """A LISTEN connection (``supports_listen`` only)."""
        raise NotImplementedError(f"{self.name} has no LISTEN")

    # ------------------------------------------------------------ errors

    @abc.abstractmethod
    def translate_code(self, error: BaseException, said: str, suffix: str) -> DatabaseError | None:
        """The :class:`~pgqrs_sqla.errors.DatabaseError` this backend's error code names, or None.

        Where the backend has no code for it, its message is read instead.
        """

    def unavailable(self, error: BaseException) -> bool:
        """Whether ``error`` says the server cannot be reached (this backend's codes)."""
        return False
