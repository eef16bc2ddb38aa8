"""The errors of waiting on runs and replaying them (see :mod:`pgqrs_sqla.errors`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._base import PgqrsError

if TYPE_CHECKING:  # models imports the errors
    from ..models import RunStatus


class RunFailed(PgqrsError):
    """The workflow run ended with an error."""

    run_id: int | None
    #: the run's recorded error, as stored (a JSON value: ``{"type", "message", ...}``)
    error: Any
    #: the traceback recorded with it, if any
    traceback: str | None

    def __init__(
        self,
        message: str | None = None,
        *,
        run_id: int | None = None,
        error: Any = None,
        traceback: str | None = None,
    ) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.error = error
        self.traceback = traceback


class RunCancelled(PgqrsError):
    """The workflow run was cancelled."""

    run_id: int | None

    def __init__(self, message: str | None = None, *, run_id: int | None = None) -> None:
        super().__init__(message)
        self.run_id = run_id


class WaitTimeout(PgqrsError):
    """Timed out waiting for a run to finish.

    Raised by ``store.wait_for_run`` / ``wait_for_status`` in the caller, and by
    ``ctx.wait_for_run`` / ``ctx.wait_for_runs`` in a handler (recorded: a replay raises it
    again). The run waited for is not touched: it goes on.
    """

    #: the run waited for (for ``ctx.wait_for_runs``, one still unfinished)
    run_id: int | None
    #: the run's status when the wait gave up
    status: RunStatus | None

    def __init__(
        self,
        message: str | None = None,
        *,
        run_id: int | None = None,
        status: RunStatus | None = None,
    ) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.status = status


class ReplayMismatch(PgqrsError):
    """The run's record under this name was written by another primitive than the code now calls.

    A step and a wait (or two kinds of wait) share a name, or a deploy changed the code a run
    started under: the run fails rather than replay a wrong value. A deploy that changes what a
    run does at a name must use a new name, or branch on ``ctx.patched``.
    """

    run_id: int | None
    step_name: str | None
    #: what the record is and what the code called: ``step``, ``sleep``, ``event``, ``child``
    #: (``ctx.start_child``), ``run`` (``ctx.wait_for_run(s)``) or ``patch`` (``ctx.patched``)
    recorded: str | None
    called: str | None

    def __init__(
        self,
        message: str | None = None,
        *,
        run_id: int | None = None,
        step_name: str | None = None,
        recorded: str | None = None,
        called: str | None = None,
    ) -> None:
        super().__init__(message)
        self.run_id, self.step_name = run_id, step_name
        self.recorded, self.called = recorded, called


class EventTimeout(Exception):
    """``ctx.wait_for_event`` gave up: no event came within its timeout.

    A plain ``Exception``: the handler may catch it. The timeout is recorded, so a replay
    raises it again at the same point.
    """

    def __init__(
        self,
        message: str = "no event came within the timeout",
        *,
        run_id: int | None = None,
        event_name: str | None = None,
        timeout: float | None = None,
    ) -> None:
        super().__init__(message)
        self.run_id, self.event_name, self.timeout = run_id, event_name, timeout

    def __reduce__(self) -> Any:
        return (
            _event_timeout,
            (str(self), self.run_id, self.event_name, self.timeout),
        )


def _event_timeout(
    message: str, run_id: int | None, event_name: str | None, timeout: float | None
) -> EventTimeout:
    return EventTimeout(message, run_id=run_id, event_name=event_name, timeout=timeout)
