"""The limited claim's statements, compiled for PostgreSQL and for SQLite (no database).

The queue row's lock is ``FOR NO KEY UPDATE`` on PostgreSQL (an enqueue's key-share lock
still passes) and nothing on SQLite (its ``BEGIN IMMEDIATE`` serialises); a workflow's
leases are counted through its RUNNING runs; candidates never leave out a message without a
key; the claim of chosen ids re-checks that each is still ready.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect

import pgqrs_sqla as pgqrs
from pgqrs_sqla import _catalog_write as cw, _limited_claim as lc
from pgqrs_sqla._limits import UNLIMITED, limit_columns
from pgqrs_sqla.dialects import dialect_for
from pgqrs_sqla.queue import _limited as ql

T = pgqrs.pgqrs_models().tables
DIALECTS = {"postgresql": postgresql.dialect(), "sqlite": sqlite.dialect()}


def sql(stmt: Any, dialect: Dialect) -> str:
    return " ".join(str(stmt.compile(dialect=dialect)).split())


@pytest.fixture(params=sorted(DIALECTS))
def dialect(request: pytest.FixtureRequest) -> Dialect:
    return DIALECTS[request.param]


def test_queue_lock_admits_key_share_on_postgresql(dialect: Dialect) -> None:
    text = sql(cw.lock_limits_stmt(T, dialect_for(dialect.name)), dialect)
    assert "FROM pgqrs_queues WHERE pgqrs_queues.id = " in text
    if dialect.name == "postgresql":
        assert text.endswith("FOR NO KEY UPDATE")
    else:
        assert "FOR " not in text


def test_leases_of_a_workflow_are_counted_through_running_runs(dialect: Dialect) -> None:
    text = sql(ql.leased_stmt(T, True), dialect)
    assert "JOIN pgqrs_messages ON pgqrs_messages.id = pgqrs_workflow_runs.message_id" in text
    assert "pgqrs_workflow_runs.status = " in text
    for leased in (
        "pgqrs_messages.archived_at IS NULL",
        "pgqrs_messages.consumer_worker_id IS NOT NULL",
        "pgqrs_messages.vt > ",
    ):
        assert leased in text
    assert "GROUP BY pgqrs_messages.concurrency_key" in text
    plain = sql(ql.leased_stmt(T, False), dialect)
    assert "pgqrs_workflow_runs" not in plain and "pgqrs_messages.queue_id = " in plain


def test_candidates_keep_keyless_messages_and_read_one_priority(dialect: Dialect) -> None:
    text = sql(ql.candidates_stmt(T), dialect)
    assert "pgqrs_messages.concurrency_key IS NULL OR" in text
    assert "NOT IN (" in text
    assert "max(pgqrs_messages.priority)" in text
    assert "ORDER BY pgqrs_messages.id LIMIT " in text
    assert " FOR " not in text  # chosen under the queue's lock; the claim re-checks


def test_claim_of_chosen_ids_rechecks_ready(dialect: Dialect) -> None:
    text = sql(ql.claim_ids_stmt(T), dialect)
    assert text.startswith("UPDATE pgqrs_messages SET")
    assert "pgqrs_messages.archived_at IS NULL" in text and "pgqrs_messages.vt <= " in text
    assert " RETURNING " in text


def test_claim_and_start_of_chosen_ids_is_one_postgresql_statement() -> None:
    text = sql(lc._claim_and_start(T), DIALECTS["postgresql"])
    assert text.startswith("WITH claimed AS (UPDATE pgqrs_messages")
    assert "started AS (UPDATE pgqrs_workflow_runs" in text


def test_limited_queues_stmt(dialect: Dialect) -> None:
    text = sql(lc.limited_queues_stmt(T, [1, 2]), dialect)
    for column in ("concurrency", "key_concurrency", "rate_limit"):
        assert f"pgqrs_queues.{column} IS NOT NULL" in text


def test_limit_columns() -> None:
    assert limit_columns() == {}
    assert limit_columns(concurrency=2, key_concurrency=UNLIMITED) == {
        "concurrency": 2,
        "key_concurrency": None,
    }
    assert limit_columns(rate_limit=(5, 60)) == {
        "rate_limit": 5,
        "rate_period": 60.0,
        "rate_window_start": None,
        "rate_window_count": 0,
    }
    assert limit_columns(rate_limit=UNLIMITED) == {
        "rate_limit": None,
        "rate_period": None,
        "rate_window_start": None,
    }
    with pytest.raises(pgqrs.InvalidLimit) as refused:
        limit_columns(key_concurrency=2_000_000)
    assert (refused.value.option, refused.value.value) == ("key_concurrency", 2_000_000)
