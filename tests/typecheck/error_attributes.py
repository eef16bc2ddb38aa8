"""User code reading every error's typed attributes: ``mypy --strict`` passes it
(tests/unit/test_error_types.py)."""

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


def transition(
    error: pgqrs.IllegalTransition,
) -> tuple[int | None, str | None, list[str], str | None]:
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
