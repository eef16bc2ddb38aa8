"""How one delivery of a workflow run ended, decided in one place.

The handler's result or exception becomes an :class:`Outcome` (:func:`outcome_of`; a
failure to record one becomes another, :func:`unrecorded`); the worker's delivery path
(:mod:`pgqrs_sqla._delivery`) then records it, once per kind.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass

from ._signals import (
    Pause,
    _ConnectionLostSignal,
    _LeaseLostSignal,
    _RetryLater,
    _RunCancelledSignal,
    _StepExhausted,
    _StepPaused,
    _TransitionRefusedSignal,
    _Waiting,
)
from .errors import DatabaseUnavailable, LeaseLost


class OutcomeKind(enum.Enum):
    """How one delivery of a run ended; the first four end the run."""

    #: the handler returned and its output is recorded: the run is SUCCESS
    SUCCEEDED = "succeeded"
    #: the handler raised: the run ends ERROR
    FAILED = "failed"
    #: a step ran out of attempts: the run ends ERROR
    EXHAUSTED = "exhausted"
    #: a cancellation was asked: the run ends CANCELLED
    CANCELLED = "cancelled"
    #: a step failed and retries later: recorded, the message released for its backoff
    RETRY_LATER = "retry_later"
    #: a step paused (a sleep or a wait): the run PAUSED, the message released meanwhile
    STEP_PAUSED = "step_paused"
    #: a durable wait (a timer, an event) must wait: recorded, the run PAUSED, the message
    #: released until its deadline or a wake-up
    WAITING = "waiting"
    #: the handler raised ``Pause`` outside any step: the run PAUSED
    PAUSED = "paused"
    #: the lease went to another worker: nothing of ours to record
    LEASE_LOST = "lease_lost"
    #: the state machine refused a write with the lease still held: the run left as it is
    REFUSED = "refused"
    #: the database went away: the delivery abandoned, the message given back
    DB_UNAVAILABLE = "db_unavailable"
    #: the worker cancelled the task (stopping past its grace): the message given back
    INTERRUPTED = "interrupted"
    #: recording another outcome failed (the database refused it): a failed delivery
    UNRECORDABLE = "unrecordable"


@dataclass(frozen=True)
class Outcome:
    """What one delivery of a run came to, and the exception that said so (if any)."""

    kind: OutcomeKind
    error: BaseException | None = None

    @property
    def ends_run(self) -> bool:
        return self.kind in _ENDING


_ENDING = frozenset(
    {OutcomeKind.SUCCEEDED, OutcomeKind.FAILED, OutcomeKind.EXHAUSTED, OutcomeKind.CANCELLED}
)

#: What a handler's exception means, in order: the first match wins.
_RAISED: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], OutcomeKind], ...] = (
    ((_LeaseLostSignal, LeaseLost), OutcomeKind.LEASE_LOST),
    (_TransitionRefusedSignal, OutcomeKind.REFUSED),
    ((_ConnectionLostSignal, DatabaseUnavailable), OutcomeKind.DB_UNAVAILABLE),
    (_RunCancelledSignal, OutcomeKind.CANCELLED),
    (_RetryLater, OutcomeKind.RETRY_LATER),
    (_StepPaused, OutcomeKind.STEP_PAUSED),
    (_Waiting, OutcomeKind.WAITING),
    (Pause, OutcomeKind.PAUSED),
    (_StepExhausted, OutcomeKind.EXHAUSTED),
    (asyncio.CancelledError, OutcomeKind.INTERRUPTED),
    (Exception, OutcomeKind.FAILED),
)


def outcome_of(error: BaseException) -> Outcome | None:
    """The outcome a delivery whose handler raised ``error`` came to, or None.

    None for what is no concern of the delivery's (``KeyboardInterrupt``, ``SystemExit``...): it
    propagates.
    """
    for kinds, kind in _RAISED:
        if isinstance(error, kinds):
            return Outcome(kind, error)
    return None


def unrecorded(error: Exception) -> Outcome:
    """Recording an outcome raised ``error``: abandon the delivery, or count a failed one.

    Abandoned when the database went away; counted when it refused the write.
    """
    if isinstance(error, DatabaseUnavailable):
        return Outcome(OutcomeKind.DB_UNAVAILABLE, error)
    return Outcome(OutcomeKind.UNRECORDABLE, error)
