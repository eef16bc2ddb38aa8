"""Schedules: a workflow triggered on a cron or every N seconds, exactly one run per tick.

:class:`Schedules` (mixed into ``Store``) defines, lists, pauses, resumes and deletes them, and
holds the firing pass a worker's scheduler (``_scheduler.py``) calls. Each pass takes one due
schedule at a time, in a transaction of its own:

- the row is locked ``FOR UPDATE SKIP LOCKED`` on PostgreSQL (a schedule another worker is
  firing is skipped, never waited for); on SQLite the write transaction is the only one;
- its due ticks are chosen (``_schedule_time.plan``, by its ``catch_up``) and each triggers a
  run (``trigger.trigger_logic``) whose idempotency key is ``schedule:<name>:<tick>``, unique
  per workflow: a tick can never make a second run, even if fired twice;
- its ``next_tick_at`` moves on by compare-and-set (``_schedules_write.advance_stmt``), in
  the same transaction: the runs and the schedule's move commit together, or neither does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, Select, func, select
from sqlalchemy.engine import Connection

from ._core import StoreCore
from ._db import HUB
from ._logging import get_logger
from ._message import validate_name
from ._schedule_model import ScheduleOrigin
from ._schedule_time import Cadence, CatchUp, check_catch_up, plan, tick_key
from ._schedules_write import (
    advance_stmt,
    schedule_delete_stmt,
    schedule_insert_stmt,
    schedule_paused_stmt,
    schedule_update_stmt,
    undeclared_delete_stmt,
)
from .codec import check_json
from .dialects import aware, dialect_for, utcnow
from .errors import InvalidSchedule, PayloadError, ScheduleNotFound, WorkflowNotFound
from .models import Tables
from .trigger import trigger_logic
from .typed import encode

log = get_logger("pgqrs_sqla.schedules")

#: in-process wake-up of the schedulers of one database: a schedule was made or changed
SCHEDULES_CHANNEL = "pgqrs:schedules"
#: its PostgreSQL NOTIFY channel, which carries it to the schedulers of other processes
SCHEDULES_NOTIFY_CHANNEL = "pgqrs_schedules"
#: due schedules one firing pass takes at most (each in its own transaction)
PASS_SCHEDULES = 50


@dataclass(frozen=True)
class ScheduleInfo:
    """A schedule as stored (``store.list_schedules()``)."""

    name: str
    workflow: str
    #: the cron expression, or None for an ``every`` schedule
    cron: str | None
    #: the interval in seconds, or None for a cron schedule
    every: float | None
    timezone: str
    catch_up: str
    params: Any
    paused: bool
    #: ``api`` (``create_schedule``) or ``code`` (declared on a registry or consumer)
    origin: str
    #: the next tick to fire (UTC); a paused schedule fires nothing until resumed
    next_tick_at: datetime
    #: the last tick fired, and the run it triggered (None: none yet)
    last_tick_at: datetime | None
    last_run_id: int | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class ScheduleSpec:
    """A checked schedule definition, as ``create_schedule`` or a declaration gives it."""

    name: str
    workflow: str
    cadence: Cadence
    catch_up: CatchUp
    params: Any

    @classmethod
    def of(
        cls,
        name: str,
        workflow: str,
        *,
        cron: str | None = None,
        every: float | timedelta | None = None,
        params: Any = None,
        timezone: str = "UTC",
        catch_up: str = "latest",
        max_bytes: int | None = None,
        json_default: Any = None,
    ) -> ScheduleSpec:
        """Check everything; raises :class:`InvalidSchedule` (or ``InvalidName``) on bad input."""
        validate_name(name, "schedule")
        validate_name(workflow, "workflow")
        cadence = Cadence.of(name, cron, every, timezone)
        mode = check_catch_up(name, catch_up)
        options: dict[str, Any] = {"default": json_default}
        if max_bytes is not None:
            options["max_bytes"] = max_bytes
        try:
            value = check_json(encode(params), what=f"params of schedule {name!r}", **options)
        except PayloadError as error:
            raise InvalidSchedule(
                f"schedule {name!r}: {error.message}",
                schedule=name,
                option="params",
                value=params,
            ) from error
        return cls(name, workflow, cadence, mode, value)

    def columns(self) -> dict[str, Any]:
        """The definition's columns (all but the workflow, the origin and the ticks)."""
        return {
            "cron": self.cadence.cron,
            "every": self.cadence.every,
            "timezone": self.cadence.timezone,
            "catch_up": self.catch_up.value,
            "params": self.params,
        }


@dataclass(frozen=True)
class FirePass:
    """What a firing pass did: runs triggered, and when the next tick of those schedules is."""

    fired: int
    #: seconds until the earliest next tick of the unpaused schedules (None: there are none)
    next_in: float | None


def _select(t: Tables) -> Select[Any]:
    s, w = t.schedules, t.workflows
    return select(s, w.c.workflow_name).join(w, w.c.id == s.c.workflow_id)


def _info(row: Row[Any]) -> ScheduleInfo:
    m = row._mapping
    next_tick = aware(m["next_tick_at"])
    assert next_tick is not None
    return ScheduleInfo(
        name=m["schedule_name"],
        workflow=m["workflow_name"],
        cron=m["cron"],
        every=m["every"],
        timezone=m["timezone"],
        catch_up=m["catch_up"],
        params=m["params"],
        paused=bool(m["paused"]),
        origin=m["origin"],
        next_tick_at=next_tick,
        last_tick_at=aware(m["last_tick_at"]),
        last_run_id=m["last_run_id"],
        created_at=aware(m["created_at"]),  # type: ignore[arg-type]
        updated_at=aware(m["updated_at"]),  # type: ignore[arg-type]
    )


def _now(conn: Connection) -> datetime:
    now = aware(conn.execute(select(utcnow())).scalar_one())
    assert now is not None
    return now


def _load(conn: Connection, t: Tables, name: str, *, lock: bool = False) -> Row[Any] | None:
    s = t.schedules
    if lock:  # the schedule's row only, not its workflow's
        conn.execute(
            dialect_for(conn).lock_for_update(select(s.c.id).where(s.c.schedule_name == name))
        )
    return conn.execute(_select(t).where(s.c.schedule_name == name)).first()


def _not_found(name: str) -> ScheduleNotFound:
    return ScheduleNotFound(
        f"no schedule named {name!r}: store.list_schedules() (or `pgqrs-sqla schedules list`) "
        "lists them",
        schedule=name,
    )


def define_schedule(
    conn: Connection, t: Tables, spec: ScheduleSpec, origin: ScheduleOrigin
) -> ScheduleInfo:
    """Create schedule ``spec.name``, or update it to ``spec``, on ``conn``; returns it.

    A changed cron, interval or time zone moves its next tick to the first tick after now
    (a tick that was due and not yet fired is dropped); a change of only the params,
    catch-up or workflow keeps it. Whether it is paused is kept.
    """
    w = t.workflows
    workflow_id = conn.execute(
        select(w.c.id).where(w.c.workflow_name == spec.workflow)
    ).scalar_one_or_none()
    if workflow_id is None:
        raise WorkflowNotFound(
            f"schedule {spec.name!r}: no workflow named {spec.workflow!r}; create it first "
            f"(`await store.create_workflow({spec.workflow!r})`, or a worker serving it)",
            workflow=spec.workflow,
        )
    now = _now(conn)
    columns = {**spec.columns(), "workflow_id": workflow_id, "origin": origin.value}
    inserted = conn.execute(
        schedule_insert_stmt(
            t,
            conn.dialect.name,
            {
                "schedule_name": spec.name,
                **columns,
                "paused": False,
                "next_tick_at": spec.cadence.next_after(now),
            },
        )
    ).first()
    if inserted is None:  # it exists: update what changed
        row = _load(conn, t, spec.name, lock=True)
        assert row is not None
        m = row._mapping
        changed = {k: v for k, v in columns.items() if m[k] != v}
        if any(k in changed for k in ("cron", "every", "timezone")):
            changed["next_tick_at"] = spec.cadence.next_after(now)
        if changed:
            conn.execute(schedule_update_stmt(t, m["id"], changed))
    row = _load(conn, t, spec.name)
    assert row is not None
    return _info(row)


class Schedules(StoreCore):
    """The Store's schedules: define, list, pause, resume, delete, and fire due ticks."""

    async def create_schedule(
        self,
        name: str,
        workflow: str,
        *,
        cron: str | None = None,
        every: float | timedelta | None = None,
        params: Any = None,
        timezone: str = "UTC",
        catch_up: str = "latest",
    ) -> ScheduleInfo:
        """Trigger ``workflow`` with ``params`` on a ``cron`` or ``every`` N seconds (idempotent).

        Exactly one of ``cron`` (5 fields, ``minute hour day-of-month month day-of-week``, or 6
        with seconds as the *last* field, as croniter reads them; or an alias like
        ``@daily``), read in ``timezone`` (an IANA name), and ``every`` (seconds or a
        ``timedelta``, at least 1 s; ticks at whole multiples of it since the Unix epoch, UTC).
        Each tick triggers exactly one run, whichever workers serve the workflow; the run's
        ``ctx.scheduled_at`` (and ``RunInfo.scheduled_at``) is the tick. ``catch_up`` says what
        happens to ticks missed while no worker ran: ``"latest"`` runs the most recent once,
        ``"all"`` runs each (the 1000 most recent at most), ``"none"`` runs none (a tick is
        missed when found more than 60 s late).

        Called again with another definition it updates the schedule: a new cron, interval
        or time zone moves the next tick to the first one after now (a tick already due and
        not yet fired is dropped); new params, catch-up or workflow keep the next tick.
        A paused schedule stays paused. The workflow must exist
        (:class:`~pgqrs_sqla.errors.WorkflowNotFound` otherwise); a bad definition raises
        :class:`~pgqrs_sqla.errors.InvalidSchedule`. Bad input writes nothing.
        """
        spec = ScheduleSpec.of(
            name,
            workflow,
            cron=cron,
            every=every,
            params=params,
            timezone=timezone,
            catch_up=catch_up,
            max_bytes=self.max_payload_bytes,
            json_default=self.json_default,
        )
        info = await self._in_transaction(
            lambda conn: define_schedule(conn, self.tables, spec, ScheduleOrigin.API)
        )
        await self._schedules_changed()
        return info

    async def get_schedule(self, name: str) -> ScheduleInfo:
        """Schedule ``name``; :class:`~pgqrs_sqla.errors.ScheduleNotFound` if there is none."""
        async with self._read() as conn:
            row = await conn.run_sync(lambda c: _load(c, self.tables, name))
        if row is None:
            raise _not_found(name)
        return _info(row)

    async def list_schedules(self, *, workflow: str | None = None) -> list[ScheduleInfo]:
        """Every schedule (or ``workflow``'s), by name."""
        stmt = _select(self.tables).order_by(self.tables.schedules.c.schedule_name)
        if workflow is not None:
            stmt = stmt.where(self.tables.workflows.c.workflow_name == workflow)
        async with self._read() as conn:
            return [_info(row) for row in (await conn.execute(stmt)).all()]

    async def delete_schedule(self, name: str) -> None:
        """Delete schedule ``name`` (its runs stay); ScheduleNotFound if there is none."""
        async with self._begin() as conn:
            deleted = (await conn.execute(schedule_delete_stmt(self.tables, name))).rowcount
        if not deleted:
            raise _not_found(name)

    async def pause_schedule(self, name: str) -> ScheduleInfo:
        """Fire no more ticks of ``name`` until :meth:`resume_schedule`; returns it."""
        return await self._set_paused(name, True)

    async def resume_schedule(self, name: str) -> ScheduleInfo:
        """Fire ``name``'s ticks again, from the first one after now (those while paused are skipped)."""
        return await self._set_paused(name, False)

    async def _set_paused(self, name: str, paused: bool) -> ScheduleInfo:
        t = self.tables

        def work(conn: Connection) -> ScheduleInfo:
            row = _load(conn, t, name, lock=True)
            if row is None:
                raise _not_found(name)
            m = row._mapping
            next_tick = None
            if not paused and m["paused"]:
                cadence = Cadence(m["cron"], m["every"], m["timezone"])
                next_tick = cadence.next_after(_now(conn))
            conn.execute(schedule_paused_stmt(t, name, paused, next_tick))
            found = _load(conn, t, name)
            assert found is not None
            return _info(found)

        info = await self._in_transaction(work)
        await self._schedules_changed()
        return info

    async def _schedules_changed(self) -> None:
        """Wake the schedulers: this process's at once, other processes' through NOTIFY.

        Sent after the change committed, so a woken scheduler reads it. Without it another
        process's scheduler would notice only at its next pass (at most a minute later).
        """
        HUB.notify(self.db_key, SCHEDULES_CHANNEL)
        notify = self.dialect.notify(SCHEDULES_NOTIFY_CHANNEL, "")
        if notify is not None:
            async with self._autocommit() as conn:
                await conn.execute(select(notify))

    async def _reconcile_schedules(
        self, workflows: Iterable[str], declared: Sequence[ScheduleSpec]
    ) -> None:
        """Make the code-declared schedules of ``workflows`` exactly ``declared``, in one transaction.

        Each declared one is created or updated (its origin ``code``); a code-declared
        schedule of these workflows no longer declared is deleted. Schedules made through the
        API, and those of other workflows, are left alone.
        """
        names = sorted(set(workflows))
        t = self.tables

        def work(conn: Connection) -> None:
            for spec in declared:
                define_schedule(conn, t, spec, ScheduleOrigin.CODE)
            w = t.workflows
            ids = list(conn.execute(select(w.c.id).where(w.c.workflow_name.in_(names))).scalars())
            gone = conn.execute(undeclared_delete_stmt(t, ids, [s.name for s in declared]))
            if gone.rowcount:
                log.info("deleted %d schedule(s) no longer declared", gone.rowcount)

        await self._in_transaction(work)
        await self._schedules_changed()

    # ------------------------------------------------------------ firing

    async def _fire_due(self, workflow_ids: Sequence[int]) -> FirePass:
        """Fire the due ticks of the schedules of ``workflow_ids``: one transaction per schedule.

        Returns the runs triggered and the seconds until the earliest next tick among them.
        """
        s = self.tables.schedules
        mine = (s.c.workflow_id.in_(workflow_ids), s.c.paused.is_(False))
        due = select(s.c.id).where(*mine, s.c.next_tick_at <= utcnow())
        async with self._read() as conn:
            ids = list(
                (await conn.execute(due.order_by(s.c.next_tick_at).limit(PASS_SCHEDULES))).scalars()
            )
        fired = 0
        for schedule_id in ids:
            async with self._begin() as conn:
                runs, workflow = await conn.run_sync(self._fire_one, schedule_id)
            if runs:
                fired += runs
                self._wake(workflow)
        async with self._read() as conn:
            earliest, now = (
                await conn.execute(select(func.min(s.c.next_tick_at), utcnow()).where(*mine))
            ).one()
        if earliest is None:
            return FirePass(fired, None)
        wait = (aware(earliest) - aware(now)).total_seconds()  # type: ignore[operator]
        return FirePass(fired, max(0.0, wait))

    def _fire_one(self, conn: Connection, schedule_id: int) -> tuple[int, str]:
        """Fire schedule ``schedule_id``'s due ticks on ``conn``; returns (runs, workflow).

        Nothing if another worker holds the row (PostgreSQL) or fired it meanwhile.
        """
        t = self.tables
        s = t.schedules
        stmt = _select(t).where(
            s.c.id == schedule_id, s.c.paused.is_(False), s.c.next_tick_at <= utcnow()
        )
        row = conn.execute(self.dialect.lock_skip(stmt, s)).first()
        if row is None:
            return 0, ""
        m = row._mapping
        cadence = Cadence(m["cron"], m["every"], m["timezone"])
        stored = aware(m["next_tick_at"])
        assert stored is not None
        firing = plan(cadence, stored, _now(conn), CatchUp(m["catch_up"]))
        name, workflow = m["schedule_name"], m["workflow_name"]
        run_id = None
        for tick in firing.ticks:
            key = tick_key(name, tick)
            run_id = trigger_logic(conn, t, workflow, m["params"], key, 0.0, 0)
        if firing.skipped or firing.skipped_more:
            more = " or more" if firing.skipped_more else ""
            log.info(
                "schedule %s: skipped %d%s missed tick(s) from %s (catch_up=%s)",
                name,
                firing.skipped,
                more,
                stored.isoformat(),
                m["catch_up"],
            )
        advanced = conn.execute(
            advance_stmt(t),
            {
                "p_id": schedule_id,
                "p_old": m["next_tick_at"],
                "p_next": firing.next_tick,
                "p_last_tick": firing.ticks[-1] if firing.ticks else None,
                "p_last_run": run_id,
            },
        ).rowcount
        # The row is locked (or the transaction is SQLite's only writer): the set holds.
        assert advanced == 1, f"schedule {name!r} moved under a held lock"
        return len(firing.ticks), workflow
