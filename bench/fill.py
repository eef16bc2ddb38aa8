"""Bulk history for the scale benchmarks: rows as the real code leaves them, made in a few statements.

:func:`fill` writes, into a store's (installed) tables, with ``INSERT … SELECT`` over a
number series (``generate_series`` on PostgreSQL, a recursive CTE on SQLite):

* ``finished`` runs of workflow ``wf`` that ended — 9 in 10 ``SUCCESS`` with an output, 1 in 10
  ``ERROR`` with an error record — each with its message archived (``done``, delivered once
  by one of :data:`HISTORIC_WORKERS` stopped worker rows) and :data:`STEPS` steps (the last
  one ``ERROR`` in a failed run), finished ``age`` seconds ago and earlier, spread over
  ``span`` seconds;
* ``finished`` archived messages of the plain queue ``plain``, delivered the same way;
* ``ready`` runs of ``wf`` queued (``QUEUED``, message live and visible), and ``ready`` plain
  messages ready in ``plain``;

then ``ANALYZE`` (PostgreSQL: ``VACUUM (ANALYZE)``, what autovacuum would have done for a
table that grew to this size). Ids are explicit, after the tables' current largest, and the
PostgreSQL sequences are moved past them, so the real code's next insert follows on.

``tests/integration/test_bench_fill.py`` checks on both backends that the real code accepts
the rows: a prune deletes exactly the expired ones, a claim takes a ready one.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    FromClause,
    Integer,
    Select,
    String,
    Table,
    case,
    cast,
    func,
    insert,
    literal,
    null,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncConnection

import pgqrs_sqla as pgqrs
from pgqrs_sqla.dialects import JSONType, utcnow_plus
from pgqrs_sqla.models import ArchiveReason, RunStatus, StepStatus, Tables, WorkerStatus

WORKFLOW = "wf"
PLAIN = "plain"
#: steps per finished run
STEPS = 2
#: stopped worker rows that delivered the history (one in ``HISTORIC_WORKERS`` each)
HISTORIC_WORKERS = 20
#: the error record of a failed run (and, with ``attempts``, of its failed step)
_ERROR = {"step": "s1", "type": "builtins.ValueError", "message": "bulk history"}


@dataclass(frozen=True)
class Filled:
    """What :func:`fill` wrote, and how long it took."""

    finished: int
    ready: int
    rows: int
    insert_seconds: float
    analyze_seconds: float

    @property
    def seconds(self) -> float:
        return self.insert_seconds + self.analyze_seconds


async def prepare(store: pgqrs.Store) -> None:
    """The workflow and the plain queue the history belongs to."""
    await store.create_workflow(WORKFLOW)
    await store.create_queue(PLAIN)


def _series(conn: AsyncConnection, n: int) -> FromClause:
    """Rows ``i`` = 1 … n."""
    if conn.dialect.name == "postgresql":
        return func.generate_series(1, n).table_valued("i", name="s").render_derived()
    s = select(literal(1, Integer).label("i")).cte("s", recursive=True)
    return s.union_all(select(s.c.i + 1).where(s.c.i < n))


def _json_object(conn: AsyncConnection, key: str, value: ColumnElement[Any]) -> ColumnElement[Any]:
    if conn.dialect.name == "postgresql":
        return func.jsonb_build_object(key, value)
    return func.json_object(key, value)


def _const_json(value: Any) -> ColumnElement[Any]:
    return literal(value, JSONType)


async def _max_id(conn: AsyncConnection, table: Table) -> int:
    return int((await conn.execute(select(func.coalesce(func.max(table.c.id), 0)))).scalar_one())


async def _insert(conn: AsyncConnection, table: Table, source: Any) -> None:
    cols = [c.name for c in source.selected_columns]
    await conn.execute(insert(table).from_select(cols, source))


async def fill(
    store: pgqrs.Store,
    *,
    finished: int,
    ready: int,
    age: float = 3600.0,
    span: float = 6 * 86400.0,
    workers_stopped: float | None = None,
) -> Filled:
    """Write the history and the ready work (see the module's docstring); after :func:`prepare`.

    ``workers_stopped``: how long ago the historic workers stopped (default: before the
    oldest run ended).
    """
    t = store.tables
    start = time.perf_counter()
    async with _bulk(store) as conn:
        ids = {
            name: await _max_id(conn, getattr(t, name)) for name in ("messages", "runs", "steps")
        }
        wf = (
            await conn.execute(
                select(t.workflows.c.id, t.workflows.c.queue_id).where(
                    t.workflows.c.workflow_name == WORKFLOW
                )
            )
        ).one()
        plain = (
            await conn.execute(select(t.queues.c.id).where(t.queues.c.queue_name == PLAIN))
        ).scalar_one()
        first_worker = await _max_id(conn, t.workers) + 1
        stopped = age + span if workers_stopped is None else workers_stopped
        await _workers(conn, t, first_worker, stopped)
        if finished:
            await _history(conn, t, ids, wf, plain, first_worker, finished, age, span)
        if ready:
            await _ready(conn, t, ids, wf, plain, finished, ready)
        if conn.dialect.name == "postgresql":
            for name in ("messages", "runs", "steps", "workers"):
                table = getattr(t, name)
                await conn.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{table.fullname}', 'id'), "
                        f"(SELECT max(id) FROM {table.fullname}))"
                    )
                )
    inserted = time.perf_counter()
    await analyze(store)
    rows = HISTORIC_WORKERS + finished * (3 + STEPS) + ready * 3
    return Filled(finished, ready, rows, inserted - start, time.perf_counter() - inserted)


@contextlib.asynccontextmanager
async def _bulk(store: pgqrs.Store) -> AsyncIterator[AsyncConnection]:
    """One transaction for the whole fill, without the row-by-row foreign-key checks.

    The rows are made to satisfy every foreign key (``test_bench_fill`` checks that the real
    code accepts them); checking each one took a 1 M fill from 60 s to 270 s. On SQLite the pragma
    holds for the connection, which is thrown away afterwards, never back in the pool.
    """
    if store.dialect.name == "postgresql":
        async with store.engine.begin() as conn:
            await conn.execute(text("SET LOCAL synchronous_commit = off"))
            await conn.execute(text("SET LOCAL session_replication_role = replica"))
            yield conn
        return
    async with store.engine.connect() as conn:
        try:
            # Straight to the driver: SQLAlchemy would begin a transaction first, where
            # these pragmas do nothing or are refused.
            raw: Any = (await conn.get_raw_connection()).driver_connection
            for pragma in ("foreign_keys = OFF", "cache_size = -262144", "synchronous = OFF"):
                await raw.execute(f"PRAGMA {pragma}")
            async with conn.begin():
                yield conn
        finally:
            await conn.invalidate()


async def analyze(store: pgqrs.Store) -> None:
    """Fresh planner statistics (PostgreSQL: and the visibility map) for every pgqrs table."""
    t = store.tables
    names = [
        tbl.fullname for tbl in (t.queues, t.workers, t.workflows, t.messages, t.runs, t.steps)
    ]
    if store.dialect.name == "postgresql":
        async with store.engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(f"VACUUM (ANALYZE) {', '.join(names)}"))
    else:
        async with store.engine.begin() as conn:
            await conn.execute(text("ANALYZE"))


async def _workers(conn: AsyncConnection, t: Tables, first: int, ago: float) -> None:
    w, s = t.workers, _series(conn, HISTORIC_WORKERS)
    source = select(
        (s.c.i + (first - 1)).label("id"),
        (literal("bench-historic-") + cast(s.c.i + (first - 1), String)).label("worker_name"),
        literal("bench-host").label("hostname"),
        literal(WorkerStatus.STOPPED.value).label("status"),
        utcnow_plus(literal(-ago) - s.c.i).label("started_at"),
        utcnow_plus(literal(-ago) - s.c.i).label("heartbeat_at"),
        utcnow_plus(literal(-ago) - s.c.i).label("stopped_at"),
        literal(5.0).label("heartbeat_interval"),
    ).select_from(s)
    await _insert(conn, w, source)


def _messages(
    conn: AsyncConnection,
    s: Any,
    first: int,
    queue_id: int,
    payload: bool,
    at: ColumnElement[float],
    worker: ColumnElement[int] | None = None,
) -> Select[Any]:
    """Messages ``first + i`` of ``queue_id``, enqueued ``at`` seconds from now (negative).

    Ready ones; or, with ``worker``, delivered once by it and archived (done) 50 ms later.
    """
    columns: list[Any] = [
        (s.c.i + first).label("id"),
        literal(queue_id).label("queue_id"),
        (_json_object(conn, "i", s.c.i) if payload else null()).label("payload"),
        literal(0).label("priority"),
        utcnow_plus(at).label("enqueued_at"),
        literal(0).label("failed_ct"),
    ]
    if worker is None:
        return select(*columns, utcnow_plus(at).label("vt"), literal(0).label("read_ct"))
    return select(
        *columns,
        utcnow_plus(at + 30.04).label("vt"),
        literal(1).label("read_ct"),
        worker.label("consumer_worker_id"),
        utcnow_plus(at + 0.04).label("dequeued_at"),
        utcnow_plus(at + 0.05).label("archived_at"),
        literal(ArchiveReason.DONE.value).label("archive_reason"),
    )


async def _history(
    conn: AsyncConnection,
    t: Tables,
    ids: dict[str, int],
    wf: Any,
    plain: int,
    first_worker: int,
    n: int,
    age: float,
    span: float,
) -> None:
    m, r, st = t.messages, t.runs, t.steps
    step = span / n
    # Run i (1 … n) ended ``age + (n - i) * step`` seconds ago, 50 ms after it was created.
    s = _series(conn, n)
    ended = literal(-age) - (literal(n) - s.c.i) * literal(step)
    failed = s.c.i % 10 == 0
    worker = literal(first_worker) + s.c.i % HISTORIC_WORKERS

    first = ids["messages"]
    await _insert(conn, m, _messages(conn, s, first, wf.queue_id, False, ended - 0.05, worker))
    await _insert(conn, m, _messages(conn, s, first + n, plain, True, ended - 0.05, worker))
    run = select(
        (s.c.i + ids["runs"]).label("id"),
        literal(wf.id).label("workflow_id"),
        (s.c.i + ids["messages"]).label("message_id"),
        case((failed, RunStatus.ERROR.value), else_=RunStatus.SUCCESS.value).label("status"),
        _json_object(conn, "order", s.c.i).label("input"),
        case((failed, null()), else_=_json_object(conn, "ok", s.c.i)).label("output"),
        case((failed, _const_json(_ERROR)), else_=null()).label("error"),
        literal(False).label("cancel_requested"),
        utcnow_plus(ended - 0.05).label("created_at"),
        utcnow_plus(ended - 0.01).label("started_at"),
        utcnow_plus(ended).label("updated_at"),
        utcnow_plus(ended).label("finished_at"),
    ).select_from(s)
    await _insert(conn, r, run)
    for k in range(STEPS):
        last = k == STEPS - 1
        error = failed if last else literal(False)
        step_rows = select(
            (ids["steps"] + (s.c.i - 1) * STEPS + (k + 1)).label("id"),
            (s.c.i + ids["runs"]).label("run_id"),
            literal(f"s{k}").label("step_name"),
            case((error, StepStatus.ERROR.value), else_=StepStatus.SUCCESS.value).label("status"),
            case((error, null()), else_=_json_object(conn, "step", s.c.i)).label("output"),
            case((error, _const_json({**_ERROR, "attempts": 1})), else_=null()).label("error"),
            literal(1).label("attempts"),
            utcnow_plus(ended - 0.01 + 0.001 * k).label("started_at"),
            utcnow_plus(ended - 0.01 + 0.001 * k + 0.0005).label("finished_at"),
            case((error, 2), else_=1).label("next_delivery"),
        ).select_from(s)
        await _insert(conn, st, step_rows)


async def _ready(
    conn: AsyncConnection,
    t: Tables,
    ids: dict[str, int],
    wf: Any,
    plain: int,
    finished: int,
    n: int,
) -> None:
    m, r = t.messages, t.runs
    s = _series(conn, n)
    base = ids["messages"] + 2 * finished
    queued = literal(-1.0) - (literal(n) - s.c.i) * literal(0.0001)

    await _insert(conn, m, _messages(conn, s, base, wf.queue_id, False, queued))
    await _insert(conn, m, _messages(conn, s, base + n, plain, True, queued))
    run = select(
        (s.c.i + ids["runs"] + finished).label("id"),
        literal(wf.id).label("workflow_id"),
        (s.c.i + base).label("message_id"),
        literal(RunStatus.QUEUED.value).label("status"),
        _json_object(conn, "order", s.c.i).label("input"),
        literal(False).label("cancel_requested"),
        utcnow_plus(queued).label("created_at"),
        utcnow_plus(queued).label("updated_at"),
    ).select_from(s)
    await _insert(conn, r, run)
