"""How a delivery ended is decided in one place: each exception a handler (or the run
context under it) can raise maps to one outcome, the first match in order winning, and
what is no concern of the delivery (``KeyboardInterrupt``...) maps to none and propagates.
The database behaviour of each outcome is tested end to end in ``tests/integration``."""

from __future__ import annotations

import asyncio

import pytest

from pgqrs_sqla import DatabaseUnavailable, LeaseLost, Pause, ValidationError
from pgqrs_sqla._outcome import Outcome, OutcomeKind, outcome_of, unrecorded
from pgqrs_sqla._signals import (
    _ConnectionLostSignal,
    _LeaseLostSignal,
    _RetryLater,
    _RunCancelledSignal,
    _StepExhausted,
    _StepPaused,
    _TransitionRefusedSignal,
)


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (_LeaseLostSignal(), OutcomeKind.LEASE_LOST),
        (LeaseLost("gone"), OutcomeKind.LEASE_LOST),
        (_TransitionRefusedSignal("refused"), OutcomeKind.REFUSED),
        (_ConnectionLostSignal(), OutcomeKind.DB_UNAVAILABLE),
        (DatabaseUnavailable("down"), OutcomeKind.DB_UNAVAILABLE),
        (_RunCancelledSignal(), OutcomeKind.CANCELLED),
        (_RetryLater("s", 1, 0.5, {}), OutcomeKind.RETRY_LATER),
        (_StepPaused("s", 1.0), OutcomeKind.STEP_PAUSED),
        (Pause(1.0), OutcomeKind.PAUSED),
        (_StepExhausted("s", {}), OutcomeKind.EXHAUSTED),
        (asyncio.CancelledError(), OutcomeKind.INTERRUPTED),
        (ValueError("bug"), OutcomeKind.FAILED),
        (ValidationError("bad output"), OutcomeKind.FAILED),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else None,
)
def test_each_raised_exception_has_one_outcome(error: BaseException, kind: OutcomeKind) -> None:
    outcome = outcome_of(error)
    assert outcome is not None
    assert outcome.kind is kind
    assert outcome.error is error


@pytest.mark.parametrize("error", [KeyboardInterrupt(), SystemExit(1), GeneratorExit()])
def test_what_is_no_concern_of_the_delivery_has_no_outcome(error: BaseException) -> None:
    assert outcome_of(error) is None


def test_only_the_four_terminal_outcomes_end_the_run() -> None:
    ending = {k for k in OutcomeKind if Outcome(k).ends_run}
    assert ending == {
        OutcomeKind.SUCCEEDED,
        OutcomeKind.FAILED,
        OutcomeKind.EXHAUSTED,
        OutcomeKind.CANCELLED,
    }


def test_a_failure_to_record_is_abandoned_when_the_database_is_gone_else_counted() -> None:
    assert unrecorded(DatabaseUnavailable("down")).kind is OutcomeKind.DB_UNAVAILABLE
    assert unrecorded(ValueError("unstorable")).kind is OutcomeKind.UNRECORDABLE
