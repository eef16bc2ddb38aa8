"""The pages (GET): overview, runs, a run, workers, dead letters, schedules and limits."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request

from ...models import RunStatus
from . import _queries as q
from ._charts import throughput, timeline
from ._render import BadInput, Dashboard


async def overview(board: Dashboard, request: Request) -> tuple[str, dict[str, Any]]:
    """Each workflow and queue with its depth, and the last hour's ended runs."""
    now = await q.db_now(board.store)
    per_workflow = await q.last_hour(board.store, now)
    minutes = q.summed(list(per_workflow.values()))
    depths = await q.depths(board.store)
    return "overview.html", {
        "depths": depths,
        "chart": throughput(minutes),
        "sparks": {
            d.id: throughput(per_workflow[d.id], height=24)
            for d in depths
            if d.kind == "workflow" and d.id in per_workflow
        },
        "hour": minutes,
        "ended": sum(m.total for m in minutes),
        "failed": sum(m.error for m in minutes),
        "now": now,
    }


def _int(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise BadInput(f"{name} must be a whole number, got {raw!r}") from None
    if not -(2**63) <= value < 2**63:
        raise BadInput(f"{name} {value} is out of range")
    return value


def _time(request: Request, name: str) -> datetime | None:
    raw = request.query_params.get(name, "").strip()
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise BadInput(
            f"{name} must be a date and time like 2026-12-07T14:30 (UTC), got {raw!r}"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def run_filter(request: Request) -> q.RunFilter:
    """The runs list's filters, read and checked from the query string."""
    params = request.query_params
    status = params.get("status", "").strip().upper() or None
    if status is not None and status not in RunStatus.__members__:
        raise BadInput(f"unknown status {status!r}; one of {', '.join(RunStatus.__members__)}")
    limit = _int(request, "limit") or q.PAGE_SIZE
    return q.RunFilter(
        workflow=params.get("workflow", "").strip() or None,
        status=RunStatus(status) if status else None,
        created_from=_time(request, "from"),
        created_to=_time(request, "to"),
        key=params.get("key", "").strip() or None,
        text=params.get("q", "").strip()[:200] or None,
        before=_int(request, "before"),
        limit=max(1, min(limit, 500)),
    )


async def runs(board: Dashboard, request: Request) -> tuple[str, dict[str, Any]]:
    """Runs newest first, filtered, a page at a time (keyset: ``before`` an id)."""
    f = run_filter(request)
    rows, next_before = await q.runs_page(board.store, f)
    kept = {
        k: v
        for k, v in request.query_params.items()
        if k not in ("before", "flash", "level", "sig")
    }
    return "runs.html", {
        "rows": rows,
        "filters": kept,
        "next_page": None if next_before is None else {**kept, "before": next_before},
        "first_page": kept if f.before is not None else None,
        "statuses": [s.value for s in RunStatus],
        "workflows": [w.name for w in await board.store.list_workflows()],
    }


async def run(board: Dashboard, request: Request) -> tuple[str, dict[str, Any]]:
    """One run: its input, output, error, timeline of steps, events, parent and children."""
    run_id = int(request.path_params["run_id"])
    info = await board.store.get_run(run_id)
    steps = await q.steps_of(board.store, run_id)
    now = await q.db_now(board.store)
    family = await q.summaries(
        board.store, [*info.children, *([info.parent_run_id] if info.parent_run_id else [])]
    )
    created = q.aware(info.created_at) or now
    end = q.aware(info.finished_at) or now
    waiting = [s for s in steps if s.status == "PAUSED"]
    error = info.error if isinstance(info.error, dict) else None
    return "run.html", {
        "run": info,
        "steps": steps,
        "timeline": timeline(created, end, steps),
        "events": await q.events_of(board.store, run_id),
        "parent": family.get(info.parent_run_id) if info.parent_run_id else None,
        "children": [family[c] for c in info.children if c in family],
        "more_children": max(len(info.children) - 500, 0),
        "error": error,
        "error_raw": None if error is not None else info.error,
        "waiting": waiting,
        "event_names": sorted({s.wait_for for s in waiting if s.kind == "event" and s.wait_for}),
        "paused_steps": [s.name for s in waiting if s.kind is None],
        "active": not info.status.terminal,
        "retryable": info.status in (RunStatus.ERROR, RunStatus.CANCELLED),
        "now": now,
    }


async def workers(board: Dashboard, request: Request) -> tuple[str, dict[str, Any]]:
    """The worker rows, each with its heartbeat age and the runs it holds now."""
    rows = await board.store.list_workers()
    held = await q.in_flight(board.store)
    return "workers.html", {"workers": rows, "held": held}


async def dead_letters(board: Dashboard, request: Request) -> tuple[str, dict[str, Any]]:
    """Dead messages of each queue (or of ``?queue=``), with the runs they carried."""
    wanted = request.query_params.get("queue", "").strip() or None
    stats = [s for s in await board.store.queue_stats() if s.dead and wanted in (None, s.name)]
    queues = []
    for s in stats:
        messages = await board.store.dead_letters(s.name, limit=100)
        carried = await q.runs_of_messages(board.store, [m.id for m in messages])
        queues.append({"name": s.name, "dead": s.dead, "messages": messages, "runs": carried})
    return "dead_letters.html", {"queues": queues, "wanted": wanted}


async def schedules(board: Dashboard, request: Request) -> tuple[str, dict[str, Any]]:
    """Schedules (next tick, last run, paused), and each workflow's and queue's limits."""
    workflows = await board.store.list_workflows()
    names = {w.name for w in workflows}
    return "schedules.html", {
        "schedules": await board.store.list_schedules(),
        "workflows": workflows,
        "queues": [qi for qi in await board.store.list_queues() if qi.name not in names],
    }
