r"""Control-flow signals: how a handler's delivery is unwound, in one place.

They are ``BaseException``\ s, so a user's ``except Exception:`` cannot swallow them. The
public one is :class:`Pause` (made with ``Step.pause(...)``); the rest are internal, raised
inside the run context and read by the worker's delivery path
(:func:`pgqrs_sqla._delivery.outcome_of`), which maps each to one outcome.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from .errors import duration_seconds

if TYPE_CHECKING:
    from ._execution import StepRecord


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


class _TransitionRefusedSignal(BaseException):
    """Internal: the lease is still held, but the state machine refused a write of this delivery.

    The run or step is in a state that write may not leave; unwinds the handler without writing
    more. Not a lost lease: logged and counted apart from one.
    """


class _ConnectionLostSignal(BaseException):
    """Internal: the database went away mid-run; the delivery is abandoned, not failed.

    Its lease expires and the run is redelivered.
    """


class _RetryLater(BaseException):
    """Internal: a step raised ``TransientError`` with attempts left; park the run."""

    def __init__(self, step: str, attempts: int, delay: float, error: dict[str, Any]):
        super().__init__(step)
        self.step, self.attempts, self.delay, self.error = step, attempts, delay, error


class _StepPaused(BaseException):
    """Internal: a step paused (``Step.pause``); park the run ``PAUSED``."""

    def __init__(self, step: str | None, seconds: float, attempts: int = 1):
        super().__init__(step)
        self.step, self.seconds, self.attempts = step, seconds, attempts


class _Waiting(BaseException):
    """Internal: a durable wait (``ctx.sleep``, ``ctx.wait_for_event``) must wait; park the run.

    The wait is recorded under ``step`` (status PAUSED, ``kind``), its ``wake_at`` set
    ``deadline`` seconds from now unless it has one already (None: no deadline), and the
    run's message released for ``seconds``. ``wait_for`` names the event a wait for one waits
    for: the park looks for it once more, so an event sent meanwhile is not missed;
    ``wait_runs`` lists the runs a wait for runs waits on.
    """

    def __init__(
        self,
        step: str,
        kind: str,
        seconds: float,
        *,
        deadline: float | None,
        wait_for: str | None = None,
        wait_runs: list[int] | None = None,
    ):
        super().__init__(step)
        self.step, self.kind, self.seconds = step, kind, seconds
        self.deadline, self.wait_for = deadline, wait_for
        #: the unfinished runs a wait for runs waits on (marked ``awaited_by`` as it parks)
        self.wait_runs = wait_runs


class _StepExhausted(BaseException):
    """Internal: a step ran out of attempts; the run ends ``ERROR``."""

    def __init__(self, step: str, error: dict[str, Any]):
        super().__init__(step)
        self.step, self.error = step, error


class _Refused(Exception):
    """Internal: a fenced write inside ``Execution.park`` was refused; roll back."""


class _RecordedMeanwhile(Exception):
    """Internal: the step got a recorded success from outside while its transaction ran."""

    def __init__(self, record: StepRecord) -> None:
        super().__init__("recorded meanwhile")
        self.record = record
