"""The one module that writes ``pgqrs_schedules``.

Definitions (create, update, pause, resume, delete, a worker's reconcile of the schedules its
code declares) and the firing pass's compare-and-set of a schedule's next tick. Builders are
pure; the store executes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Delete, Update, bindparam, delete, func, update
from sqlalchemy.sql.dml import ReturningInsert

from ._schedule_model import ScheduleOrigin
from .dialects import BigIntKey, insert_for, utcnow
from .models import Tables


def schedule_insert_stmt(t: Tables, dialect: str, values: dict[str, Any]) -> ReturningInsert[Any]:
    """A new schedule; no row back if one of that name exists (a concurrent creator's stands)."""
    s = t.schedules
    return (
        insert_for(dialect, s)
        .values(**values, created_at=utcnow(), updated_at=utcnow())
        .on_conflict_do_nothing(index_elements=[s.c.schedule_name])
        .returning(s.c.id)
    )


def schedule_update_stmt(t: Tables, schedule_id: int, values: dict[str, Any]) -> Update:
    """Schedule ``schedule_id``'s new definition (``values``: the columns that change)."""
    s = t.schedules
    return update(s).where(s.c.id == schedule_id).values(**values, updated_at=utcnow())


def schedule_paused_stmt(
    t: Tables, name: str, paused: bool, next_tick: datetime | None = None
) -> Update:
    """Pause or resume schedule ``name`` (a resume's ``next_tick``: the first tick from now)."""
    s = t.schedules
    values: dict[str, Any] = {"paused": paused, "updated_at": utcnow()}
    if next_tick is not None:
        values["next_tick_at"] = next_tick
    return update(s).where(s.c.schedule_name == name).values(**values)


def schedule_delete_stmt(t: Tables, name: str) -> Delete:
    s = t.schedules
    return delete(s).where(s.c.schedule_name == name)


def undeclared_delete_stmt(t: Tables, workflow_ids: Sequence[int], keep: Sequence[str]) -> Delete:
    """Delete the code-declared schedules of ``workflow_ids`` whose name is not in ``keep``.

    Schedules made through the API are never deleted here, nor those of other workflows.
    """
    s = t.schedules
    return delete(s).where(
        s.c.origin == ScheduleOrigin.CODE.value,
        s.c.workflow_id.in_(workflow_ids),
        s.c.schedule_name.not_in(keep),
    )


def advance_stmt(t: Tables) -> Update:
    """Move a schedule's next tick on, if it is still ``p_old`` (a compare-and-set).

    Bound per call: ``p_id``, ``p_old``, ``p_next``, ``p_last_tick``, ``p_last_run``.
    Runs in the transaction that triggered the ticks' runs: both commit, or neither.
    """
    s = t.schedules
    return (
        update(s)
        .where(
            s.c.id == bindparam("p_id", type_=BigIntKey),
            s.c.next_tick_at == bindparam("p_old", type_=s.c.next_tick_at.type),
        )
        .values(
            next_tick_at=bindparam("p_next", type_=s.c.next_tick_at.type),
            # A pass that fires nothing (missed ticks skipped) keeps the last ones.
            last_tick_at=func.coalesce(
                bindparam("p_last_tick", type_=s.c.last_tick_at.type), s.c.last_tick_at
            ),
            last_run_id=func.coalesce(bindparam("p_last_run", type_=BigIntKey), s.c.last_run_id),
        )
    )
