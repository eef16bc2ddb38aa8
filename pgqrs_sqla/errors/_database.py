"""The database errors: what a driver error becomes at the one boundary (``_db.translate``)."""

from __future__ import annotations

from ._base import PgqrsError


class DatabaseError(PgqrsError):
    """The database refused or failed the statement.

    Every driver error that reaches a public path is one of these (the driver's exception
    chained as ``__cause__``). ``sqlstate`` is PostgreSQL's SQLSTATE, ``sqlite_code`` SQLite's
    (extended) result code, each None when the other backend (or no server) answered.
    ``transient`` (a class flag) says whether trying again later, with nobody acting, may
    succeed: a worker backs off and carries on after those, and stops on the others.
    """

    transient: bool = False
    sqlstate: str | None
    sqlite_code: int | None

    def __init__(
        self,
        message: str | None = None,
        *,
        sqlstate: str | None = None,
        sqlite_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.sqlite_code = sqlite_code


class DatabaseUnavailable(DatabaseError):
    """The database server could not be reached."""

    transient = True


class AuthenticationFailed(DatabaseUnavailable):
    """The server refused the credentials (28P01, 28000): fix the user, password or ``pg_hba.conf`` entry."""

    transient = False


class QueryCancelled(DatabaseError):
    """The server cancelled the statement (57014: ``pg_cancel_backend``, a shutdown); nothing was kept."""

    transient = True


class StatementTimeout(QueryCancelled):
    """The statement ran past the session's ``statement_timeout`` and was cancelled."""


class LockTimeout(DatabaseError):
    """A lock the statement needed was not granted within ``lock_timeout`` (55P03)."""

    transient = True


class ReadOnlyDatabase(DatabaseError):
    """The database accepts no writes now (25006: a standby, or ``default_transaction_read_only``).

    SQLite: the database file is read-only.
    """

    transient = True


class DatabaseBusy(DatabaseError):
    """SQLite: another connection held the write lock past the busy timeout (SQLITE_BUSY / SQLITE_LOCKED)."""

    transient = True


class PoolerError(DatabaseError):
    """A connection pooler (PgBouncer in transaction mode) lost the session's state.

    E.g. a prepared statement (26000) or the protocol (08P01); for asyncpg behind PgBouncer pass
    ``connect_args={"statement_cache_size": 0}``.
    """

    transient = True


class SchemaMissing(DatabaseError):
    """The pgqrs tables are missing: run `await store.install()`, `pgqrs-sqla install`, or `alembic upgrade heads`."""
