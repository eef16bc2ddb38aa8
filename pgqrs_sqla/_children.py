"""Child workflows: ``ctx.start_child``, ``ctx.wait_for_run(s)``, ``ctx.child``; and waking a waiter.

Starting a child is one transaction fenced by the parent's lease: the child's run and
message (the trigger's own statements), its ``parent_run_id``, and the parent's record of
it (kind ``child``, the child's id as its output). A replay returns the recorded id; a
parent whose lease was lost starts nothing.

Waiting for runs is a durable wait (see :mod:`pgqrs_sqla._waits`) of kind ``run``. When it
parks, it marks the unfinished runs it waits for as ``awaited_by`` it, in the same
transaction. A run that ends then wakes its waiter, once no run the waiter awaits is still
unfinished: a parent waiting for N children is woken once, by the last. The mark and a
run's end take the same row lock, so either the end sees the mark (and wakes the waiter) or
the park sees the end (and releases the waiter's message for no time).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from ._message import validate_name
from ._runs_write import adopt_child_stmt, await_runs_stmt, release_awaited_stmt
from ._signals import _Refused, _Waiting
from ._steps_write import step_upsert_stmt
from ._waits import (
    WAIT_HORIZON,
    check_live,
    claim_name,
    complete,
    remaining_of,
    success_params,
    wait_write,
)
from .codec import check_json
from .errors import RunNotFound, ValidationError, WaitTimeout
from .models import RunStatus, StepStatus
from .queue import wake_unleased_stmt
from .runs import check_run_id, run_result
from .states import NON_TERMINAL_RUN, UNFINISHED_RUN, status_in
from .trigger import trigger_logic

if TYPE_CHECKING:
    from ._execution import Execution

CHILD, RUN = "child", "run"

#: A wait on a run another waiter already awaits is not woken by its end (a run wakes one
#: waiter): it looks again this often.
SHARED_WAIT_POLL = 2.0


async def start_child(
    x: Execution,
    name: str,
    workflow: str,
    params: Any,
    idempotency_key: str | None,
    timeout: float | None,
    concurrency_key: str | None = None,
) -> int:
    """``ctx.start_child``: trigger ``workflow`` as this run's child, once; returns its id."""
    validate_name(workflow, "workflow")
    recorded = claim_name(x, name, CHILD)
    if recorded is not None and recorded.status is StepStatus.SUCCESS:
        return int(recorded.output["run_id"])
    check_live(x)
    params = check_json(
        params,
        what=f"params of child workflow {workflow!r}",
        max_bytes=x.store.max_payload_bytes,
        default=x.store.json_default,
    )
    t = x.tables
    try:
        async with x.store._begin() as conn:
            child_id = await conn.run_sync(
                lambda c: trigger_logic(
                    c,
                    t,
                    workflow,
                    params,
                    idempotency_key,
                    0.0,
                    0,
                    timeout=timeout,
                    concurrency_key=concurrency_key,
                )
            )
            if child_id in (x.run_id, x.parent_run_id):  # its idempotency key named it
                whose = "itself" if child_id == x.run_id else "its own parent"
                raise ValidationError(
                    f"run {x.run_id}: start_child {name!r} would start {whose} (run "
                    f"{child_id}, found by idempotency key {idempotency_key!r}); nothing was "
                    "written: give the child its own key",
                    option="idempotency_key",
                    value=idempotency_key,
                )
            await conn.execute(adopt_child_stmt(t, child_id, x.run_id))
            output = {"run_id": child_id}
            stmt = step_upsert_stmt(t, conn.dialect.name, StepStatus.SUCCESS, CHILD)
            if (await conn.execute(stmt, success_params(x, name, output))).first() is None:
                raise _Refused
    except _Refused:
        raise await x.refusal() from None
    x.store._wake(workflow)
    x.remember(name, StepStatus.SUCCESS, output, CHILD)
    return int(child_id)


async def wait_for_runs(
    x: Execution, name: str, run_ids: list[int], timeout: float | None
) -> list[dict[str, Any]]:
    """``ctx.wait_for_run(s)``: wait until every run of ``run_ids`` ended; what each ended as.

    Each is ``{"id", "status", "output", "error"}``, in the order of ``run_ids``.
    """
    recorded = claim_name(x, name, RUN)
    if recorded is not None and recorded.status is StepStatus.SUCCESS:
        return _replayed(x, name, recorded.output)
    for run_id in run_ids:
        check_run_id(run_id)
        if run_id in (x.run_id, x.parent_run_id):
            whose = "itself" if run_id == x.run_id else "its parent"
            raise ValidationError(
                f"run {x.run_id} cannot wait for {whose} (run {run_id}): it would wait forever",
                option="run_id",
                value=run_id,
            )
    check_live(x)
    rows, awaited_by = await _ended(x, run_ids)
    unfinished = [row for row in rows.values() if RunStatus(row["status"]) in NON_TERMINAL_RUN]
    if not unfinished:
        ended = [rows[run_id] for run_id in run_ids]
        await complete(x, name, RUN, {"runs": ended})
        await _release_marks(x)
        return ended
    if timeout is not None:
        left = remaining_of(x, recorded, timeout)
        if left <= 0:
            await complete(x, name, RUN, {"timeout": timeout, "runs": list(rows.values())})
            await _release_marks(x)
            raise _timeout(x, unfinished[0], timeout)
    seconds = WAIT_HORIZON if timeout is None else left
    if any(awaited_by[row["id"]] not in (None, x.run_id) for row in unfinished):
        seconds = min(seconds, SHARED_WAIT_POLL)
    raise _Waiting(
        name,
        RUN,
        seconds,
        deadline=None if timeout is None else left,
        wait_runs=[row["id"] for row in unfinished],
    )


async def _release_marks(x: Execution) -> None:
    """The wait returned: the runs it marked ``awaited_by`` this run are no longer awaited."""
    async with x.connection() as conn:
        await conn.execute(release_awaited_stmt(x.tables), {"p_waiter": x.run_id})


def _replayed(x: Execution, name: str, output: Any) -> list[dict[str, Any]]:
    if "timeout" in output:
        unfinished = [row for row in output["runs"] if RunStatus(row["status"]) in NON_TERMINAL_RUN]
        raise _timeout(x, unfinished[0] if unfinished else output["runs"][0], output["timeout"])
    runs: list[dict[str, Any]] = output["runs"]
    return runs


def _timeout(x: Execution, row: dict[str, Any], timeout: float) -> WaitTimeout:
    return WaitTimeout(
        f"run {x.run_id}: run {row['id']} did not end within {timeout:g}s (it is {row['status']})",
        run_id=row["id"],
        status=RunStatus(row["status"]),
    )


async def _ended(
    x: Execution, run_ids: list[int]
) -> tuple[dict[int, dict[str, Any]], dict[int, int | None]]:
    """What each run of ``run_ids`` is now, and who awaits it; :class:`RunNotFound` if missing."""
    r = x.tables.runs
    async with x.store._read() as conn:
        found = (
            await conn.execute(
                select(r.c.id, r.c.status, r.c.output, r.c.error, r.c.awaited_by).where(
                    r.c.id.in_(run_ids)
                )
            )
        ).all()
    rows = {
        row.id: {"id": row.id, "status": row.status, "output": row.output, "error": row.error}
        for row in found
    }
    for run_id in run_ids:
        if run_id not in rows:
            raise RunNotFound(
                f"run {x.run_id} waits for run {run_id}, which does not exist",
                run_id=run_id,
            )
    return rows, {row.id: row.awaited_by for row in found}


def result_of(row: dict[str, Any]) -> Any:
    """A waited run's output, or its failure raised (``RunFailed`` / ``RunCancelled``)."""
    return run_result(row["id"], RunStatus(row["status"]), row["output"], row["error"])


async def park(x: Execution, wait: _Waiting) -> bool:
    """Park a wait for runs: mark them awaited by this run; if none is left unfinished, wake now.

    In the park's transaction, after the message's release (lock order: message, then run).
    """
    t, ids = x.tables, wait.wait_runs or []

    async def mark(conn: AsyncConnection) -> None:
        params = {"p_ids": ids, "p_waiter": x.run_id}
        marked = {row.id for row in await conn.execute(await_runs_stmt(t), params)}
        r = t.runs
        unfinished = await conn.execute(
            select(r.c.id).where(r.c.id.in_(ids), status_in(r.c.status, UNFINISHED_RUN))
        )
        left = {row.id for row in unfinished}
        if not left:
            # Every run it waits for ended meanwhile: look again now, not at the deadline.
            await conn.execute(wake_unleased_stmt(t, x.message.id))
        elif left - marked:
            # Another waiter holds the mark of one (its end wakes that waiter): look again
            # every SHARED_WAIT_POLL seconds.
            await conn.execute(wake_unleased_stmt(t, x.message.id, delay=SHARED_WAIT_POLL))

    return await x.park(RunStatus.PAUSED, wait.seconds, wait_write(x, wait), after=mark)
