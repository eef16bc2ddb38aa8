"""Every statement builder, compiled for PostgreSQL and for SQLite: the SQL features each
one relies on are there (and the PostgreSQL-only ones only there). No database: the
integration tests run these statements; this says, in milliseconds, which clause broke.

The builders are imported from the modules that own their tables (queue: messages;
_runs_write: runs; _steps_write: steps; trigger: a run and its message in one statement).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect

import pgqrs_sqla as pgqrs
from pgqrs_sqla import _runs_write as rw, _steps_write as sw, queue as q, trigger as tr
from pgqrs_sqla.dialects import dialect_for
from pgqrs_sqla.models import ArchiveReason, RunStatus, StepStatus

T = pgqrs.pgqrs_models().tables
NOW = datetime(2025, 1, 1, tzinfo=UTC)
MSG = q.Message(1, 1, {}, 0, NOW, NOW, read_ct=3, failed_ct=0, worker_id=7)
DIALECTS = {"postgresql": postgresql.dialect(), "sqlite": sqlite.dialect()}

#: The lease fence of one delivery: its owner, its token, still live.
FENCE = (
    "pgqrs_messages.consumer_worker_id = ",
    "pgqrs_messages.read_ct = ",
    "pgqrs_messages.archived_at IS NULL",
)
#: The same fence for many deliveries at once: (id, token) pairs.
FENCE_MANY = ("(pgqrs_messages.id, pgqrs_messages.read_ct) IN (", *FENCE[::2])


def sql(stmt: Any, dialect: Dialect) -> str:
    return " ".join(str(stmt.compile(dialect=dialect)).split())


def where(text: str) -> str:
    """The statement from its first WHERE on (the fence lives there, not in SET)."""
    return text[text.index(" WHERE ") :]


@pytest.fixture(params=sorted(DIALECTS))
def dialect(request: pytest.FixtureRequest) -> Dialect:
    return DIALECTS[request.param]


def pg(dialect: Dialect) -> bool:
    return dialect.name == "postgresql"


# ---------------------------------------------------------------- queue.py


@pytest.mark.parametrize("across", [False, True])
def test_claim_skips_locked_rows_on_postgresql_only(dialect: Dialect, across: bool) -> None:
    text = sql(q.claim_stmt(T, dialect_for(dialect.name), across), dialect)
    assert ("FOR UPDATE SKIP LOCKED" in text) is pg(dialect)
    assert text.startswith("UPDATE pgqrs_messages SET") and " RETURNING " in text
    assert "pgqrs_messages.vt <= " in text and "pgqrs_messages.archived_at IS NULL" in text
    order = "ORDER BY pgqrs_messages.priority DESC, pgqrs_messages.id" if across else "max("
    assert order in text


@pytest.mark.parametrize("absolute", [False, True])
def test_enqueue_one_inserts_from_a_select_of_the_queue(dialect: Dialect, absolute: bool) -> None:
    stmt = q.enqueue_one_stmt(T, absolute)
    text = sql(stmt, dialect)
    assert text.startswith("INSERT INTO pgqrs_messages") and " SELECT " in text
    assert "pgqrs_queues.queue_name = " in text and " RETURNING " in text
    params = stmt.compile(dialect=dialect).params
    assert ("p_available_at" in params, "p_delay" in params) == (absolute, not absolute)


def test_enqueue_many_is_one_insert(dialect: Dialect) -> None:
    stmt, _ = q.enqueue_stmt(T, "q", [{"a": 1}, {"a": 2}], max_bytes=1 << 20)
    text = sql(stmt, dialect)
    assert text.startswith("WITH v(ord, payload) AS (VALUES (")  # one row per payload
    assert text.count("INSERT INTO pgqrs_messages") == 1 and "ORDER BY v.ord RETURNING" in text


@pytest.mark.parametrize(
    "build",
    [
        lambda: q.extend_stmt(T, MSG, 7, 30.0),
        lambda: q.archive_stmt(T, MSG, 7),
        lambda: q.release_stmt(T, MSG, 7, 5.0, failed=True, error="x"),
        lambda: q.fail_stmt(T, MSG, 7, 5.0, "x"),
    ],
    ids=["extend", "archive", "release", "fail"],
)
def test_single_lease_writes_are_fenced(dialect: Dialect, build: Any) -> None:
    text = sql(build(), dialect)
    assert all(part in where(text) for part in FENCE), text
    assert " RETURNING " in text


@pytest.mark.parametrize(
    "build", [q.extend_many_stmt, q.release_many_stmt, q.unclaim_many_stmt, q.archive_many_stmt]
)
def test_many_lease_writes_are_fenced_per_token(dialect: Dialect, build: Any) -> None:
    text = sql(build(T), dialect)
    assert all(part in where(text) for part in FENCE_MANY), text
    assert " RETURNING " in text


def test_fail_dead_letters_at_max_deliveries(dialect: Dialect) -> None:
    text = sql(q.fail_stmt(T, MSG, 7, 0.0, "x"), dialect)
    assert "SELECT pgqrs_queues.max_deliveries" in text and "CASE WHEN" in text


def test_replay_takes_dead_letters_only(dialect: Dialect) -> None:
    text = sql(q.replay_dead_stmt(T, 1, [4, 5]), dialect)
    assert "pgqrs_messages.archive_reason = " in text and "pgqrs_messages.id IN" in text
    params = q.replay_dead_stmt(T, 1, None).compile(dialect=dialect).params
    assert ArchiveReason.DEAD.value in params.values() and params["archived_at"] is None


# ---------------------------------------------------------------- a run's delivery


def test_refresh_lease_never_shortens_it(dialect: Dialect) -> None:
    text = sql(q.refresh_lease_stmt(T), dialect)
    assert all(part in where(text) for part in FENCE)
    assert "CASE WHEN (pgqrs_messages.vt > " in text and "AS lease_vt" in text


@pytest.mark.parametrize("status", list(StepStatus))
def test_step_upsert_is_fenced_and_follows_the_state_machine(
    dialect: Dialect, status: StepStatus
) -> None:
    text = sql(sw.step_upsert_stmt(T, dialect.name, status), dialect)
    assert "ON CONFLICT (run_id, step_name) DO UPDATE" in text
    assert "WHERE pgqrs_workflow_steps.status IN (" in text
    assert all(part in text for part in FENCE)
    assert ("FOR SHARE" in text) is pg(dialect)  # the fence locks the message row
    assert ("cancel_requested" in text) is (status is StepStatus.SUCCESS)


@pytest.mark.parametrize("lock", [True, False])
def test_run_update_is_fenced(dialect: Dialect, lock: bool) -> None:
    locking = dialect_for(dialect.name) if lock else None  # no dialect: an unlocked fence
    text = sql(rw.run_update_stmt(T, RunStatus.SUCCESS, True, locking), dialect)
    assert "pgqrs_workflow_runs.status IN (" in text and "finished_at=" in text
    assert all(part in where(text) for part in FENCE)
    assert ("FOR SHARE" in text) is (lock and pg(dialect))


def test_a_delivery_s_archive_is_fenced(dialect: Dialect) -> None:
    text = sql(q.archive_delivery_stmt(T), dialect)
    assert all(part in where(text) for part in FENCE)
    params = q.archive_delivery_stmt(T).compile().params
    assert {"p_msg_id", "p_worker_id", "p_token"} <= set(params)


def test_finish_archives_and_ends_the_run_in_one_statement() -> None:
    text = sql(rw.finish_stmt(T, RunStatus.SUCCESS), DIALECTS["postgresql"])
    assert text.startswith("WITH archived AS (UPDATE pgqrs_messages")
    assert (
        "UPDATE pgqrs_workflow_runs" in text and "EXISTS (SELECT archived.id FROM archived)" in text
    )
    assert "FOR SHARE" not in text  # the run's fence must not lock a row this statement changes


# ---------------------------------------------------------------- starting and ending runs


def test_start_sets_running_and_returns_the_clock(dialect: Dialect) -> None:
    text = sql(rw.start_stmt(T), dialect)
    assert text.startswith("UPDATE pgqrs_workflow_runs SET") and "AS db_now" in text
    assert "coalesce(pgqrs_workflow_runs.started_at" in text


@pytest.mark.parametrize("across", [False, True])
def test_claim_and_start_is_one_postgresql_statement(across: bool) -> None:
    text = sql(
        rw.claim_and_start_stmt(T, dialect_for("postgresql"), across), DIALECTS["postgresql"]
    )
    assert text.startswith("WITH claimed AS (UPDATE pgqrs_messages")
    assert "started AS (UPDATE pgqrs_workflow_runs" in text and "FOR UPDATE SKIP LOCKED" in text


def test_a_dead_letter_ends_its_run_in_error_if_not_ended(dialect: Dialect) -> None:
    text = sql(rw.dead_run_stmt(T, 1, "dead"), dialect)
    assert "pgqrs_workflow_runs.message_id = " in text
    assert "pgqrs_workflow_runs.status IN (" in text and "finished_at=" in text


# ---------------------------------------------------------------- trigger.py


def test_trigger_is_one_postgresql_statement_with_its_notify() -> None:
    text = sql(tr.pg_trigger_stmt(T, dialect_for("postgresql")), DIALECTS["postgresql"])
    assert text.startswith("WITH m AS (INSERT INTO pgqrs_messages")
    assert "ON CONFLICT (workflow_id, idempotency_key) DO NOTHING" in text
    assert "pg_notify(" in text


def test_trigger_statements_for_sqlite(dialect: Dialect) -> None:
    message = sql(q.workflow_message_insert_stmt(T), dialect)
    run = sql(tr.run_insert_stmt(T, dialect.name), dialect)
    assert message.startswith("INSERT INTO pgqrs_messages") and " RETURNING " in message
    assert run.startswith("INSERT INTO pgqrs_workflow_runs")
    assert "ON CONFLICT (workflow_id, idempotency_key) DO NOTHING" in run
