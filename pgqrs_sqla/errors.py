"""The exception hierarchy of pgqrs_sqla.

Every error the library raises derives from :class:`PgqrsError`; the docstring of each
class is its default message, and failure data lives on attributes::

    PgqrsError
    ├── ConfigurationError          bad URL, unsupported driver, bad option value
    ├── DatabaseError               any other driver error (``sqlstate`` / ``sqlite_code``)
    │   ├── DatabaseUnavailable     the server cannot be reached (driver error chained)
    │   │   └── AuthenticationFailed    the server refused the credentials (not transient)
    │   ├── SchemaMissing           the pgqrs tables are not there: run install() or Alembic
    │   ├── QueryCancelled          the server cancelled the statement (57014)
    │   │   └── StatementTimeout    ... because it ran past ``statement_timeout``
    │   ├── LockTimeout             a lock was not granted in time (55P03)
    │   ├── ReadOnlyDatabase        the database accepts no writes now (25006, a standby)
    │   ├── DatabaseBusy            SQLite is locked by another writer (SQLITE_BUSY/LOCKED)
    │   ├── PoolerError             a pooler (PgBouncer) lost the session's state (26000, 08P01)
    │   └── LockConflict            deadlock / serialization failure (40P01, 40001); also a Conflict
    ├── ValidationError             bad input, rejected before anything is written
    │   ├── InvalidName             queue / workflow / worker / step name
    │   ├── PayloadError            not JSON-serialisable, or over the size limit
    │   └── DurationError           a duration negative, not finite, or over the cap
    ├── NotFound
    │   ├── QueueNotFound
    │   ├── DeadLetterNotFound      replaying a message id that is not a dead letter
    │   ├── WorkflowNotFound
    │   ├── RunNotFound
    │   ├── StepNotFound
    │   └── WorkerNotFound
    ├── Conflict
    │   ├── WorkerNameInUse         an active worker already has this name
    │   ├── QueueBusy               delete refused while messages are leased
    │   ├── IdempotencyKeyNotVisible  the key's run is newer than the caller's snapshot
    │   └── IllegalTransition       a state change the state machine forbids
    ├── LeaseLost                   the caller no longer holds the message's lease
    ├── StepNameReused              one run called the same step name twice
    ├── HandlerError                a handler is not an ``async def``
    ├── RunFailed                   ``wait_for_run`` on a run that ended ERROR
    ├── RunCancelled                ``wait_for_run`` on a run that ended CANCELLED
    ├── ReadOnlyModel               direct ORM writes to pgqrs rows are refused
    └── WaitTimeout                 ``wait_for_run`` timed out

``TransientError`` is raised *by users* inside a step and is a plain ``Exception``.
Control-flow signals (:class:`Pause`, run cancellation, a lost lease inside a handler)
derive from ``BaseException`` so that a user's ``except Exception:`` cannot swallow them.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any


class PgqrsError(Exception):
    """pgqrs_sqla error."""

    def __init__(self, message: str | None = None, **attrs: Any) -> None:
        self.message = message or (type(self).__doc__ or type(self).__name__).strip()
        for key, value in attrs.items():
            setattr(self, key, value)
        super().__init__(self.message)


class ConfigurationError(PgqrsError):
    """Invalid configuration."""


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
        **attrs: Any,
    ) -> None:
        super().__init__(message, sqlstate=sqlstate, sqlite_code=sqlite_code, **attrs)


class DatabaseUnavailable(DatabaseError):
    """The database server could not be reached."""

    transient = True


class AuthenticationFailed(DatabaseUnavailable):
    """The database server refused the credentials (28P01, 28000): fix the user, password
    or ``pg_hba.conf`` entry."""

    transient = False


class QueryCancelled(DatabaseError):
    """The server cancelled the statement (57014: ``pg_cancel_backend``, a shutdown);
    nothing it did was kept."""

    transient = True


class StatementTimeout(QueryCancelled):
    """The statement ran past the session's ``statement_timeout`` and was cancelled."""


class LockTimeout(DatabaseError):
    """A lock the statement needed was not granted within ``lock_timeout`` (55P03)."""

    transient = True


class ReadOnlyDatabase(DatabaseError):
    """The database accepts no writes now (25006: a standby, or
    ``default_transaction_read_only``; SQLite: a read-only file)."""

    transient = True


class DatabaseBusy(DatabaseError):
    """SQLite: another connection held the write lock past the busy timeout
    (SQLITE_BUSY / SQLITE_LOCKED)."""

    transient = True


class PoolerError(DatabaseError):
    """A connection pooler (PgBouncer in transaction mode) lost the session's state, e.g. a
    prepared statement (26000) or the protocol (08P01); for asyncpg behind PgBouncer pass
    ``connect_args={"statement_cache_size": 0}``."""

    transient = True


class SchemaMissing(DatabaseError):
    """The pgqrs tables are missing: run `await store.install()`, `pgqrs-sqla install`,
    or `alembic upgrade heads` with the pgqrs branch."""


class ValidationError(PgqrsError):
    """Invalid input; nothing was written."""


class InvalidName(ValidationError):
    """Invalid name."""


class PayloadError(ValidationError):
    """The payload cannot be stored."""

    #: what was refused (``"payload"``, ``"params of workflow 'x'"``, ``"result of step 'y'"``)
    what: str = ""
    #: ``not_json``, ``unsupported_type``, ``key_not_str``, ``bad_text``, ``too_deep``,
    #: ``too_large``
    reason: str = ""
    #: where inside the value (``$.data[1]``), when it is one place
    path: str | None = None


class DurationError(ValidationError):
    """A duration (delay, timeout, interval, pause...) is not a finite number of seconds
    within the allowed range; ``option`` names it, ``limit`` is the cap in seconds."""

    option: str = ""
    value: object = None
    limit: float = 0.0


class NotFound(PgqrsError):
    """Not found."""


class QueueNotFound(NotFound):
    """No such queue."""


class DeadLetterNotFound(NotFound):
    """No such dead letter in this queue: `store.dead_letters(queue)` lists them."""


class WorkflowNotFound(NotFound):
    """No such workflow: create it with `await store.create_workflow(name)`."""


class RunNotFound(NotFound):
    """No such workflow run."""


class StepNotFound(NotFound):
    """No such step in this run."""


class WorkerNotFound(NotFound):
    """No such worker."""


class Conflict(PgqrsError):
    """The operation conflicts with the current state."""


class WorkerNameInUse(Conflict):
    """An active worker already uses this name."""

    #: the name
    worker: str
    #: seconds until the holder's heartbeat window passes, after which a newcomer takes the
    #: name over (None: does not apply, e.g. registered concurrently)
    stale_in: float | None = None


class QueueBusy(Conflict):
    """The queue has leased messages; pass force=True to delete it anyway."""


class IdempotencyKeyNotVisible(Conflict):
    """A run with this idempotency key was committed after the caller's REPEATABLE READ or
    SERIALIZABLE snapshot, so it cannot be returned; nothing was written and the caller's
    transaction is still usable: retry the transaction, or trigger at READ COMMITTED."""

    workflow: str = ""
    idempotency_key: str = ""
    #: the caller's level; None when it was set behind SQLAlchemy's back (``SET TRANSACTION``)
    isolation_level: str | None = None
    #: True only in that case: no savepoint guarded the trigger, so PostgreSQL aborted the
    #: caller's transaction (set the level with ``isolation_level=`` to avoid it)
    transaction_aborted: bool = False


class LockConflict(Conflict, DatabaseError):
    """The database aborted the statement to resolve a lock conflict (40P01 deadlock,
    40001 serialization failure); nothing was written and it is safe to retry."""

    transient = True


class IllegalTransition(Conflict):
    """The state machine does not allow this change."""


class LeaseLost(PgqrsError):
    """The lease on this message is no longer held by the caller (it expired and another
    worker claimed the message, or it was released); nothing was changed."""


class StepNameReused(PgqrsError):
    """A step name was used twice in one run; step names must be unique within a run."""


class HandlerError(PgqrsError):
    """Invalid handler."""


class RunFailed(PgqrsError):
    """The workflow run ended with an error."""


class RunCancelled(PgqrsError):
    """The workflow run was cancelled."""


class ReadOnlyModel(PgqrsError):
    """pgqrs rows are read-only through the ORM."""


class WaitTimeout(PgqrsError):
    """Timed out waiting for the run to finish."""


#: The longest duration any option accepts: ten years (of 365.25 days), in seconds. Far below
#: what ``now + d`` can be on every backend (PostgreSQL's timestamptz, SQLite's ISO text and
#: Python's ``datetime`` all stop at the year 9999), so a deadline is always storable.
MAX_DURATION_SECONDS = 10 * 365.25 * 86400.0


def duration_seconds(value: object, what: str, *, positive: bool = False) -> float:
    """``value`` (a ``timedelta`` or a number of seconds) as finite seconds, >= 0 (> 0 with
    ``positive``) and at most :data:`MAX_DURATION_SECONDS` (ten years); anything else is a
    :class:`DurationError` naming ``what``."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:  # an int too big for a float
            seconds = math.inf
    else:
        raise DurationError(
            f"{what} must be a timedelta or a number of seconds, got {value!r}",
            option=what,
            value=value,
            limit=MAX_DURATION_SECONDS,
        )
    if not math.isfinite(seconds) or seconds < 0 or (positive and seconds == 0):
        bound = "> 0" if positive else ">= 0"
        raise DurationError(
            f"{what} must be finite and {bound} seconds, got {value!r}",
            option=what,
            value=value,
            limit=MAX_DURATION_SECONDS,
        )
    if seconds > MAX_DURATION_SECONDS:
        raise DurationError(
            f"{what} is {seconds:g} seconds, over the limit of {MAX_DURATION_SECONDS:g} seconds "
            "(ten years); pass a shorter duration",
            option=what,
            value=value,
            limit=MAX_DURATION_SECONDS,
        )
    return seconds


class TransientError(Exception):
    """A step failed in a way that may succeed later; the step is retried.

    ``retry_after`` (seconds) fixes the delay; without it the retry policy's exponential
    backoff with jitter applies.
    """

    def __init__(
        self, message: str = "transient error", *, retry_after: timedelta | float | None = None
    ):
        super().__init__(message)
        self.retry_after: float | None = (
            None if retry_after is None else duration_seconds(retry_after, "retry_after")
        )
