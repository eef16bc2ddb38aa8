r"""Plumbing shared by every layer: driver-error translation, transaction targets, wake-ups.

* :func:`translated` is the one boundary where driver errors become ``PgqrsError``\ s.
* :func:`run_async` / :func:`run_sync` run one piece of *sync* logic (written once over a
  ``Connection``) in a caller's ``AsyncSession`` / ``AsyncConnection`` / ``Session`` /
  ``Connection``, so sync and async entry points share the same statements.
* :class:`WakeHub` wakes in-process workers after a commit (SQLite's only fast path; a
  shortcut on PostgreSQL, where ``NOTIFY`` covers other processes).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from sqlalchemy import event, exc
from sqlalchemy.engine import URL, Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Session

from .dialects import DIALECTS
from .dialects.postgresql import (
    SERIALIZATION_FAILURE as SERIALIZATION_FAILURE,
    sqlstate as pg_sqlstate,
)
from .dialects.sqlite import sqlite_code, sqlite_writer as sqlite_writer
from .errors import DatabaseError, DatabaseUnavailable, PgqrsError

T = TypeVar("T")

AsyncTarget = AsyncSession | AsyncConnection
SyncTarget = Session | Connection


def safe_url(url: URL | str) -> str:
    """A URL fit for logs and error messages: the password is never shown."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    return url


#: The SQLSTATE of a driver error (from its structured diagnostics), or None.
sqlstate = _sqlstate = pg_sqlstate


def _opening_without_sqlstate(error: BaseException) -> bool:
    """A driver's refusal to open a connection that carries no SQLSTATE.

    psycopg raises ``OperationalError`` with no SQLSTATE for every failure to connect
    (refused, unknown host, bad password, unknown database: libpq reports them as text).
    No statement was running, which tells it apart from an error a statement caused.
    """
    return (
        isinstance(error, exc.OperationalError)
        and error.statement is None
        and _sqlstate(error) is None
    )


def _first_line(error: BaseException) -> str:
    text = str(getattr(error, "orig", None) or error)
    return text.splitlines()[0] if text.strip() else type(error).__name__


def _unavailable(error: BaseException, text: str) -> bool:
    """The server cannot be reached, or refused the connection."""
    return bool(
        isinstance(error, OSError | ConnectionError | asyncio.TimeoutError)
        or any(d.unavailable(error) for d in DIALECTS.values())
        or (isinstance(error, exc.DBAPIError) and error.connection_invalidated)
        or _opening_without_sqlstate(error)
        or isinstance(error, exc.InterfaceError)
    )


def translate(error: BaseException, where: str = "") -> BaseException:
    """Map a driver / SQLAlchemy error to a :class:`~pgqrs_sqla.errors.DatabaseError`, or return it.

    Mapped by each dialect's table (SQLSTATE, SQLite result code); returned unchanged when it is
    a ``PgqrsError`` already, or no database error at all.
    """
    if isinstance(error, PgqrsError):
        return error
    if not isinstance(error, exc.SQLAlchemyError | OSError | ConnectionError | TimeoutError):
        return error
    suffix = f" ({where})" if where else ""
    text = str(getattr(error, "orig", error))
    said = _first_line(error)
    for dialect in DIALECTS.values():
        mapped = dialect.translate_code(error, said, suffix)
        if mapped is not None:
            return mapped
    state, code = _sqlstate(error), sqlite_code(error)
    if _unavailable(error, text):
        return DatabaseUnavailable(
            f"cannot reach the database{suffix}: {said if text else type(error).__name__}"
            " — check the URL, that the server is running, and the credentials",
            sqlstate=state,
            sqlite_code=code,
        )
    if isinstance(error, exc.DBAPIError):
        return DatabaseError(
            f"the database refused the statement{suffix}: {said}", sqlstate=state, sqlite_code=code
        )
    return error


@contextlib.contextmanager
def translated(where: str = "") -> Iterator[None]:
    """Translate driver errors raised inside the block (``raise ... from`` the original)."""
    try:
        yield
    except (TimeoutError, exc.SQLAlchemyError, OSError, ConnectionError) as error:
        mapped = translate(error, where)
        if mapped is error:
            raise
        raise mapped from error


async def run_async(target: AsyncTarget, fn: Callable[[Connection], T]) -> T:
    """Run sync statement logic ``fn`` inside the caller's async transaction."""
    with translated():
        if isinstance(target, AsyncSession):
            return await target.run_sync(lambda session: fn(session.connection()))
        if isinstance(target, AsyncConnection):
            return await target.run_sync(fn)
    raise TypeError(
        f"expected an AsyncSession or AsyncConnection, got {type(target).__name__}"
        " (use the *_sync method for a sync Session or Connection)"
    )


def run_sync(target: SyncTarget, fn: Callable[[Connection], T]) -> T:
    """Run sync statement logic ``fn`` inside the caller's sync transaction."""
    with translated():
        if isinstance(target, Session):
            return fn(target.connection())
        if isinstance(target, Connection):
            return fn(target)
    raise TypeError(
        f"expected a sync Session or Connection, got {type(target).__name__}"
        " (use the async method with an AsyncSession or AsyncConnection)"
    )


class WakeHub:
    """In-process wake-ups keyed by (database, channel).

    A worker subscribes an ``asyncio.Event``; a producer calls :meth:`notify` after its
    commit. Thread-safe: producers may run in other threads (sync apps).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: dict[tuple[str, str], weakref.WeakSet[Waiter]] = {}

    def subscribe(self, db: str, channel: str, waiter: Waiter | None = None) -> Waiter:
        """Subscribe ``waiter`` (a new one by default) to ``channel``; returns it."""
        waiter = waiter or Waiter()
        with self._lock:
            self._subs.setdefault((db, channel), weakref.WeakSet()).add(waiter)
        return waiter

    def notify(self, db: str, channel: str, payload: str = "") -> None:
        with self._lock:
            waiters = list(self._subs.get((db, channel), ()))
        for waiter in waiters:
            waiter.wake(payload)


class Waiter:
    """An asyncio.Event bound to the loop that made it, settable from any thread.

    ``on_payload``, if given, is called in that loop with each notification's payload.
    """

    def __init__(self, on_payload: Callable[[str], None] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        self.event = asyncio.Event()
        self.on_payload = on_payload

    def _deliver(self, payload: str) -> None:
        self.event.set()
        if self.on_payload is not None:
            self.on_payload(payload)

    def wake(self, payload: str = "") -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            self._deliver(payload)
        elif not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._deliver, payload)


HUB = WakeHub()


_PENDING_KEY = "pgqrs_sqla.pending_wakeups"


#: Wake-ups waiting for a Core connection's transaction to end, by connection.
_CONN_PENDING: weakref.WeakKeyDictionary[Connection, set[tuple[str, str]]] = (
    weakref.WeakKeyDictionary()
)


def wake_after_commit(target: Any, db: str, channel: str) -> None:
    """Wake in-process workers on ``channel`` once ``target``'s transaction commits.

    Pending wake-ups live under a private ``session.info`` key (for a session) or beside the
    connection (for a Core connection), and are dropped on rollback.
    """
    session: Session | None = None
    if isinstance(target, AsyncSession):
        session = target.sync_session
    elif isinstance(target, Session):
        session = target
    if session is None:
        conn = target.sync_connection if isinstance(target, AsyncConnection) else target
        if isinstance(conn, Connection):
            if conn.in_transaction():
                _pending_on(conn).add((db, channel))
            else:
                HUB.notify(db, channel)
        return
    pending: set[tuple[str, str]] | None = session.info.get(_PENDING_KEY)
    if pending is None:
        pending = set()
        session.info[_PENDING_KEY] = pending
        event.listen(session, "after_commit", _flush_pending)
        event.listen(session, "after_soft_rollback", _drop_pending)
    pending.add((db, channel))


def _pending_on(conn: Connection) -> set[tuple[str, str]]:
    """The connection's pending wake-ups, with one pair of listeners attached at the first call.

    The listeners live as long as the connection, however many transactions it runs.

    Core has no after-commit event: ``commit`` fires just before the COMMIT is sent. A
    worker woken that early still finds the message. On SQLite its claim, a write, waits
    for the committing transaction's lock; on PostgreSQL ``NOTIFY`` wakes it again after
    the real commit, and polling backs both. A COMMIT that fails wakes it for nothing, which
    is harmless. ``rollback`` drops what the transaction had queued.
    """
    pending = _CONN_PENDING.get(conn)
    if pending is None:
        pending = _CONN_PENDING[conn] = set()
        event.listen(conn, "commit", _flush_conn)
        event.listen(conn, "rollback", _drop_conn)
    return pending


def _flush_conn(conn: Connection) -> None:
    pending = _CONN_PENDING.get(conn)
    if pending:
        items = list(pending)
        pending.clear()
        for db, channel in items:
            HUB.notify(db, channel)


def _drop_conn(conn: Connection) -> None:
    pending = _CONN_PENDING.get(conn)
    if pending:
        pending.clear()


def _flush_pending(session: Session) -> None:
    pending: set[tuple[str, str]] = session.info.get(_PENDING_KEY, set())
    items = list(pending)
    pending.clear()
    for db, channel in items:
        HUB.notify(db, channel)


def _drop_pending(session: Session, previous_transaction: Any) -> None:
    pending: set[tuple[str, str]] | None = session.info.get(_PENDING_KEY)
    if pending is not None and not session.in_transaction():
        pending.clear()


def target_db_key(target: Any) -> str:
    """The :func:`db_key` of the database behind a session or connection."""
    if isinstance(target, AsyncSession):
        target = target.sync_session
    if isinstance(target, AsyncConnection):
        target = target.sync_connection
    bind = target.get_bind() if isinstance(target, Session) else target
    engine = bind.engine if isinstance(bind, Connection) else bind
    return db_key(engine.url)


def db_key(url: URL) -> str:
    """Identity of a database for in-process wake-ups."""
    return url.render_as_string(hide_password=True).split("?")[0]
