"""The exception hierarchy of pgqrs_sqla.

Every error the library raises derives from :class:`PgqrsError`; the docstring of each
class is its default message, and failure data lives on typed attributes (set by keyword,
each ``None`` or empty when it does not apply)::

    PgqrsError                      message
    ├── ConfigurationError          bad URL, unsupported driver, bad option value (url, schema)
    ├── DatabaseError               any other driver error (sqlstate, sqlite_code)
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
    ├── ValidationError             bad input, rejected before anything is written (option, value)
    │   ├── InvalidName             queue / workflow / worker / step name (name)
    │   ├── InvalidSchedule         a cron, interval, time zone or catch-up refused (schedule)
    │   ├── PayloadError            not JSON-serialisable, or over the size limit
    │   │                           (what, reason, path, size, limit)
    │   ├── DurationError           a duration negative, not finite, or over the cap (limit)
    │   ├── InvalidLimit            a concurrency or rate limit not an int >= 1 (option, value)
    │   ├── DuplicateIdempotencyKey two items of one ``trigger_many`` share a key (key, positions)
    │   └── DecodeError             a stored value does not fit the code's annotation
    │                               (run_id, step_name, what, path, expected)
    ├── NotFound
    │   ├── QueueNotFound           (queue)
    │   ├── DeadLetterNotFound      replaying a message id that is not a dead letter
    │   │                           (queue, message_ids)
    │   ├── WorkflowNotFound        (workflow)
    │   ├── RunNotFound             (run_id)
    │   └── ScheduleNotFound        (schedule)
    ├── Conflict
    │   ├── WorkerNameInUse         an active worker already has this name (worker, stale_in)
    │   ├── QueueBusy               delete refused while messages are leased (queue, leased)
    │   ├── IdempotencyKeyNotVisible  the key's run is newer than the caller's snapshot
    │   │                           (workflow, idempotency_key, isolation_level,
    │   │                           transaction_aborted)
    │   ├── WorkflowNotVisible      the workflow is newer than the caller's snapshot (workflow)
    │   └── IllegalTransition       a state change the state machine forbids
    │                               (run_id, step_name, expected, actual)
    ├── LeaseLost                   the caller no longer holds the message's lease
    │                               (message_id, token)
    ├── StepNameReused              one run called the same step name twice (run_id, step_name)
    ├── HandlerError                a handler is not an ``async def`` (handler, run_id, step_name)
    ├── RunFailed                   ``wait_for_run`` on a run that ended ERROR
    │                               (run_id, error, traceback)
    ├── RunCancelled                ``wait_for_run`` on a run that ended CANCELLED (run_id)
    ├── ReadOnlyModel               direct ORM writes to pgqrs rows are refused
    ├── WaitTimeout                 ``wait_for_run`` timed out (run_id, status)
    └── ReplayMismatch              a run's record under a name is not what the code now calls
                                    there (run_id, step_name, recorded, called)

``EventTimeout`` (``ctx.wait_for_event`` gave up; run_id, event_name, timeout) is a plain
``Exception`` a handler may catch, like ``TransientError`` which users raise in a step.

Control-flow signals (:class:`Pause`, run cancellation, a lost lease inside a handler)
derive from ``BaseException`` so that a user's ``except Exception:`` cannot swallow them.
"""

from __future__ import annotations

import math
from datetime import timedelta

from ._base import PgqrsError as PgqrsError
from ._database import (
    AuthenticationFailed as AuthenticationFailed,
    DatabaseBusy as DatabaseBusy,
    DatabaseError as DatabaseError,
    DatabaseUnavailable as DatabaseUnavailable,
    LockTimeout as LockTimeout,
    PoolerError as PoolerError,
    QueryCancelled as QueryCancelled,
    ReadOnlyDatabase as ReadOnlyDatabase,
    SchemaMissing as SchemaMissing,
    StatementTimeout as StatementTimeout,
)
from ._runs import (
    EventTimeout as EventTimeout,
    ReplayMismatch as ReplayMismatch,
    RunCancelled as RunCancelled,
    RunFailed as RunFailed,
    WaitTimeout as WaitTimeout,
)
from ._validation import (
    MAX_DURATION_SECONDS as MAX_DURATION_SECONDS,
    DecodeError as DecodeError,
    DuplicateIdempotencyKey as DuplicateIdempotencyKey,
    DurationError as DurationError,
    InvalidLimit as InvalidLimit,
    InvalidName as InvalidName,
    InvalidSchedule as InvalidSchedule,
    PayloadError as PayloadError,
    RetentionTooShort as RetentionTooShort,
    ValidationError as ValidationError,
)


class ConfigurationError(PgqrsError):
    """Invalid configuration."""

    #: the database URL concerned, password hidden
    url: str | None
    #: the schema concerned
    schema: str | None

    def __init__(
        self, message: str | None = None, *, url: str | None = None, schema: str | None = None
    ) -> None:
        super().__init__(message)
        self.url = url
        self.schema = schema


class NotFound(PgqrsError):
    """Not found."""


class QueueNotFound(NotFound):
    """No such queue."""

    queue: str | None

    def __init__(self, message: str | None = None, *, queue: str | None = None) -> None:
        super().__init__(message)
        self.queue = queue


class DeadLetterNotFound(NotFound):
    """No such dead letter in this queue: `store.dead_letters(queue)` lists them."""

    queue: str | None
    #: the ids asked for that are not dead letters of ``queue``
    message_ids: list[int]

    def __init__(
        self,
        message: str | None = None,
        *,
        queue: str | None = None,
        message_ids: list[int] | None = None,
    ) -> None:
        super().__init__(message)
        self.queue = queue
        self.message_ids = [] if message_ids is None else message_ids


class WorkflowNotFound(NotFound):
    """No such workflow: create it with `await store.create_workflow(name)`."""

    workflow: str | None

    def __init__(self, message: str | None = None, *, workflow: str | None = None) -> None:
        super().__init__(message)
        self.workflow = workflow


class RunNotFound(NotFound):
    """No such workflow run."""

    run_id: int | None

    def __init__(self, message: str | None = None, *, run_id: int | None = None) -> None:
        super().__init__(message)
        self.run_id = run_id


class ScheduleNotFound(NotFound):
    """No such schedule: `store.list_schedules()` lists them."""

    schedule: str | None

    def __init__(self, message: str | None = None, *, schedule: str | None = None) -> None:
        super().__init__(message)
        self.schedule = schedule


class Conflict(PgqrsError):
    """The operation conflicts with the current state."""


class WorkerNameInUse(Conflict):
    """An active worker already uses this name."""

    #: the name
    worker: str
    #: seconds until the holder's heartbeat window passes, after which a newcomer takes the
    #: name over (None: does not apply, e.g. registered concurrently)
    stale_in: float | None

    def __init__(
        self, message: str | None = None, *, worker: str = "", stale_in: float | None = None
    ) -> None:
        super().__init__(message)
        self.worker = worker
        self.stale_in = stale_in


class QueueBusy(Conflict):
    """The queue has leased messages; pass force=True to delete it anyway."""

    queue: str | None
    #: how many of its messages were leased
    leased: int

    def __init__(
        self, message: str | None = None, *, queue: str | None = None, leased: int = 0
    ) -> None:
        super().__init__(message)
        self.queue = queue
        self.leased = leased


class IdempotencyKeyNotVisible(Conflict):
    """A run with this idempotency key was committed after the caller's snapshot began.

    The caller runs at REPEATABLE READ or SERIALIZABLE, so the run cannot be returned; nothing was
    written and the caller's transaction is still usable: retry the transaction, or trigger at READ
    COMMITTED.
    """

    workflow: str
    idempotency_key: str
    #: the caller's level; None when it was set behind SQLAlchemy's back (``SET TRANSACTION``)
    isolation_level: str | None
    #: True only in that case: no savepoint guarded the trigger, so PostgreSQL aborted the
    #: caller's transaction (set the level with ``isolation_level=`` to avoid it)
    transaction_aborted: bool

    def __init__(
        self,
        message: str | None = None,
        *,
        workflow: str = "",
        idempotency_key: str = "",
        isolation_level: str | None = None,
        transaction_aborted: bool = False,
    ) -> None:
        super().__init__(message)
        self.workflow = workflow
        self.idempotency_key = idempotency_key
        self.isolation_level = isolation_level
        self.transaction_aborted = transaction_aborted


class WorkflowNotVisible(Conflict):
    """The workflow was created by another transaction after the caller's snapshot began.

    The caller runs at REPEATABLE READ or SERIALIZABLE, so the trigger cannot use it; nothing was
    written and the caller's transaction is still usable: retry it.
    """

    workflow: str

    def __init__(self, message: str | None = None, *, workflow: str = "") -> None:
        super().__init__(message)
        self.workflow = workflow


class LockConflict(Conflict, DatabaseError):
    """The database aborted the statement to resolve a lock conflict; it is safe to retry.

    40P01 is a deadlock, 40001 a serialization failure; nothing was written.
    """

    transient = True


class IllegalTransition(Conflict):
    """The state machine does not allow this change."""

    run_id: int | None
    #: the step, when the change was a step's (None: the run's own status)
    step_name: str | None
    #: the statuses the change may be made from
    expected: list[str]
    #: the status found
    actual: str | None

    def __init__(
        self,
        message: str | None = None,
        *,
        run_id: int | None = None,
        step_name: str | None = None,
        expected: list[str] | None = None,
        actual: str | None = None,
    ) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.step_name = step_name
        self.expected = [] if expected is None else expected
        self.actual = actual


class LeaseLost(PgqrsError):
    """The lease is lost: another worker claimed this message, or it was released; nothing was changed."""

    message_id: int | None
    #: the lease token the caller held (the message's ``read_ct`` when it claimed it)
    token: int | None

    def __init__(
        self, message: str | None = None, *, message_id: int | None = None, token: int | None = None
    ) -> None:
        super().__init__(message)
        self.message_id = message_id
        self.token = token


class StepNameReused(PgqrsError):
    """A step name was used twice in one run; step names must be unique within a run."""

    run_id: int | None
    step_name: str | None

    def __init__(
        self, message: str | None = None, *, run_id: int | None = None, step_name: str | None = None
    ) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.step_name = step_name


class HandlerError(PgqrsError):
    """Invalid handler."""

    #: the callable refused, when the handler itself was
    handler: object
    #: the run and step, when a step's function was refused as it ran
    run_id: int | None
    step_name: str | None

    def __init__(
        self,
        message: str | None = None,
        *,
        handler: object = None,
        run_id: int | None = None,
        step_name: str | None = None,
    ) -> None:
        super().__init__(message)
        self.handler = handler
        self.run_id = run_id
        self.step_name = step_name


class ReadOnlyModel(PgqrsError):
    """pgqrs rows are read-only through the ORM."""


def duration_seconds(value: object, what: str, *, positive: bool = False) -> float:
    """``value`` (a ``timedelta`` or a number of seconds) as finite seconds within range.

    The seconds must be >= 0 (> 0 with ``positive``) and at most :data:`MAX_DURATION_SECONDS` (ten
    years); anything else is a :class:`DurationError` naming ``what``.
    """
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


# One module for users to name: ``pgqrs_sqla.errors.X`` (also how the classes pickle, and
# the type a failed run's error records): every class defined in a private module of this
# package is renamed into it.
for _cls in [v for v in globals().values() if isinstance(v, type)]:
    if _cls.__module__.startswith(f"{__name__}._"):
        _cls.__module__ = __name__
