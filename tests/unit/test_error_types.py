"""Errors a type checker can see: every failure attribute is declared on its class, so user
code reading ``error.run_id`` passes ``mypy --strict``; at runtime each attribute is set (or
defaulted), the docstring is the default message, and an error survives pickling."""

from __future__ import annotations

import pickle

import pytest

import pgqrs_sqla as pgqrs
from pgqrs_sqla.codec import check_json
from pgqrs_sqla.errors import MAX_DURATION_SECONDS, duration_seconds
from pgqrs_sqla.queue import validate_name
from tests._mypy import mypy_strict_report


@pytest.mark.xdist_group("mypy")
@pytest.mark.timeout(900)
def test_user_code_reading_error_attributes_passes_mypy_strict() -> None:
    report = mypy_strict_report()
    assert report.errors("error_attributes.py") == set(), report.output
    # The same check does catch a wrong attribute and a wrong type.
    assert report.errors("error_attributes_wrong.py") == report.marked(
        "error_attributes_wrong.py"
    ), report.output
    assert len(report.marked("error_attributes_wrong.py")) == 2


def test_the_docstring_is_the_default_message() -> None:
    error = pgqrs.RunNotFound()
    assert error.message == str(error) == "No such workflow run."
    assert error.run_id is None
    assert pgqrs.WorkflowNotVisible().message.startswith("The workflow was created by another")
    given = pgqrs.RunNotFound("no workflow run with id 7", run_id=7)
    assert (given.message, str(given), given.run_id) == ("no workflow run with id 7",) * 2 + (7,)


def test_attributes_have_defaults_and_keep_what_is_given() -> None:
    lock = pgqrs.LockConflict("deadlock", sqlstate="40P01")
    assert isinstance(lock, pgqrs.Conflict) and isinstance(lock, pgqrs.DatabaseError)
    assert (lock.sqlstate, lock.sqlite_code, lock.transient) == ("40P01", None, True)
    transition = pgqrs.IllegalTransition(run_id=3, expected=["PAUSED"], actual="SUCCESS")
    assert (transition.run_id, transition.step_name, transition.expected, transition.actual) == (
        3,
        None,
        ["PAUSED"],
        "SUCCESS",
    )
    assert pgqrs.IllegalTransition().expected == []
    assert pgqrs.DeadLetterNotFound(queue="q").message_ids == []
    busy = pgqrs.QueueBusy(queue="q", leased=2)
    assert (busy.queue, busy.leased) == ("q", 2)
    in_use = pgqrs.WorkerNameInUse(worker="w", stale_in=1.5)
    assert (in_use.worker, in_use.stale_in) == ("w", 1.5)
    assert pgqrs.DurationError().limit == MAX_DURATION_SECONDS
    failed = pgqrs.RunFailed(run_id=1, error={"type": "ValueError"}, traceback="tb")
    assert (failed.run_id, failed.error, failed.traceback) == (1, {"type": "ValueError"}, "tb")
    timeout = pgqrs.WaitTimeout(run_id=2, status=pgqrs.RunStatus.RUNNING)
    assert (timeout.run_id, timeout.status) == (2, pgqrs.RunStatus.RUNNING)


def test_an_undeclared_attribute_is_refused() -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument 'run_id'"):
        pgqrs.QueueNotFound("no such queue", run_id=1)  # type: ignore[call-arg]


def test_raise_sites_set_the_attributes() -> None:
    with pytest.raises(pgqrs.DurationError) as duration:
        duration_seconds(-1, "delay")
    assert (duration.value.option, duration.value.value, duration.value.limit) == (
        "delay",
        -1,
        MAX_DURATION_SECONDS,
    )
    assert "delay must be finite and >= 0 seconds, got -1" in str(duration.value)

    with pytest.raises(pgqrs.InvalidName) as name:
        validate_name("9 lives", "workflow")
    assert (name.value.name, name.value.value) == ("9 lives", "9 lives")
    assert "invalid workflow name '9 lives'" in str(name.value)

    with pytest.raises(pgqrs.PayloadError) as payload:
        check_json({"ids": [1, object()]}, what="payload", max_bytes=1000)
    assert (payload.value.what, payload.value.reason, payload.value.path) == (
        "payload",
        "unsupported_type",
        "$.ids[1]",
    )
    assert (payload.value.size, payload.value.limit) == (None, None)

    with pytest.raises(pgqrs.PayloadError) as large:
        check_json("x" * 100, what="payload", max_bytes=10)
    assert (large.value.reason, large.value.size, large.value.limit) == ("too_large", 102, 10)
    assert "over the limit of 10 bytes" in str(large.value)


@pytest.mark.parametrize(
    "error",
    [
        pgqrs.StatementTimeout("ran past statement_timeout", sqlstate="57014"),
        pgqrs.PayloadError("too big", what="payload", reason="too_large", size=9, limit=3),
        pgqrs.IdempotencyKeyNotVisible(
            workflow="wf", idempotency_key="k", isolation_level="SERIALIZABLE"
        ),
        pgqrs.HandlerError(run_id=5, step_name="s"),
        pgqrs.DecodeError(run_id=5, step_name="s", what="w", path="$.a", expected="int", value="x"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_an_error_survives_pickling(error: pgqrs.PgqrsError) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert vars(copy) == vars(error)
    assert str(copy) == str(error)


def test_a_default_message_is_one_line_even_from_a_docstring_of_paragraphs() -> None:
    """Errors are one line: a class whose docstring has several paragraphs still says its
    default message on one line, every word kept."""
    for cls in (pgqrs.ReadOnlyDatabase, pgqrs.PoolerError, pgqrs.LockConflict, pgqrs.DurationError):
        message = str(cls())
        assert "\n" not in message and "  " not in message
        assert message.split() == (cls.__doc__ or "").split()


def test_every_error_is_named_in_pgqrs_sqla_errors() -> None:
    """Whichever private module defines it, an error is ``pgqrs_sqla.errors.X`` to a user:
    in a failed run's recorded type, a traceback and a pickle."""
    import pgqrs_sqla.errors as errors

    classes = [
        v for v in vars(errors).values() if isinstance(v, type) and issubclass(v, BaseException)
    ]
    assert len(classes) > 30
    assert {cls.__module__ for cls in classes} == {"pgqrs_sqla.errors"}
