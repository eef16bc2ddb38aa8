"""The state machine's transition table (pgqrs_sqla/states.py) and RetryPolicy's delays,
without a database."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from sqlalchemy import column
from sqlalchemy.dialects import postgresql

import pgqrs_sqla as pgqrs
from pgqrs_sqla.models import RunStatus, StepStatus
from pgqrs_sqla.states import (
    NON_TERMINAL_RUN,
    RUN_FROM,
    STEP_FROM,
    run_may_become,
    status_in,
    step_may_become,
)

R, S = RunStatus, StepStatus

#: (from, to) for every legal run transition; everything else is illegal.
RUN_LEGAL = {
    (R.QUEUED, R.RUNNING), (R.RUNNING, R.RUNNING), (R.PAUSED, R.RUNNING),
    (R.RUNNING, R.PAUSED),
    (R.RUNNING, R.SUCCESS),
    (R.QUEUED, R.ERROR), (R.RUNNING, R.ERROR), (R.PAUSED, R.ERROR),
    (R.QUEUED, R.CANCELLED), (R.RUNNING, R.CANCELLED), (R.PAUSED, R.CANCELLED),
    (R.ERROR, R.QUEUED), (R.CANCELLED, R.QUEUED),
}  # fmt: skip
STEP_LEGAL = {
    (S.ERROR, S.RUNNING), (S.PAUSED, S.RUNNING),
    (S.RUNNING, S.SUCCESS), (S.ERROR, S.SUCCESS), (S.PAUSED, S.SUCCESS),
    (S.RUNNING, S.ERROR), (S.ERROR, S.ERROR), (S.PAUSED, S.ERROR),
    (S.RUNNING, S.PAUSED), (S.PAUSED, S.PAUSED), (S.ERROR, S.PAUSED),
}  # fmt: skip


@pytest.mark.parametrize("old", list(RunStatus))
@pytest.mark.parametrize("new", list(RunStatus))
def test_run_transitions(old: RunStatus, new: RunStatus) -> None:
    assert (old in RUN_FROM[new]) is ((old, new) in RUN_LEGAL)
    assert (old.value in run_may_become(new)) is ((old, new) in RUN_LEGAL)


@pytest.mark.parametrize("old", list(StepStatus))
@pytest.mark.parametrize("new", list(StepStatus))
def test_step_transitions(old: StepStatus, new: StepStatus) -> None:
    assert (old in STEP_FROM[new]) is ((old, new) in STEP_LEGAL)
    assert (old.value in step_may_become(new)) is ((old, new) in STEP_LEGAL)


def test_terminal_states() -> None:
    """SUCCESS is final for runs and steps; ERROR and CANCELLED runs leave only by a retry."""
    assert {s for s in RunStatus if s.terminal} == {R.SUCCESS, R.ERROR, R.CANCELLED}
    assert {s for s in RunStatus if not s.terminal} == NON_TERMINAL_RUN
    assert not any(R.SUCCESS in allowed for allowed in RUN_FROM.values())
    assert not any(S.SUCCESS in allowed for allowed in STEP_FROM.values())
    assert {new for new, allowed in RUN_FROM.items() if R.ERROR in allowed} == {R.QUEUED}


def test_allowed_predecessors_are_sorted_and_bound_one_by_one() -> None:
    assert run_may_become(R.ERROR) == ["PAUSED", "QUEUED", "RUNNING"]
    compiled = status_in(column("status"), run_may_become(R.ERROR)).compile(
        dialect=postgresql.dialect()
    )
    assert "POSTCOMPILE" not in str(compiled)  # not an expanding parameter
    assert sorted(compiled.params.values()) == ["PAUSED", "QUEUED", "RUNNING"]


# ---------------------------------------------------------------- RetryPolicy


def test_delay_doubles_from_base_up_to_the_cap() -> None:
    policy = pgqrs.RetryPolicy(base=0.5, cap=3.0, jitter=False)
    assert [policy.delay(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]
    assert policy.delay(0) == 0.5  # attempt numbers start at 1; below that is the first
    assert pgqrs.RetryPolicy(base=1.0, cap=300.0, jitter=False).delay(60) == 300.0


def test_a_late_attempt_waits_the_cap() -> None:
    assert pgqrs.RetryPolicy(max_attempts=5000, cap=300.0, jitter=False).delay(2000) == 300.0


def test_jitter_stays_between_half_and_all_of_the_delay() -> None:
    rng_state = random.getstate()
    try:
        random.seed(1234)
        policy = pgqrs.RetryPolicy(base=2.0, cap=10.0)
        for attempt in range(1, 8):
            raw = min(10.0, 2.0 * 2 ** (attempt - 1))
            delays = [policy.delay(attempt) for _ in range(200)]
            assert all(raw / 2 <= d <= raw for d in delays), attempt
            assert len(set(delays)) > 1  # jittered: not one value
    finally:
        random.setstate(rng_state)


def test_zero_base_means_no_delay() -> None:
    assert pgqrs.RetryPolicy(base=0, jitter=True).delay(3) == 0.0


def test_durations_may_be_timedeltas() -> None:
    assert pgqrs.RetryPolicy(base=timedelta(seconds=1), cap=60, jitter=False).delay(2) == 2.0


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": True}, "max_attempts"),
        ({"max_attempts": 2.0}, "max_attempts"),
        ({"base": -1}, "RetryPolicy base"),
        ({"base": float("nan")}, "RetryPolicy base"),
        ({"cap": float("inf")}, "RetryPolicy cap"),
        ({"cap": "10s"}, "RetryPolicy cap"),
    ],
)
def test_bad_policies_are_refused_naming_the_option(
    options: dict[str, object], option: str
) -> None:
    with pytest.raises(pgqrs.ValidationError) as caught:
        pgqrs.RetryPolicy(**options)  # type: ignore[arg-type]
    assert caught.value.option == option
