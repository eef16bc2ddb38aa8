"""The exception hierarchy of pgqrs_sqla.

Every error the library raises derives from :class:`PgqrsError`; the docstring of each
class is its default message, and failure data lives on attributes::

    PgqrsError
    ├── ConfigurationError          bad URL, unsupported driver, bad option value
    ├── DatabaseUnavailable         the server cannot be reached (driver error chained)
    ├── SchemaMissing               the pgqrs tables are not there: run install() or Alembic
    ├── ValidationError             bad input, rejected before anything is written
    │   ├── InvalidName             queue / workflow / worker / step name
    │   └── PayloadError            not JSON-serialisable, or over the size limit
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


class DatabaseUnavailable(PgqrsError):
    """The database server could not be reached."""


class SchemaMissing(PgqrsError):
    """The pgqrs tables are missing: run `await store.install()`, `pgqrs-sqla install`,
    or `alembic upgrade heads` with the pgqrs branch."""


class ValidationError(PgqrsError):
    """Invalid input; nothing was written."""


class InvalidName(ValidationError):
    """Invalid name."""


class PayloadError(ValidationError):
    """The payload cannot be stored."""


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


class QueueBusy(Conflict):
    """The queue has leased messages; pass force=True to delete it anyway."""


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


def duration_seconds(value: object, what: str, *, positive: bool = False) -> float:
    """``value`` (a ``timedelta`` or a number of seconds) as finite seconds, >= 0 (> 0 with
    ``positive``); anything else is a :class:`ValidationError` naming ``what``."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise ValidationError(
            f"{what} must be a timedelta or a number of seconds, got {value!r}", value=value
        )
    if not math.isfinite(seconds) or seconds < 0 or (positive and seconds == 0):
        bound = "> 0" if positive else ">= 0"
        raise ValidationError(
            f"{what} must be finite and {bound} seconds, got {value!r}", value=value
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


class Pause(BaseException):
    """Raised (or returned) from a step to pause the run; made with ``Step.pause(...)``."""

    def __init__(self, duration: timedelta | float):
        seconds = duration_seconds(duration, "pause duration")
        super().__init__(f"pause for {seconds:g}s")
        self.seconds = seconds


class Step:
    """Namespace for step control signals, as in the guide: ``raise Step.pause(3600)``."""

    @staticmethod
    def pause(duration: timedelta | float) -> Pause:
        """Return a signal that pauses the run for ``duration`` (a timedelta or seconds)."""
        return Pause(duration)


class _RunCancelledSignal(BaseException):
    """Internal: the run was cancelled; unwinds the handler at a step boundary."""


class _LeaseLostSignal(BaseException):
    """Internal: this worker lost the run's lease; unwinds the handler without writing."""


class _ConnectionLostSignal(BaseException):
    """Internal: the database went away mid-run; the delivery is abandoned, not failed (its
    lease expires and the run is redelivered)."""
