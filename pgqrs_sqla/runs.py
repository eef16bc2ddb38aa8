"""Workflow definitions and run control: create_workflow, get/list/wait/cancel/retry runs.

Also the external-event API (``update_step`` + ``resume_run``) with its sync twins.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.engine import Connection

from ._catalog_write import (
    define_workflow as define_workflow,  # the trigger's, and its home before _catalog_write
    mark_served_stmt,
    queue_max_deliveries_stmt,
    set_limits,
    workflow_policy_stmt,
    workflow_retention_stmt,
    workflow_timeout_stmt,
)
from ._core import StoreCore
from ._db import HUB, AsyncTarget, SyncTarget, run_sync
from ._limits import Limit, RateLimitOption, limit_columns
from ._message import check_max_deliveries
from ._run_info import (
    RunInfo as RunInfo,
    StepInfo as StepInfo,
    WorkflowInfo as WorkflowInfo,
    _error_line as _error_line,
    _policy as _policy,
    _run_info as _run_info,
    _workflow_info,
    run_result as run_result,
    step_info as step_info,
)
from ._runs_write import (
    cancel_now_stmt,
    request_cancel_stmt,
    retry_run_stmt,
    unfinished_children,
)
from ._steps_write import external_step_upsert, reset_failed_steps_stmt
from .codec import JsonDefault, check_json, check_text
from .errors import (
    IllegalTransition,
    RetentionTooShort,
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
    wake_waiter_stmt,
)
from .retry import RetryPolicy as RetryPolicy  # its home before pgqrs_sqla.retry
from .states import NON_TERMINAL_RUN, UNFINISHED_RUN, run_may_become, step_may_become


def _check_retention(info: WorkflowInfo) -> None:
    """Refuse a workflow whose retention is shorter than its runs' default time limit.

    A run may take up to ``timeout`` to end: a shorter retention would prune runs (and free
    idempotency keys) sooner than the workflow's own runs last.
    """
    if info.timeout is None:
        return
    for option in ("retention", "error_retention"):
        kept = getattr(info, option)
        if kept is not None and kept < info.timeout:
            raise RetentionTooShort(
                f"workflow {info.name!r}: {option} of {kept:g} s is shorter than its timeout of "
                f"{info.timeout:g} s; keep finished runs at least as long as a run may take",
                option=option,
                value=kept,
                timeout=info.timeout,
            )


RUN_DONE_CHANNEL = "pgqrs:run-done"
#: payload: the run id. Also a PostgreSQL NOTIFY channel, so other processes hear it at once.
CANCEL_CHANNEL = "pgqrs_cancel"


def _workflow_select(t: Tables) -> Select[Any]:
    """Workflow rows with their queue's limits (a workflow's limits live on its queue)."""
    w, qt = t.workflows, t.queues
    limits = (qt.c.concurrency, qt.c.key_concurrency, qt.c.rate_limit, qt.c.rate_period)
    return select(w, *limits).select_from(w.join(qt, qt.c.id == w.c.queue_id))


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
    s, r = t.steps, t.runs
    steps = [
        step_info(r)
        for r in conn.execute(select(s).where(s.c.run_id == run_id).order_by(s.c.id)).all()
    ]
    children = conn.execute(
        select(r.c.id).where(r.c.parent_run_id == run_id).order_by(r.c.id)
    ).scalars()
    return _run_info(row, steps, list(children))


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
            expected=UNFINISHED_RUN,
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


async def wake_waiters(store: StoreCore, waiters: list[int | None]) -> None:
    """Wake each run of ``waiters`` (None: no one) once no run it awaits is unfinished.

    Runs after the end of the awaited runs committed: of several awaited runs ending at once,
    the last to commit then sees every other one ended, and wakes the waiter.
    """
    woken = sorted({w for w in waiters if w is not None})
    if not woken:
        return
    stmt = wake_waiter_stmt(store.tables)
    async with store._autocommit() as conn:
        for waiter in woken:
            await conn.execute(stmt, {"p_waiter": waiter})


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
        self,
        name: str,
        *,
        retry: RetryPolicy | None = None,
        max_deliveries: int | None = None,
        timeout: float | timedelta | None = None,
        retention: float | timedelta | None = None,
        error_retention: float | timedelta | None = None,
        concurrency: Limit = None,
        key_concurrency: Limit = None,
        rate_limit: RateLimitOption = None,
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

        ``timeout`` (seconds or a ``timedelta``) is the default time limit of its runs: a run
        still unfinished that long after its trigger ends ``CANCELLED`` at its next step or
        wait, with the reason as its error. ``trigger(timeout=)`` overrides it per run; it
        applies to runs triggered after it is set.

        ``retention`` and ``error_retention`` (seconds or ``timedelta``) are how long its
        finished runs are kept, with their steps, events and message, after they ended
        ``SUCCESS`` or ``CANCELLED``, and after they ended ``ERROR``; the store's
        ``connect(retention=, error_retention=)`` applies while unset. A retention shorter than
        the workflow's ``timeout`` raises :class:`RetentionTooShort`.

        ``concurrency``: at most that many of its runs RUNNING at once, across every worker and
        process (a run that waits, for a timer, an event or a child, does not count while it
        waits). ``key_concurrency``: at most that many per ``trigger(concurrency_key=)``
        (1 runs one key's runs one at a time, in trigger order). ``rate_limit``:
        ``(starts, period)``, at most that many run starts per window of ``period`` (seconds
        or a ``timedelta``). The claim enforces them (see the Limits docs page);
        ``UNLIMITED`` removes a limit, ``None`` keeps it; bad values raise
        :class:`InvalidLimit`.

        On an existing workflow (one a trigger created with the defaults, say) each option
        given updates it, and one left out is kept. Bad input writes nothing.
        """
        validate_name(name, "workflow")
        limit = None if timeout is None else duration_seconds(timeout, "timeout", positive=True)
        kept = {
            option: duration_seconds(value, option, positive=True)
            for option, value in (("retention", retention), ("error_retention", error_retention))
            if value is not None
        }
        if max_deliveries is not None:
            check_max_deliveries(max_deliveries)
        limits = limit_columns(
            concurrency=concurrency, key_concurrency=key_concurrency, rate_limit=rate_limit
        )
        policy = retry or RetryPolicy()
        deliveries = WORKFLOW_MAX_DELIVERIES if max_deliveries is None else max_deliveries

        def work(conn: Connection) -> WorkflowInfo:
            define_workflow(conn, self.tables, name, deliveries, policy)
            if retry is not None:
                conn.execute(workflow_policy_stmt(self.tables, name, policy))
            if max_deliveries is not None:
                conn.execute(queue_max_deliveries_stmt(self.tables, name, deliveries))
            if limit is not None:
                conn.execute(workflow_timeout_stmt(self.tables, name, limit))
            if kept:
                conn.execute(workflow_retention_stmt(self.tables, name, **kept))
            set_limits(conn, self.tables, name, limits)
            info = self._workflow(conn, name)
            _check_retention(info)  # raised: the transaction rolls back, nothing written
            return info

        info = await self._in_transaction(work)
        if limits:  # a worker held back by the old limit claims again at once
            self._wake(name)
        return info

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
        row = conn.execute(_workflow_select(self.tables).where(w.c.workflow_name == name)).first()
        if row is None:
            raise WorkflowNotFound(
                f"no workflow named {name!r}: create it with "
                f"`await store.create_workflow({name!r})`",
                workflow=name,
            )
        return _workflow_info(row)

    async def get_workflow(self, name: str) -> WorkflowInfo:
        """The workflow ``name``; :class:`WorkflowNotFound` if there is none."""
        validate_name(name, "workflow")
        async with self._read() as conn:
            return await conn.run_sync(lambda c: self._workflow(c, name))

    async def list_workflows(self) -> list[WorkflowInfo]:
        """Every workflow, ordered by name."""
        w = self.tables.workflows
        async with self._read() as conn:
            rows = (
                await conn.execute(_workflow_select(self.tables).order_by(w.c.workflow_name))
            ).all()
        return [_workflow_info(r) for r in rows]

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
        return run_result(run_id, run.status, run.output, run.error)

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
        """Cancel a run: QUEUED or PAUSED ends ``CANCELLED`` now, RUNNING at its next step.

        Its unfinished children (``ctx.start_child``) are cancelled with it, and their
        children; a run waiting on a cancelled run is woken.
        """

        def work(conn: Connection) -> tuple[RunInfo, list[int], list[int | None]]:
            run = load_run(conn, self.tables, run_id)
            if run.status not in NON_TERMINAL_RUN:
                raise _illegal_run(conn, self.tables, run_id, RunStatus.CANCELLED)
            running: list[int] = []
            waiters = self._cancel(conn, run_id, run.message_id, running)
            return load_run(conn, self.tables, run_id), running, waiters

        info, running, waiters = await self._in_transaction(work)
        if waiters:  # one entry per run ended now (its waiter, or None)
            self._wake(RUN_DONE_CHANNEL)
        for cancelled in running:
            HUB.notify(self.db_key, CANCEL_CHANNEL, str(cancelled))
        await wake_waiters(self, waiters)
        return info

    async def _cancel_children(self, run_id: int) -> None:
        """Cancel the unfinished children of run ``run_id``, which ended (its deadline)."""

        def work(conn: Connection) -> tuple[list[int], list[int | None]]:
            running: list[int] = []
            waiters: list[int | None] = []
            r = self.tables.runs
            query = unfinished_children(self.tables, run_id).add_columns(r.c.message_id)
            for child in conn.execute(query):
                waiters += self._cancel(conn, child.id, child.message_id, running)
            return running, waiters

        running, waiters = await self._in_transaction(work)
        for cancelled in running:
            HUB.notify(self.db_key, CANCEL_CHANNEL, str(cancelled))
        await wake_waiters(self, waiters)

    def _cancel(
        self, conn: Connection, run_id: int, message_id: int | None, running: list[int]
    ) -> list[int | None]:
        """Cancel run ``run_id`` and its unfinished children; the waiters to wake (after commit).

        The ids of runs a live worker holds (they stop at their next step) go to ``running``.
        """
        t = self.tables
        # Lock order: the message row before the run row, as a claim (and finish) take
        # them; the other order deadlocks against a claim starting this very run.
        # Not leased by a live worker: end it here and take its message off the queue.
        idle = (
            None if message_id is None else conn.execute(archive_idle_stmt(t, message_id)).first()
        )
        conn.execute(request_cancel_stmt(t, run_id))
        notify = self.dialect.notify(CANCEL_CHANNEL, str(run_id))
        if notify is not None:
            # Workers in other processes LISTEN here: delivered when this commits.
            conn.execute(select(notify))
        waiters: list[int | None] = []
        if idle is not None or message_id is None:
            ended = conn.execute(cancel_now_stmt(t, run_id)).first()
            if ended is not None:
                waiters.append(ended.awaited_by)
        else:
            running.append(run_id)
        r = t.runs
        for child in conn.execute(unfinished_children(t, run_id).add_columns(r.c.message_id)):
            waiters += self._cancel(conn, child.id, child.message_id, running)
        return waiters

    async def retry_run(self, run_id: int) -> RunInfo:
        """Put an ``ERROR`` or ``CANCELLED`` run back on its queue.

        Recorded successful steps are replayed, failed ones run again. Its deadline, if it had
        one, is cleared: a run cancelled at its deadline would otherwise be cancelled again at
        once.
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
