"""Reaching the database: URLs normalised to an async driver, SQLite files, and pooler setup.

The connection-pooler setup (PgBouncer in transaction mode) is that of a Store's engines, its
own or a worker's pool made from the app's.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Sequence
from typing import Any, Self

from sqlalchemy import exc
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.engine.url import URL
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import AssertionPool, Pool, QueuePool, SingletonThreadPool, StaticPool

from ._core import StoreCore
from ._db import _sqlstate, safe_url
from ._listen import POOLER_CONNECT_ARGS, POOLER_FIX, pooler_unsafe_settings
from ._logging import get_logger
from .errors import ConfigurationError, DatabaseUnavailable

log = get_logger("pgqrs_sqla")


#: ``user:password@`` in a URL too malformed for SQLAlchemy to parse (and so to hide).
_URL_PASSWORD = re.compile(r"(://[^:/@]*:)[^@]*@")


def _redacted(url: str | URL) -> str:
    """``url`` for an error message, its password replaced by ``***`` even when unparsable."""
    if isinstance(url, URL):
        return safe_url(url)
    return _URL_PASSWORD.sub(r"\1***@", url)


def normalise_url(url: str | URL) -> URL:
    """Pick the async driver: asyncpg for ``postgresql://``, aiosqlite for ``sqlite://``.

    ``postgresql+psycopg://`` is accepted as is.

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


_PREPARED_STATEMENT_STATES = {"26000", "42P05"}

#: asyncpg options of ``POOLER_CONNECT_ARGS`` set on every engine connect() makes.
_ALWAYS_ASYNCPG = ("statement_cache_size", "prepared_statement_name_func")


def _driver_defaults(url: URL, engine_options: dict[str, Any], keys: Sequence[str]) -> list[str]:
    """Add the ``POOLER_CONNECT_ARGS`` named by ``keys`` to ``engine_options``' ``connect_args``.

    Those the caller chose (there or in the URL) are left alone; returns the keys added.
    """
    wanted = POOLER_CONNECT_ARGS.get(url.get_driver_name(), {})
    given = engine_options.get("connect_args", {})
    added = {k: wanted[k] for k in keys if k in wanted and k not in given and k not in url.query}
    if added:
        engine_options["connect_args"] = {**given, **added}
    return sorted(added)


async def _make_pooler_safe(store: StoreCore, url: URL, engine_options: dict[str, Any]) -> None:
    """``store``'s engine reaches PostgreSQL through a connection pooler: remake it to suit.

    It is remade with the driver options transaction pooling needs
    (:data:`~pgqrs_sqla._listen.POOLER_CONNECT_ARGS`) the caller did not choose, and says so in
    one WARNING.
    """
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


def _pool_like(pool: Pool, size: int) -> Pool:
    """A new, empty pool that connects as ``pool`` does, sized ``size`` (+2 overflow).

    ``Pool.recreate()`` copies the creator (which holds the engine's ``connect_args``),
    the pool's events and options; for a ``QueuePool`` the same constructor call is made
    with the worker's size instead of the app's (``QueuePool.recreate`` has no size
    argument). Other pools (``NullPool``, ``StaticPool``...) are recreated as they are.
    """
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


class Pooling(StoreCore):
    """The Store's pools: a worker's own, made from the app's; and whether a pooler is in the way.

    That is, whether the engine reaches PostgreSQL through a connection pooler.
    """

    def _pool_shareable_only(self) -> str | None:
        """Why this store's pool cannot be duplicated (``None`` when it can).

        A pool that holds its one connection (``StaticPool``, ``SingletonThreadPool``,
        ``AssertionPool``), or an in-memory SQLite database, which a new connection would open
        empty.
        """
        pool = self.engine.sync_engine.pool
        if isinstance(pool, StaticPool | SingletonThreadPool | AssertionPool):
            return f"its engine's {type(pool).__name__} holds a single connection"
        if self.dialect.in_memory(self.engine.url):
            return "its SQLite database is in memory (a new connection would open an empty one)"
        return None

    def with_own_pool(self, size: int) -> Self:
        """A Store on the same database with its own small connection pool (for a worker).

        So jobs cannot starve the app's request handlers of connections.

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
        clone = type(self)(
            engine,
            models=self.models,
            max_payload_bytes=self.max_payload_bytes,
            listen=self.listen,
            json_default=self.json_default,
            retention=self.retention,
            error_retention=self.error_retention,
            prune_interval=self.prune_interval,
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
                async with self._begin() as conn:  # one transaction: one server connection
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
