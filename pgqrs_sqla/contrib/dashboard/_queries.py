"""The dashboard's reads: plain SELECTs over the pgqrs tables, nothing written here.

Every action goes through the Store (``_actions.py``); these only look. Lists are bounded
(``LIMIT``) and paginated by key (``id < :before``), never by ``OFFSET``, so a page costs the
same on the millionth run as on the first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, String, Text, case, cast, func, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import expression
from sqlalchemy.sql.compiler import SQLCompiler

from ...dialects import utcnow, utcnow_plus
from ...models import ArchiveReason, RunStatus
from ...store import Store

#: the runs list's page size
PAGE_SIZE = 50


class _minute(expression.FunctionElement[str]):
    """A timestamp cut to its minute, as text ``YYYY-MM-DD HH:MM`` (the chart's buckets)."""

    type = String()
    inherit_cache = True


@compiles(_minute)
def _minute_default(element: _minute, compiler: SQLCompiler, **kw: Any) -> str:
    return f"to_char({compiler.process(element.clauses, **kw)} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI')"


@compiles(_minute, "sqlite")
def _minute_sqlite(element: _minute, compiler: SQLCompiler, **kw: Any) -> str:
    return f"substr({compiler.process(element.clauses, **kw)}, 1, 16)"


def aware(value: datetime | None) -> datetime | None:
    """``value`` as UTC-aware (SQLite hands back naive UTC timestamps)."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


async def db_now(store: Store) -> datetime:
    """The database clock (what every stored time was written by)."""
    async with store._read() as conn:
        now = (await conn.execute(select(utcnow()))).scalar_one()
    return _as_time(now)  # SQLite's is strftime text


# ---------------------------------------------------------------- overview


@dataclass(frozen=True)
class Depth:
    """One queue's (or workflow's) counts on the overview."""

    name: str
    kind: str  # "workflow" or "queue"
    #: the workflow's id (0 for a plain queue)
    id: int
    ready: int
    leased: int
    delayed: int
    waiting: int | None
    dead: int
    oldest_ready_age: float | None
    by_status: dict[str, int]


async def depths(store: Store) -> list[Depth]:
    """Each workflow, then each plain queue, with its message counts and waiting runs."""
    stats = await _message_counts(store)
    workflows = await store.list_workflows()
    r, w = store.tables.runs, store.tables.workflows
    unfinished = [s.value for s in RunStatus if not s.terminal]
    # One count per workflow and status, each a range of pgqrs_runs_wf_status_ix (17 ms at
    # a million runs; a GROUP BY over `status IN (...)` read the whole table: 350 ms).
    counts = select(
        w.c.id,
        *(
            select(func.count())
            .where(r.c.workflow_id == w.c.id, r.c.status == status)
            .scalar_subquery()
            for status in unfinished
        ),
    )
    by_workflow: dict[int, dict[str, int]] = {}
    async with store._read() as conn:
        for workflow_id, *ns in (await conn.execute(counts)).all():
            by_workflow[workflow_id] = {s: int(n) for s, n in zip(unfinished, ns, strict=True) if n}
    out: list[Depth] = []
    queue_of_workflow = set()
    for wf in workflows:
        st = stats.get(wf.name)
        queue_of_workflow.add(wf.name)
        runs = by_workflow.get(wf.id, {})
        out.append(
            Depth(
                wf.name,
                "workflow",
                wf.id,
                st.ready if st else 0,
                st.leased if st else 0,
                st.delayed if st else 0,
                runs.get(RunStatus.PAUSED.value, 0),
                st.dead if st else 0,
                st.oldest_ready_age if st else None,
                runs,
            )
        )
    for name, st in stats.items():
        if name not in queue_of_workflow:
            out.append(
                Depth(
                    name,
                    "queue",
                    0,
                    st.ready,
                    st.leased,
                    st.delayed,
                    None,
                    st.dead,
                    st.oldest_ready_age,
                    {},
                )
            )
    return out


@dataclass(frozen=True)
class _Counts:
    name: str
    ready: int = 0
    leased: int = 0
    delayed: int = 0
    dead: int = 0
    oldest_ready_age: float | None = None


async def _message_counts(store: Store) -> dict[str, _Counts]:
    """Each queue's live counts (a range of the partial ready index) and its dead letters.

    Not ``store.queue_stats()``: that also counts every archived message, a read of the
    whole table (1.8 s at a million archived messages, against 0.3 s for this; the dead
    count is the one part that still reads the archived rows: no index holds the reason).
    """
    m, t = store.tables.messages, store.tables.queues
    now = utcnow()

    def count(cond: ColumnElement[bool]) -> ColumnElement[int]:
        return func.coalesce(func.sum(case((cond, 1), else_=0)), 0)

    ready = m.c.vt <= now
    live = (
        select(
            m.c.queue_id,
            count(ready),
            count(m.c.consumer_worker_id.is_not(None) & (m.c.vt > now)),
            count(m.c.consumer_worker_id.is_(None) & (m.c.vt > now)),
            func.min(case((ready, m.c.enqueued_at))),
            now,
        )
        .where(m.c.archived_at.is_(None))
        .group_by(m.c.queue_id)
    )
    dead = (
        select(m.c.queue_id, func.count())
        .where(m.c.archive_reason == ArchiveReason.DEAD.value)
        .group_by(m.c.queue_id)
    )
    async with store._read() as conn:
        names = dict((await conn.execute(select(t.c.id, t.c.queue_name))).all())
        found = {qid: _Counts(name) for qid, name in names.items()}
        for qid, n_ready, n_leased, n_delayed, oldest, clock in (await conn.execute(live)).all():
            if qid in found:
                age = None
                if oldest is not None:
                    age = (_as_time(clock) - _as_time(oldest)).total_seconds()
                found[qid] = _Counts(
                    names[qid], int(n_ready), int(n_leased), int(n_delayed), 0, age
                )
        for qid, n_dead in (await conn.execute(dead)).all():
            if qid in found:
                c = found[qid]
                found[qid] = _Counts(
                    c.name, c.ready, c.leased, c.delayed, int(n_dead), c.oldest_ready_age
                )
    return {c.name: c for c in sorted(found.values(), key=lambda c: c.name)}


def _as_time(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    result = aware(value)
    assert result is not None
    return result


@dataclass(frozen=True)
class Minute:
    """Runs that ended in one minute of the last hour."""

    label: str
    success: int
    error: int
    cancelled: int

    @property
    def total(self) -> int:
        """Every run that ended that minute."""
        return self.success + self.error + self.cancelled


async def last_hour(store: Store, now: datetime) -> dict[int, list[Minute]]:
    """Per workflow id, the last 60 minutes, oldest first: runs that ended in each, by status.

    One range of ``pgqrs_runs_finished_ix`` (finished runs by ``finished_at``).
    """
    r = store.tables.runs
    bucket = _minute(r.c.finished_at)
    stmt = (
        select(r.c.workflow_id, bucket, r.c.status, func.count())
        .where(r.c.finished_at >= utcnow_plus(-3600.0))
        .group_by(r.c.workflow_id, bucket, r.c.status)
    )
    async with store._read() as conn:
        rows = (await conn.execute(stmt)).all()
    found: dict[int, dict[tuple[str, str], int]] = {}
    for workflow_id, b, status, n in rows:
        found.setdefault(workflow_id, {})[(str(b), status)] = int(n)
    start = now.astimezone(UTC).replace(second=0, microsecond=0) - timedelta(minutes=59)
    labels = [(start + timedelta(minutes=i)).strftime("%Y-%m-%d %H:%M") for i in range(60)]
    return {
        workflow_id: [
            Minute(
                label,
                counts.get((label, RunStatus.SUCCESS.value), 0),
                counts.get((label, RunStatus.ERROR.value), 0),
                counts.get((label, RunStatus.CANCELLED.value), 0),
            )
            for label in labels
        ]
        for workflow_id, counts in found.items()
    } | {0: [Minute(label, 0, 0, 0) for label in labels]}


def summed(series: list[list[Minute]]) -> list[Minute]:
    """Minute by minute, the sum of ``series`` (each the same 60 minutes)."""
    return [
        Minute(
            ms[0].label,
            sum(m.success for m in ms),
            sum(m.error for m in ms),
            sum(m.cancelled for m in ms),
        )
        for ms in zip(*series, strict=True)
    ]


# ---------------------------------------------------------------- runs


@dataclass(frozen=True)
class RunFilter:
    """The runs list's filters (all optional) and its page: runs with ``id < before``."""

    workflow: str | None = None
    status: RunStatus | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    key: str | None = None
    text: str | None = None
    before: int | None = None
    limit: int = PAGE_SIZE


@dataclass(frozen=True)
class RunRow:
    """One line of the runs list."""

    id: int
    workflow: str
    status: str
    created_at: datetime | None
    finished_at: datetime | None
    idempotency_key: str | None
    error: str | None
    parent_run_id: int | None


def _error_text(error: Any) -> str | None:
    if error is None:
        return None
    if isinstance(error, dict):
        return f"{error.get('type', 'error')}: {error.get('message', '')}"
    return str(error)


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _run_rows(store: Store) -> Select[Any]:
    """The columns of a run's row in a list (:class:`RunRow`), with its workflow's name."""
    r, w = store.tables.runs, store.tables.workflows
    return select(
        r.c.id,
        w.c.workflow_name,
        r.c.status,
        r.c.created_at,
        r.c.finished_at,
        r.c.idempotency_key,
        r.c.error,
        r.c.parent_run_id,
    ).select_from(r.join(w, w.c.id == r.c.workflow_id))


def runs_select(store: Store, f: RunFilter) -> Select[Any]:
    """The runs list's statement: newest first, one page past ``before`` (plus one row).

    The extra row says whether a next page exists.
    """
    r, w = store.tables.runs, store.tables.workflows
    stmt = _run_rows(store).order_by(r.c.id.desc()).limit(f.limit + 1)
    if f.workflow:
        stmt = stmt.where(w.c.workflow_name == f.workflow)
    if f.status is not None:
        stmt = stmt.where(r.c.status == f.status.value)
    if f.created_from is not None:
        stmt = stmt.where(r.c.created_at >= f.created_from)
    if f.created_to is not None:
        stmt = stmt.where(r.c.created_at < f.created_to)
    if f.key:
        stmt = stmt.where(r.c.idempotency_key == f.key)
    if f.text:
        stmt = stmt.where(cast(r.c.error, Text).ilike(_like(f.text), escape="\\"))
    if f.before is not None:
        stmt = stmt.where(r.c.id < f.before)
    return stmt


async def runs_page(store: Store, f: RunFilter) -> tuple[list[RunRow], int | None]:
    """A page of runs and the ``before`` of the next page (None: this is the last)."""
    async with store._read() as conn:
        rows = (await conn.execute(runs_select(store, f))).all()
    found = [
        RunRow(
            row.id,
            row.workflow_name,
            row.status,
            aware(row.created_at),
            aware(row.finished_at),
            row.idempotency_key,
            _error_text(row.error),
            row.parent_run_id,
        )
        for row in rows[: f.limit]
    ]
    more = len(rows) > f.limit
    return found, (found[-1].id if more and found else None)


async def summaries(store: Store, ids: list[int]) -> dict[int, RunRow]:
    """Short rows for runs ``ids`` (a run's parent and children)."""
    if not ids:
        return {}
    r = store.tables.runs
    stmt = _run_rows(store).where(r.c.id.in_(ids[:500]))
    async with store._read() as conn:
        rows = (await conn.execute(stmt)).all()
    return {
        row.id: RunRow(
            row.id,
            row.workflow_name,
            row.status,
            aware(row.created_at),
            aware(row.finished_at),
            row.idempotency_key,
            _error_text(row.error),
            row.parent_run_id,
        )
        for row in rows
    }


@dataclass(frozen=True)
class StepRow:
    """A step or wait record of a run, as the timeline draws it."""

    name: str
    status: str
    kind: str | None
    attempts: int
    started_at: datetime | None
    finished_at: datetime | None
    wake_at: datetime | None
    wait_for: str | None
    output: Any
    error: Any


async def steps_of(store: Store, run_id: int) -> list[StepRow]:
    """The records of run ``run_id`` in the order they were first written."""
    s = store.tables.steps
    stmt = select(s).where(s.c.run_id == run_id).order_by(s.c.id)
    async with store._read() as conn:
        rows = (await conn.execute(stmt)).all()
    return [
        StepRow(
            row.step_name,
            row.status,
            row.kind,
            row.attempts,
            aware(row.started_at),
            aware(row.finished_at),
            aware(row.wake_at),
            row.wait_for,
            row.output,
            row.error,
        )
        for row in rows
    ]


@dataclass(frozen=True)
class EventRow:
    """An event sent to a run."""

    name: str
    payload: Any
    created_at: datetime | None
    consumed_by: str | None


async def events_of(store: Store, run_id: int, limit: int = 100) -> list[EventRow]:
    """The newest events sent to run ``run_id`` (consumed or not)."""
    e = store.tables.events
    stmt = select(e).where(e.c.run_id == run_id).order_by(e.c.id.desc()).limit(limit)
    async with store._read() as conn:
        rows = (await conn.execute(stmt)).all()
    return [
        EventRow(row.event_name, row.payload, aware(row.created_at), row.consumed_by)
        for row in rows
    ]


# ---------------------------------------------------------------- workers, dead letters


async def in_flight(store: Store, limit: int = 1000) -> dict[int, list[tuple[int, str]]]:
    """Per worker id: the runs it holds a live lease on now (run id, workflow)."""
    m, r, w = store.tables.messages, store.tables.runs, store.tables.workflows
    stmt = (
        select(m.c.consumer_worker_id, r.c.id, w.c.workflow_name)
        .select_from(m.join(r, r.c.message_id == m.c.id).join(w, w.c.id == r.c.workflow_id))
        .where(
            m.c.archived_at.is_(None),
            m.c.consumer_worker_id.is_not(None),
            m.c.vt > utcnow(),
        )
        .order_by(r.c.id)
        .limit(limit)
    )
    held: dict[int, list[tuple[int, str]]] = {}
    async with store._read() as conn:
        for worker_id, run_id, workflow in (await conn.execute(stmt)).all():
            held.setdefault(worker_id, []).append((run_id, workflow))
    return held


async def runs_of_messages(store: Store, message_ids: list[int]) -> dict[int, int]:
    """The run each of ``message_ids`` carries, for the ones that carry a run."""
    if not message_ids:
        return {}
    r = store.tables.runs
    stmt = select(r.c.message_id, r.c.id).where(r.c.message_id.in_(message_ids))
    async with store._read() as conn:
        return {mid: rid for mid, rid in (await conn.execute(stmt)).all()}
