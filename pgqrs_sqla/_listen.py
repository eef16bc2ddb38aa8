r"""Wake-ups from PostgreSQL (``LISTEN`` on a dedicated connection) and connection-pooler detection.

A connector per driver:

* :func:`behind_pooler` tells a connection that reaches PostgreSQL through a pooler
  (PgBouncer, pgcat, RDS Proxy...): the backend pid the driver was handed when it connected
  is the pooler's, not the pid of the backend that runs its statements.
* :data:`POOLER_CONNECT_ARGS` are the driver options transaction pooling needs (no named
  prepared statement may outlive the statement's transaction), and
  :func:`pooler_unsafe_settings` names those an existing engine lacks.
* :func:`open_listener` opens a :class:`Listener` with asyncpg or psycopg 3. Behind a
  pooler it first checks that a notification reaches the listening connection at all
  (transaction pooling hands the ``LISTEN``\ ing server connection to other clients and
  drops what arrives for it), and raises :class:`ListenUnavailable` if not.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

#: How long a listening connection behind a pooler may take to hear its own test NOTIFY.
ECHO_TIMEOUT = 3.0


def _unique_statement_name() -> str:
    return f"__pgqrs_{uuid.uuid4().hex}__"


#: Driver options for transaction pooling, by SQLAlchemy driver name: no statement cache and
#: unique names for the statements SQLAlchemy's asyncpg dialect prepares (a name such as
#: ``__asyncpg_stmt_1__`` is met again on a server connection another client used), and no
#: automatic server-side prepared statements in psycopg.
POOLER_CONNECT_ARGS: dict[str, dict[str, Any]] = {
    "asyncpg": {
        "statement_cache_size": 0,
        "prepared_statement_cache_size": 0,
        "prepared_statement_name_func": _unique_statement_name,
    },
    "psycopg": {"prepare_threshold": None},
}

#: The fix, as code, for an engine of the app's: shown in the warning about it.
POOLER_FIX: dict[str, str] = {
    "asyncpg": (
        'create_async_engine(url, connect_args={"statement_cache_size": 0, '
        '"prepared_statement_cache_size": 0, '
        '"prepared_statement_name_func": lambda: f"__asyncpg_{uuid.uuid4()}__"})'
    ),
    "psycopg": 'create_async_engine(url, connect_args={"prepare_threshold": None})',
}


class ListenUnavailable(Exception):
    """Internal: LISTEN cannot work on this database connection; the message says why.

    A permanent condition: the worker polls.
    """


def driver_pid(driver_connection: Any) -> int | None:
    """The backend pid the driver was told when it connected (``BackendKeyData``)."""
    get_server_pid = getattr(driver_connection, "get_server_pid", None)  # asyncpg
    if get_server_pid is not None:
        return int(get_server_pid())
    pid = getattr(getattr(driver_connection, "info", None), "backend_pid", None)  # psycopg
    return int(pid) if isinstance(pid, int) else None


async def behind_pooler(conn: AsyncConnection) -> bool:
    """Whether ``conn`` reaches PostgreSQL through a connection pooler.

    A pooler answers the connection's start-up itself, with a backend pid (the key for
    cancel requests) of its own making; ``pg_backend_pid()`` is the server's. Directly
    connected, and through plain TCP proxies, the two agree. Run it in a transaction: in
    transaction pooling, that keeps the statement's prepare and execute on one server.
    """
    raw = await conn.get_raw_connection()
    reported = driver_pid(raw.driver_connection)
    actual = (await conn.execute(select(func.pg_backend_pid()))).scalar_one()
    return reported is not None and reported != actual


def pooler_unsafe_settings(driver: str, dbapi_connection: Any) -> list[str]:
    """The driver options of ``POOLER_CONNECT_ARGS`` this (adapted DBAPI) connection lacks."""
    driver_connection = getattr(dbapi_connection, "driver_connection", None)
    missing = []
    if driver == "asyncpg":
        config = getattr(driver_connection, "_config", None)
        if getattr(config, "statement_cache_size", 0):
            missing.append("statement_cache_size=0")
        if getattr(dbapi_connection, "_prepared_statement_cache", None) is not None:
            missing.append("prepared_statement_cache_size=0")
        name_func = getattr(dbapi_connection, "_prepared_statement_name_func", None)
        if getattr(name_func, "__name__", "") == "_default_name_func":
            missing.append("prepared_statement_name_func (unique names)")
    elif driver == "psycopg" and getattr(driver_connection, "prepare_threshold", None) is not None:
        missing.append("prepare_threshold=None")
    return missing


OnNotify = Callable[[str, str], None]


class Listener:
    """A connection of its own that LISTENs; ``lost`` completes when the connection drops."""

    driver = ""

    def __init__(self, conn: AsyncConnection, driver_connection: Any) -> None:
        self.conn = conn
        self.driver_connection = driver_connection
        #: the listening backend's pid (the pooler's made-up one behind a pooler)
        self.pid = driver_pid(driver_connection)
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._on_notify: OnNotify = lambda _channel, _payload: None

    def _mark_lost(self) -> None:
        if not self.lost.done():
            self.lost.set_result(None)

    async def listen(self, channels: list[str], on_notify: OnNotify) -> None:
        raise NotImplementedError

    async def echo(self, notify: Callable[[str, str], Any]) -> bool:
        """Whether a NOTIFY sent by ``notify(channel, payload)`` reaches this connection.

        Within :data:`ECHO_TIMEOUT`.
        """
        raise NotImplementedError

    async def close(self) -> None:
        """Close the connection for good.

        It is invalidated: a LISTENing session is never handed back to the pool.
        """
        self._mark_lost()
        with contextlib.suppress(Exception):
            await self.conn.invalidate()
        with contextlib.suppress(Exception):
            await self.conn.close()


class _AsyncpgListener(Listener):
    driver = "asyncpg"

    def __init__(self, conn: AsyncConnection, driver_connection: Any) -> None:
        super().__init__(conn, driver_connection)
        driver_connection.add_termination_listener(lambda _c: self._mark_lost())

    def _deliver(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        self._on_notify(channel, payload)

    async def listen(self, channels: list[str], on_notify: OnNotify) -> None:
        self._on_notify = on_notify
        for channel in channels:
            await self.driver_connection.add_listener(channel, self._deliver)

    async def echo(self, notify: Callable[[str, str], Any]) -> bool:
        channel, token = f"pgqrs_probe_{uuid.uuid4().hex}", uuid.uuid4().hex
        heard = asyncio.Event()

        def on_probe(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
            if payload == token:
                heard.set()

        await self.driver_connection.add_listener(channel, on_probe)
        try:
            await notify(channel, token)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(heard.wait(), ECHO_TIMEOUT)
        finally:
            await self.driver_connection.remove_listener(channel, on_probe)
        return heard.is_set()


class _PsycopgListener(Listener):
    """psycopg 3: LISTEN in autocommit, then a task reading ``notifies()``.

    The generator holds the connection's lock, so every LISTEN is sent before it starts.
    """

    driver = "psycopg"

    def __init__(self, conn: AsyncConnection, driver_connection: Any) -> None:
        super().__init__(conn, driver_connection)
        self._reader: asyncio.Task[None] | None = None

    async def _execute(self, statement: str, channel: str) -> None:
        from psycopg import sql

        await self.driver_connection.execute(
            sql.SQL(statement).format(sql.Identifier(channel)), prepare=False
        )

    async def listen(self, channels: list[str], on_notify: OnNotify) -> None:
        self._on_notify = on_notify
        await self.driver_connection.set_autocommit(True)
        for channel in channels:
            await self._execute("LISTEN {}", channel)
        self._reader = asyncio.create_task(self._read(), name="pgqrs-listen-psycopg")

    async def _read(self) -> None:
        try:
            async for notification in self.driver_connection.notifies():
                self._on_notify(notification.channel, notification.payload)
        except Exception:  # the connection broke: the owner reconnects
            pass
        finally:
            self._mark_lost()

    async def echo(self, notify: Callable[[str, str], Any]) -> bool:
        channel, token = f"pgqrs_probe_{uuid.uuid4().hex}", uuid.uuid4().hex
        await self.driver_connection.set_autocommit(True)
        await self._execute("LISTEN {}", channel)
        try:
            await notify(channel, token)
            async for notification in self.driver_connection.notifies(timeout=ECHO_TIMEOUT):
                if notification.channel == channel and notification.payload == token:
                    return True
            return False
        finally:
            await self._execute("UNLISTEN {}", channel)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader
        await super().close()


_CONNECTORS: dict[str, type[Listener]] = {"asyncpg": _AsyncpgListener, "psycopg": _PsycopgListener}


async def open_listener(
    engine: AsyncEngine,
    channels: list[str],
    on_notify: OnNotify,
    *,
    pooled: bool,
    notify: Callable[[str, str], Any],
) -> Listener:
    """LISTEN to ``channels`` on a new connection of ``engine``'s pool.

    ``pooled``: the engine reaches PostgreSQL through a pooler, so the connection must first
    hear a test NOTIFY sent with ``notify(channel, payload)`` from another connection.
    Raises :class:`ListenUnavailable` when LISTEN cannot work (the driver, or a transaction
    pooler); a driver error if the database cannot be reached (worth retrying).
    """
    driver = engine.dialect.driver
    connector = _CONNECTORS.get(driver)
    if connector is None:
        raise ListenUnavailable(f"the {driver} driver has no LISTEN support in pgqrs")
    conn = await engine.connect()
    try:
        raw = await conn.get_raw_connection()
        listener = connector(conn, raw.driver_connection)
    except BaseException:
        with contextlib.suppress(Exception):
            await conn.invalidate()
        await conn.close()
        raise
    try:
        if pooled and not await listener.echo(notify):
            raise ListenUnavailable(
                "the database is reached through a connection pooler that does not keep a "
                "session's LISTEN (transaction pooling, e.g. PgBouncer pool_mode=transaction): "
                f"a test NOTIFY did not arrive within {ECHO_TIMEOUT:g}s"
            )
        await listener.listen(channels, on_notify)
    except BaseException:
        await listener.close()
        raise
    return listener
