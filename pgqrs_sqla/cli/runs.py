"""``pgqrs-sqla runs``: list, show, resume, cancel and retry workflow runs."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections import Counter

from sqlalchemy import select

from ..models import RunStatus, StepStatus
from ..runs import RunInfo, StepInfo, _run_info, _run_select, step_info
from ..store import Store
from ._app import EXIT_OK
from ._output import Output, _cell
from .queues import _warn_unserved


async def _with_steps(store: Store, runs: list[RunInfo]) -> list[RunInfo]:
    """``runs`` with their steps (``list_runs`` leaves them out), read in one query."""
    if not runs:
        return runs
    s = store.tables.steps
    stmt = select(s).where(s.c.run_id.in_([r.id for r in runs])).order_by(s.c.id)
    async with store._read() as conn:
        rows = (await conn.execute(stmt)).all()
    steps: dict[int, list[StepInfo]] = {}
    for row in rows:
        steps.setdefault(row.run_id, []).append(step_info(row))
    return [dataclasses.replace(r, steps=steps.get(r.id, [])) for r in runs]


async def _family(store: Store, run: RunInfo) -> tuple[RunInfo | None, list[RunInfo]]:
    """The run's parent and children (without their steps), read in one query."""
    ids = [*run.children, *([run.parent_run_id] if run.parent_run_id is not None else [])]
    if not ids:
        return None, []
    r = store.tables.runs
    stmt = _run_select(store.tables).where(r.c.id.in_(ids)).order_by(r.c.id)
    async with store._read() as conn:
        found = {row.id: _run_info(row, []) for row in (await conn.execute(stmt)).all()}
    parent = None if run.parent_run_id is None else found.get(run.parent_run_id)
    return parent, [found[c] for c in run.children if c in found]


def _write_family(
    run: RunInfo, parent: RunInfo | None, children: list[RunInfo], out: Output
) -> None:
    """``runs show``'s text for the run's deadline, parent and children."""
    if run.deadline_at is not None:
        sys.stdout.write(f"  deadline {_cell(run.deadline_at)}\n")
    if run.parent_run_id is not None:
        of = f" ({parent.workflow}, {parent.status.value})" if parent is not None else ""
        sys.stdout.write(f"  parent run {run.parent_run_id}{of}\n")
    if children:
        counts = Counter(child.status.value for child in children)
        summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        out.table(
            f"children ({len(children)}: {summary})",
            ["id", "workflow", "status", "created", "finished", "error"],
            [
                [c.id, c.workflow, c.status, c.created_at, c.finished_at, _error_cell(c.error)]
                for c in children
            ],
        )


def _error_cell(error: object) -> object:
    return error.get("message") if isinstance(error, dict) else error


async def cmd_runs(store: Store, args: argparse.Namespace, out: Output) -> int:
    """``pgqrs-sqla runs ...``: list runs, show one with its steps, or resume, cancel, retry it."""
    action = args.runs_command
    if action == "list":
        runs = await store.list_runs(workflow=args.workflow, status=args.status, limit=args.limit)
        _warn_unserved(await store.unserved_workflows())
        if out.as_json:
            out.data(await _with_steps(store, runs))
        else:
            out.table(
                "runs",
                ["id", "workflow", "status", "created", "finished", "error"],
                [
                    [
                        r.id,
                        r.workflow,
                        r.status,
                        r.created_at,
                        r.finished_at,
                        (r.error or {}).get("message"),
                    ]
                    for r in runs
                ],
            )
        return EXIT_OK
    if action == "show":
        run = await store.get_run(args.run_id)
        if out.as_json:
            out.data(run)
            return EXIT_OK
        sys.stdout.write(
            f"run {run.id}  workflow {run.workflow}  status {run.status.value}\n"
            f"  created {_cell(run.created_at)}  started {_cell(run.started_at)}  finished {_cell(run.finished_at)}\n"
            f"  input  {_cell(run.input)}\n  output {_cell(run.output)}\n"
        )
        if run.error:
            sys.stdout.write(f"  error  {run.error.get('type')}: {run.error.get('message')}\n")
        parent, children = await _family(store, run)
        _write_family(run, parent, children, out)
        out.table(
            "steps",
            [
                "step",
                "kind",
                "status",
                "attempts",
                "started",
                "finished",
                "seconds",
                "output / error",
            ],
            [
                [
                    s.name,
                    s.kind or "step",
                    s.status
                    if s.wake_at is None or s.status is not StepStatus.PAUSED
                    else f"{s.status} until {_cell(s.wake_at)}",
                    s.attempts,
                    s.started_at,
                    s.finished_at,
                    (s.finished_at - s.started_at).total_seconds()
                    if s.started_at and s.finished_at
                    else None,
                    s.output
                    if s.error is None
                    else f"{s.error.get('type')}: {s.error.get('message')}",
                ]
                for s in run.steps
            ],
        )
        return EXIT_OK
    if action == "resume":
        await store.resume_run(args.run_id)
        out.message(f"run {args.run_id} resumed", {"ok": True, "run_id": args.run_id})
        return EXIT_OK
    if action == "cancel":
        info = await store.cancel_run(args.run_id)
        out.message(
            f"run {args.run_id}: {info.status.value}"
            + (" (stops at its next step)" if info.status is RunStatus.RUNNING else ""),
            info,
        )
        return EXIT_OK
    info = await store.retry_run(args.run_id)
    out.message(f"run {args.run_id} queued again", info)
    return EXIT_OK
