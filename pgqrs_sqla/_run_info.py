"""What the store says of workflows, runs and steps: ``WorkflowInfo``, ``RunInfo``, ``StepInfo``.

And how an ended run reads to a waiter (:func:`run_result`). Pure: rows in, values out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ._schedule_time import tick_of_key
from .dialects import aware
from .errors import RunCancelled, RunFailed
from .models import RunStatus, StepStatus
from .retry import RetryPolicy


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
    #: a run's default time limit in seconds (``create_workflow(timeout=)``); None: none
    timeout: float | None = None
    #: how long its finished runs are kept, in seconds (``create_workflow(retention=)``), and
    #: those that ended ERROR (``error_retention``); None: the store's default
    retention: float | None = None
    error_retention: float | None = None
    #: at most this many of its runs RUNNING (leased) at once, across every worker; and per
    #: ``concurrency_key``; None: no limit (``create_workflow(concurrency=, key_concurrency=)``)
    concurrency: int | None = None
    key_concurrency: int | None = None
    #: at most ``rate_limit[0]`` run starts per window of ``rate_limit[1]`` seconds (None: none)
    rate_limit: tuple[int, float] | None = None


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
    #: None for a step; ``sleep``, ``event`` or ``run`` for a durable wait (PAUSED while it
    #: waits); ``child`` for a child started, ``patch`` for what ``ctx.patched`` answered
    kind: str | None = None
    #: a wait's deadline (a timer's end, a wait's timeout); None: none
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
    #: the run that started this one with ``ctx.start_child`` (None: a top-level run)
    parent_run_id: int | None = None
    #: the runs this one started with ``ctx.start_child`` (filled in by ``get_run``)
    children: list[int] = field(default_factory=list)
    #: when the run is cancelled if still unfinished (``trigger(timeout=)``); None: never
    deadline_at: datetime | None = None
    #: the key its workflow's ``key_concurrency`` counts it by (``trigger(concurrency_key=)``)
    concurrency_key: str | None = None

    @property
    def scheduled_at(self) -> datetime | None:
        """The schedule tick that triggered the run (UTC), read from its idempotency key.

        None for a run no schedule triggered.
        """
        return tick_of_key(self.idempotency_key)


def _workflow_info(row: Any) -> WorkflowInfo:
    """A ``pgqrs_workflows`` row, with its queue's limit columns, read to a WorkflowInfo."""
    rate = None if row.rate_limit is None else (row.rate_limit, row.rate_period)
    return WorkflowInfo(
        row.id,
        row.workflow_name,
        row.queue_id,
        _policy(row),
        row.timeout,
        row.retention,
        row.error_retention,
        row.concurrency,
        row.key_concurrency,
        rate,
    )


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


def _run_info(row: Any, steps: list[StepInfo], children: Sequence[int] = ()) -> RunInfo:
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
        parent_run_id=m.get("parent_run_id"),
        children=list(children),
        deadline_at=aware(m.get("deadline_at")),
        concurrency_key=m.get("concurrency_key"),
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


def run_result(run_id: int, status: RunStatus, output: Any, error: Any) -> Any:
    """An ended run's output; :class:`RunFailed` / :class:`RunCancelled` for the others."""
    if status is RunStatus.ERROR:
        raise RunFailed(
            f"run {run_id} failed: {_error_line(error)}",
            run_id=run_id,
            error=error,
            traceback=error.get("traceback") if isinstance(error, dict) else None,
        )
    if status is RunStatus.CANCELLED:
        why = f": {_error_line(error)}" if error else ""
        raise RunCancelled(f"run {run_id} was cancelled{why}", run_id=run_id)
    return output
