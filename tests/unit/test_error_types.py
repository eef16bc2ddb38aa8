"""Errors a type checker can see: every failure attribute is declared on its class, so user
code reading ``error.run_id`` passes ``mypy --strict``; at runtime each attribute is set (or
defaulted), the docstring is the default message, and an error survives pickling."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest

import pgqrs_sqla as pgqrs
from pgqrs_sqla.codec import check_json
from pgqrs_sqla.errors import MAX_DURATION_SECONDS, duration_seconds
from pgqrs_sqla.queue import validate_name

ROOT = Path(__file__).resolve().parents[2]

USER_CODE = """
from __future__ import annotations

from typing import Any

import pgqrs_sqla as pgqrs


def report(error: pgqrs.PgqrsError) -> str:
    message: str = error.message
    return message


def database(error: pgqrs.DatabaseError) -> tuple[str | None, int | None, bool]:
    return error.sqlstate, error.sqlite_code, error.transient


def lock(error: pgqrs.LockConflict) -> tuple[str | None, bool]:
    return error.sqlstate, isinstance(error, pgqrs.Conflict)


def configuration(error: pgqrs.ConfigurationError) -> tuple[str | None, str | None]:
    return error.url, error.schema


def validation(error: pgqrs.ValidationError) -> tuple[str | None, object]:
    return error.option, error.value


def name(error: pgqrs.InvalidName) -> object:
    return error.name


def payload(error: pgqrs.PayloadError) -> tuple[str, str, str | None, int | None, int | None]:
    return error.what, error.reason, error.path, error.size, error.limit


def duration(error: pgqrs.DurationError) -> tuple[str | None, object, float]:
    return error.option, error.value, error.limit


def not_found(
    q: pgqrs.QueueNotFound,
    d: pgqrs.DeadLetterNotFound,
    w: pgqrs.WorkflowNotFound,
    r: pgqrs.RunNotFound,
) -> tuple[str | None, list[int], str | None, int | None]:
    return q.queue, d.message_ids, w.workflow, r.run_id


def conflicts(
    n: pgqrs.WorkerNameInUse,
    b: pgqrs.QueueBusy,
    k: pgqrs.IdempotencyKeyNotVisible,
    v: pgqrs.WorkflowNotVisible,
) -> tuple[str, float | None, int, str | None, bool, str]:
    return n.worker, n.stale_in, b.leased, k.isolation_level, k.transaction_aborted, v.workflow


def transition(error: pgqrs.IllegalTransition) -> tuple[int | None, str | None, list[str], str | None]:
    return error.run_id, error.step_name, error.expected, error.actual


def lease(error: pgqrs.LeaseLost) -> tuple[int | None, int | None]:
    return error.message_id, error.token


def runs(
    f: pgqrs.RunFailed, c: pgqrs.RunCancelled, t: pgqrs.WaitTimeout, s: pgqrs.StepNameReused
) -> tuple[int | None, Any, str | None, int | None, pgqrs.RunStatus | None, str | None]:
    return f.run_id, f.error, f.traceback, c.run_id, t.status, s.step_name


def handler(error: pgqrs.HandlerError) -> tuple[object, int | None, str | None]:
    return error.handler, error.run_id, error.step_name


def decoding(error: pgqrs.DecodeError) -> tuple[int | None, str | None, str, str, str, object]:
    return error.run_id, error.step_name, error.what, error.path, error.expected, error.value
"""


def _mypy(tmp_path: Path, code: str) -> subprocess.CompletedProcess[str]:
    snippet = tmp_path / "user_code.py"
    snippet.write_text(code)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-error-summary",
            "--cache-dir",
            str(tmp_path / "mypy_cache"),
            str(snippet),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.timeout(900)
def test_user_code_reading_error_attributes_passes_mypy_strict(tmp_path: Path) -> None:
    clean = _mypy(tmp_path, USER_CODE)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    # The same check does catch a wrong attribute and a wrong type.
    wrong = _mypy(
        tmp_path,
        USER_CODE
        + "\n\ndef bad(error: pgqrs.RunNotFound) -> str:\n    return error.run_id\n"
        + "\n\ndef worse(error: pgqrs.QueueNotFound) -> object:\n    return error.run_id\n",
    )
    assert wrong.returncode == 1, wrong.stdout + wrong.stderr
    assert "[return-value]" in wrong.stdout and "[attr-defined]" in wrong.stdout, wrong.stdout


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
