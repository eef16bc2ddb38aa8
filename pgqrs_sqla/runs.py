"""Workflow definitions and run control: create_workflow, get/list/wait/cancel/retry runs.

Also the external-event API (``update_step`` + ``resume_run``) with its sync twins.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.engine import Connection

from ._catalog_write import (
    define_workflow as define_workflow,  # the trigger's, and its home before _catalog_write
    mark_served_stmt,
    queue_max_deliveries_stmt,
    workflow_policy_stmt,
)
from ._core import StoreCore
from ._db import HUB, AsyncTarget, SyncTarget, run_sync
from ._message import check_max_deliveries
from ._runs_write import cancel_now_stmt, request_cancel_stmt, retry_run_stmt
from ._steps_write import external_step_upsert, reset_failed_steps_stmt
from .codec import JsonDefault, check_json, check_text
from .dialects import aware
from .errors import (
    IllegalTransition,
    RunCancelled,
    RunFailed,
    RunNotFound,
    ValidationError,
    WaitTimeout,
    WorkflowNotFound,
    duration_seconds,
)
from .models import RunStatus, StepStatus, Tables
from .queue import (
    archive_idle_stmt,
    requeue_stmt,
    validate_name,
    wake_unleased_stmt,
)
from .retry import RetryPolicy as RetryPolicy  # its home before pgqrs_sqla.retry
from .states import NON_TERMINAL_RUN, run_may_become, step_may_become

RUN_DONE_CHANNEL = "pgqrs:run-done"
#: payload: the run id. Also a PostgreSQL NOTIFY channel, so other processes hear it at once.
CANCEL_CHANNEL = "pgqrs_cancel"


@dataclass(frozen=True)
class WorkflowInfo:
    """A registered workflow: its ``id``, ``name``, queue and default retry policy.

    ``queue_id`` is the queue its runs travel on, ``retry`` its default retry policy for
    transient step errors (see :meth:`Store.create_workflow`).
    """

    id: int
    name: str
    queue_id: int
    retry: RetryPolicy


@dataclass(frozen=True)
class StepInfo:
    """A step of a run as recorded: its status, output or error, attempts and times.

    The times are ``started_at`` and ``finished_at``.

    ``attempts`` counts the deliveries of the run that ran the step's body, including the
    recorded one: each transient error or pause it recorded, each body cut short by its
    worker's death (SIGKILL, a lost lease, a shutdown that cancelled it) and its success. It
    is the figure ``RetryPolicy.max_attempts`` is compared with. Nothing is written when a
    body starts: steps of a run run one after another, so every delivery since the step could
    first be reached is counted for it — since its own last record (an error, a pause), else
    since the delivery that recorded the step before it (the one after, when that step
    paused). It is approximate where that does not hold: steps run concurrently
    (``asyncio.gather`` in one handler) share the deliveries that died before either was
    recorded, so one may be under-counted; a delivery that ended before the step's body
    began — it died right after recording the step before it or while replaying earlier
    steps, or the handler itself raised ``Pause`` or an error between steps — is counted
    for it. A step recorded by ``update_step`` has ``attempts`` 0 (or what its earlier
    records said).
    """

    name: str
    status: StepStatus
    output: Any
    error: Any
    attempts: int
    started_at: datetime | None
    finished_at: datetime | None
    #: None for a step; ``sleep`` or ``event`` for a durable wait (PAUSED while it waits)
    kind: str | None = None
    #: a wait's deadline (a timer's end, an event wait's timeout); None: none
    wake_at: datetime | None = None


@dataclass(frozen=True)
class RunInfo:
    """A workflow run as recorded: its status, input, output or error, and its steps.

    Also its ``idempotency_key``, whether a cancel was requested (``cancel_requested``: a RUNNING
    run stops at its next step boundary), the ``message_id`` of the queue message carrying it and
    its timestamps. ``steps`` are filled in by :meth:`Store.get_run`; :meth:`Store.list_runs`
    leaves them empty.
    """

    id: int
    workflow: str
    status: RunStatus
    input: Any
    output: Any
    error: Any
    idempotency_key: str | None
    cancel_requested: bool
    message_id: int | None
    created_at: datetime
    started_at: datetime | None
    updated_at: datetime
    finished_at: datetime | None
    steps: list[StepInfo] = field(default_factory=list)


def _policy(row: Any) -> RetryPolicy:
    """A workflow row's retry policy (``backoff_jitter`` NULL: written before it existed)."""
    return RetryPolicy(
        row.max_attempts, row.backoff_base, row.backoff_cap, row.backoff_jitter is not False
    )


def _error_line(error: Any) -> str:
    """A run's recorded error as one readable line: ``type: message`` (and where it came from).

    The traceback is left out.
    """
    if not isinstance(error, dict):
        return " ".join(str(error).split())
    line = f"{error.get('type', 'error')}: {error.get('message', '')}"
    if error.get("step") is not None:
        line += f" (step {error['step']!r})"
    via = error.get("via")
    if isinstance(via, dict):
        line += f" via {via.get('type')}: {via.get('message')}"
    last = error.get("last_error")
    if isinstance(last, dict) and last.get("message"):
        line += f"; last error: {last.get('message')}"
    return " ".join(line.split())


def _run_info(row: Any, steps: list[StepInfo]) -> RunInfo:
    m = row._mapping
    return RunInfo(
        id=m["id"],
        workflow=m["workflow_name"],
        status=RunStatus(m["status"]),
        input=m["input"],
        output=m["output"],
        error=m["error"],
        idempotency_key=m["idempotency_key"],
        cancel_requested=bool(m["cancel_requested"]),
        message_id=m["message_id"],
        created_at=aware(m["created_at"]),  # type: ignore[arg-type]
        started_at=aware(m["started_at"]),
        updated_at=aware(m["updated_at"]),  # type: ignore[arg-type]
        finished_at=aware(m["finished_at"]),
        steps=steps,
    )


def step_info(row: Any) -> StepInfo:
    """The :class:`StepInfo` of a step row."""
    m = row._mapping
    return StepInfo(
        name=m["step_name"],
        status=StepStatus(m["status"]),
        output=m["output"],
        error=m["error"],
        attempts=m["attempts"],
        started_at=aware(m["started_at"]),
        finished_at=aware(m["finished_at"]),
        kind=m.get("kind"),
        wake_at=aware(m.get("wake_at")),
    )


def _run_select(t: Tables) -> Select[Any]:
    r, w = t.runs, t.workflows
    return select(r, w.c.workflow_name).select_from(r.join(w, w.c.id == r.c.workflow_id))


def check_run_id(run_id: object) -> int:
    """``run_id`` if it is an int a run id column can hold (a 64-bit key); else a ValidationError.

    Checked before any statement: PostgreSQL refuses a bigint overflow raw.
    """
    if not isinstance(run_id, int) or isinstance(run_id, bool):
        raise ValidationError(f"a run id is an int, got {run_id!r}", option="run_id", value=run_id)
    if not -(2**63) <= run_id < 2**63:
        raise ValidationError(
            f"run id {run_id} is outside the 64-bit range of run ids; no such run can exist",
            option="run_id",
            value=run_id,
        )
    return run_id


def load_run(conn: Connection, t: Tables, run_id: int) -> RunInfo:
    """The run ``run_id`` with its steps, read on ``conn``; :class:`RunNotFound` if none."""
    check_run_id(run_id)
    row = conn.execute(_run_select(t).where(t.runs.c.id == run_id)).first()
    if row is None:
        raise RunNotFound(
            f"no workflow run with id {run_id}: check the id (store.list_runs() lists runs; "
            "a run pruned after it finished is gone)",
            run_id=run_id,
        )
    s = t.steps
    steps = [
        step_info(r)
        for r in conn.execute(select(s).where(s.c.run_id == run_id).order_by(s.c.id)).all()
    ]
    return _run_info(row, steps)


def _illegal_run(conn: Connection, t: Tables, run_id: int, new: RunStatus) -> IllegalTransition:
    current = load_run(conn, t, run_id).status
    return IllegalTransition(
        f"run {run_id} is {current.value}; it cannot become {new.value}",
        run_id=run_id,
        expected=run_may_become(new),
        actual=current.value,
    )


def update_step_logic(
    conn: Connection, t: Tables, run_id: int, step_name: str, status: StepStatus, value: Any
) -> None:
    """Record a step's outcome from outside the worker (e.g. a webhook's approval)."""
    run = load_run(conn, t, run_id)
    if run.status not in NON_TERMINAL_RUN:
        raise IllegalTransition(
            f"run {run_id} is {run.status.value}; steps of a finished run cannot change: "
            "trigger a new run instead",
            run_id=run_id,
            expected=sorted(s.value for s in NON_TERMINAL_RUN),
            actual=run.status.value,
        )
    upsert = external_step_upsert(t, conn.dialect.name, run_id, step_name, status, value)
    if conn.execute(upsert).first() is None:
        current = next(x for x in run.steps if x.name == step_name)
        raise IllegalTransition(
            f"step {step_name!r} of run {run_id} is {current.status.value}; "
            f"it cannot become {status.value}",
            run_id=run_id,
            step_name=step_name,
            expected=step_may_become(status),
            actual=current.status.value,
        )


def resume_logic(conn: Connection, t: Tables, run_id: int) -> str:
    """Make a paused (or retry-waiting) run's message visible now; returns its queue."""
    run = load_run(conn, t, run_id)
    if run.status not in (RunStatus.PAUSED, RunStatus.RUNNING, RunStatus.QUEUED):
        raise IllegalTransition(
            f"run {run_id} is {run.status.value}; only a PAUSED, QUEUED or waiting RUNNING "
            "run can be resumed",
            run_id=run_id,
            expected=["PAUSED", "QUEUED", "RUNNING"],
            actual=run.status.value,
        )
    # Only a message nobody holds: a live lease is left alone (the owner is working on it).
    if run.message_id is not None:
        conn.execute(wake_unleased_stmt(t, run.message_id))
    return run.workflow


def _check_step_args(
    run_id: Any, step_name: Any, status: Any, value: Any, limit: int, default: JsonDefault | None
) -> tuple[StepStatus, Any]:
    """The parsed status and the value as stored; refused before any statement is sent."""
    check_run_id(run_id)
    check_text(step_name, what="step name", option="step_name")
    try:
        parsed = StepStatus(status)
    except ValueError:
        parsed = None
    if parsed not in (StepStatus.SUCCESS, StepStatus.ERROR):
        raise ValidationError(
            f"update_step records an outcome: status must be StepStatus.SUCCESS or "
            f"StepStatus.ERROR, got {status!r}",
            option="status",
            value=status,
        )
    value = check_json(value, what=f"value of step {step_name!r}", max_bytes=limit, default=default)
    return parsed, value


#: A workflow's default ``max_deliveries``, higher than a plain queue's 5: a run's
#: delivery fails only by not recording an outcome (its worker died or stalled past the
#: lease), so under a storm of worker deaths a healthy run with several steps must not run
#: out; a poison run that kills its worker still stops after this many workers.
WORKFLOW_MAX_DELIVERIES = 10


class RunControl(StoreCore):
    """Workflow definitions and run control, mixed into :class:`~pgqrs_sqla.Store`."""

    async def create_workflow(
        self, name: str, *, retry: RetryPolicy | None = None, max_deliveries: int | None = None
    ) -> WorkflowInfo:
        """Create a workflow and its queue of the same name (idempotent).

        ``retry`` sets the workflow's default retry policy for transient step errors; on an
        existing workflow it updates it.

        ``max_deliveries`` (default :data:`WORKFLOW_MAX_DELIVERIES`, 10) is how many failed
        deliveries of a run dead-letter it (the run ends ``ERROR``). A failed delivery is one
        that ended without recording an outcome: its worker died (or stalled past its lease),
        or the outcome could not be stored. A handler's exception is not one: it ends the
        run at once. Workers killed mid-run and a run that kills its worker look the same
        from the database, so this trades a crash-prone fleet's healthy runs (raise it)
        against how many workers a poison run may take down (lower it). On an existing
        workflow a value given updates it.

        On an existing workflow (one a trigger created with the defaults, say) each option
        given updates it, and one left out is kept.
        """
        validate_name(name, "workflow")
        if max_deliveries is not None:
            check_max_deliveries(max_deliveries)
        policy = retry or RetryPolicy()
        deliveries = WORKFLOW_MAX_DELIVERIES if max_deliveries is None else max_deliveries

        def work(conn: Connection) -> WorkflowInfo:
            define_workflow(conn, self.tables, name, deliveries, policy)
            if retry is not None:
                conn.execute(workflow_policy_stmt(self.tables, name, policy))
            if max_deliveries is not None:
                conn.execute(queue_max_deliveries_stmt(self.tables, name, deliveries))
            return self._workflow(conn, name)

        return await self._in_transaction(work)

    async def _mark_served(self, names: list[str]) -> None:
        """Record that a worker registered for the workflows ``names`` (the first time only)."""
        if not names:
            return
        stmt = mark_served_stmt(self.tables, names)
        await self._in_transaction(lambda c: c.execute(stmt), single_statement=True)

    async def unserved_workflows(self) -> dict[str, int]:
        """Workflows with QUEUED runs that no worker ever registered for, and their runs' count.

        A worker not deployed yet, or a misspelt name in a trigger (which creates the workflow it
        names).
        """
        w, r = self.tables.workflows, self.tables.runs
        stmt = (
            select(w.c.workflow_name, func.count(r.c.id))
            .select_from(w.join(r, r.c.workflow_id == w.c.id))
            .where(w.c.served_at.is_(None), r.c.status == RunStatus.QUEUED.value)
            .group_by(w.c.workflow_name)
            .order_by(w.c.workflow_name)
        )
        async with self._read() as conn:
            return {name: int(count) for name, count in (await conn.execute(stmt)).all()}

    def _workflow(self, conn: Connection, name: str) -> WorkflowInfo:
        w = self.tables.workflows
        row = conn.execute(select(w).where(w.c.workflow_name == name)).first()
        if row is None:
            raise WorkflowNotFound(
                f"no workflow named {name!r}: create it with "
                f"`await store.create_workflow({name!r})`",
                workflow=name,
            )
        return WorkflowInfo(
            row.id,
            row.workflow_name,
            row.queue_id,
            _policy(row),
        )

    async def get_workflow(self, name: str) -> WorkflowInfo:
        """The workflow ``name``; :class:`WorkflowNotFound` if there is none."""
        validate_name(name, "workflow")
        async with self._read() as conn:
            return await conn.run_sync(lambda c: self._workflow(c, name))

    async def list_workflows(self) -> list[WorkflowInfo]:
        """Every workflow, ordered by name."""
        w = self.tables.workflows
        async with self._read() as conn:
            rows = (await conn.execute(select(w).order_by(w.c.workflow_name))).all()
        return [
            WorkflowInfo(
                r.id,
                r.workflow_name,
                r.queue_id,
                _policy(r),
            )
            for r in rows
        ]

    async def get_run(self, run_id: int, *, target: AsyncTarget | None = None) -> RunInfo:
        """A run with its status, input, output, error, timestamps and steps."""
        if target is not None:
            return await self._in_transaction(lambda c: load_run(c, self.tables, run_id), target)
        async with self._read() as conn:
            return await conn.run_sync(lambda c: load_run(c, self.tables, run_id))

    async def list_runs(
        self,
        *,
        workflow: str | None = None,
        status: RunStatus | str | None = None,
        limit: int = 100,
    ) -> list[RunInfo]:
        """Most recent runs first (without their steps)."""
        stmt = _run_select(self.tables).order_by(self.tables.runs.c.id.desc()).limit(limit)
        if workflow is not None:
            stmt = stmt.where(
                self.tables.workflows.c.workflow_name == validate_name(workflow, "workflow")
            )
        if status is not None:
            try:
                stmt = stmt.where(self.tables.runs.c.status == RunStatus(status).value)
            except ValueError:
                raise ValidationError(
                    f"unknown run status {status!r}; one of {[s.value for s in RunStatus]}"
                ) from None
        async with self._read() as conn:
            return [_run_info(r, []) for r in (await conn.execute(stmt)).all()]

    async def wait_for_run(self, run_id: int, *, timeout: float | None = None) -> Any:
        """Wait until the run ends; return its output, or raise ``RunFailed`` / ``RunCancelled``.

        ``WaitTimeout`` is raised after ``timeout`` seconds.
        """
        run = await self.wait_for_status(
            run_id, RunStatus.SUCCESS, RunStatus.ERROR, RunStatus.CANCELLED, timeout=timeout
        )
        if run.status is RunStatus.ERROR:
            raise RunFailed(
                f"run {run_id} failed: {_error_line(run.error)}",
                run_id=run_id,
                error=run.error,
                traceback=run.error.get("traceback") if isinstance(run.error, dict) else None,
            )
        if run.status is RunStatus.CANCELLED:
            raise RunCancelled(f"run {run_id} was cancelled", run_id=run_id)
        return run.output

    async def wait_for_status(
        self, run_id: int, *statuses: RunStatus, timeout: float | None = None
    ) -> RunInfo:
        """Wait until the run is in one of ``statuses``; returns it.

        In-process workers wake the waiter as soon as they change a run; otherwise it polls (up to
        0.5 s).
        """
        if timeout is not None:
            timeout = duration_seconds(timeout, "timeout")
        waiter = HUB.subscribe(self.db_key, RUN_DONE_CHANNEL)
        deadline = None if timeout is None else time.monotonic() + timeout
        interval = 0.02
        while True:
            waiter.event.clear()
            run = await self.get_run(run_id)
            if run.status in statuses:
                return run
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise WaitTimeout(
                    f"run {run_id} is still {run.status.value} after {timeout}s",
                    run_id=run_id,
                    status=run.status,
                )
            wait = interval if remaining is None else min(interval, remaining)
            try:
                await asyncio.wait_for(waiter.event.wait(), wait)
            except TimeoutError:
                interval = min(interval * 2, 0.5)

    async def cancel_run(self, run_id: int) -> RunInfo:
        """Cancel a run: QUEUED or PAUSED ends ``CANCELLED`` now, RUNNING at its next step."""

        def work(conn: Connection) -> RunInfo:
            run = load_run(conn, self.tables, run_id)
            if run.status not in NON_TERMINAL_RUN:
                raise _illegal_run(conn, self.tables, run_id, RunStatus.CANCELLED)
            # Lock order: the message row before the run row, as a claim (and finish) take
            # them; the other order deadlocks against a claim starting this very run.
            # Not leased by a live worker: end it here and take its message off the queue.
            idle = (
                None
                if run.message_id is None
                else conn.execute(archive_idle_stmt(self.tables, run.message_id)).first()
            )
            conn.execute(request_cancel_stmt(self.tables, run_id))
            notify = self.dialect.notify(CANCEL_CHANNEL, str(run_id))
            if notify is not None:
                # Workers in other processes LISTEN here: delivered when this commits.
                conn.execute(select(notify))
            if idle is not None or run.message_id is None:
                conn.execute(cancel_now_stmt(self.tables, run_id))
            return load_run(conn, self.tables, run_id)

        info = await self._in_transaction(work)
        if info.status is RunStatus.CANCELLED:
            self._wake(RUN_DONE_CHANNEL)
        else:
            HUB.notify(self.db_key, CANCEL_CHANNEL, str(run_id))
        return info

    async def retry_run(self, run_id: int) -> RunInfo:
        """Put an ``ERROR`` or ``CANCELLED`` run back on its queue.

        Recorded successful steps are replayed, failed ones run again.
        """

        def work(conn: Connection) -> RunInfo:
            run = load_run(conn, self.tables, run_id)
            done = conn.execute(retry_run_stmt(self.tables, run_id)).first()
            if done is None:
                raise _illegal_run(conn, self.tables, run_id, RunStatus.QUEUED)
            if run.message_id is not None:
                conn.execute(requeue_stmt(self.tables, run.message_id))
            conn.execute(reset_failed_steps_stmt(self.tables, run_id))
            return load_run(conn, self.tables, run_id)

        info = await self._in_transaction(work)
        self._wake(info.workflow)
        return info

    # ------------------------------------------------------------ external events

    async def update_step(
        self,
        run_id: int,
        step_name: str,
        status: StepStatus | str,
        value: Any = None,
        *,
        target: AsyncTarget | None = None,
    ) -> None:
        """Record step ``step_name`` of ``run_id`` as ``status`` with ``value`` as its result.

        ``status`` is SUCCESS, or ERROR. With ``target`` it is written in the caller's transaction.
        """
        parsed, value = _check_step_args(
            run_id, step_name, status, value, self.max_payload_bytes, self.json_default
        )
        await self._in_transaction(
            lambda c: update_step_logic(c, self.tables, run_id, step_name, parsed, value), target
        )

    def update_step_sync(
        self,
        run_id: int,
        step_name: str,
        status: StepStatus | str,
        value: Any = None,
        *,
        target: SyncTarget,
    ) -> None:
        """:meth:`update_step` in a sync ``Session``/``Connection``'s transaction."""
        parsed, value = _check_step_args(
            run_id, step_name, status, value, self.max_payload_bytes, self.json_default
        )
        run_sync(
            target, lambda c: update_step_logic(c, self.tables, run_id, step_name, parsed, value)
        )

    async def resume_run(self, run_id: int, *, target: AsyncTarget | None = None) -> None:
        """Make a paused run's message visible now, so a worker picks the run up.

        The worker replays up to the paused step (whose value ``update_step`` recorded) and
        continues.
        """
        queue = await self._in_transaction(lambda c: resume_logic(c, self.tables, run_id), target)
        self._wake(queue, target)

    def resume_run_sync(self, run_id: int, *, target: SyncTarget) -> None:
        """:meth:`resume_run` in a sync ``Session``/``Connection``'s transaction."""
        queue = run_sync(target, lambda c: resume_logic(c, self.tables, run_id))
        self._wake(queue, target)
