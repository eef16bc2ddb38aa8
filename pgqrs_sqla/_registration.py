"""A worker's identity: its row in ``pgqrs_workers`` — the only module that writes that table.

:class:`Registration` registers a worker's row (taking over a row whose holder is provably
dead), fences every later write of it (id, pid, hostname), writes its status and heartbeat,
and gives it up at shutdown. :class:`WorkersAdmin` (mixed into ``Store``) lists, counts and
prunes worker rows.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import sys
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, and_, delete, exc, func, select, update
from sqlalchemy.engine import Connection, Row
from sqlalchemy.ext.asyncio import AsyncConnection

from . import queue as q
from ._core import StoreCore
from ._db import translate
from ._logging import describe as _describe, get_logger
from .dialects import aware, utcnow, utcnow_plus
from .errors import DatabaseError, ValidationError, WorkerNameInUse
from .models import WorkerStatus

log = get_logger("pgqrs_sqla.worker")
T = TypeVar("T")

#: How long a stopping worker keeps retrying to give back its leases and mark its row
#: stopped through faults that may heal (seconds, from the first failure).
_DEREGISTER_BUDGET = 10.0
#: Waiting for a worker name (see _when_name_free): how often to look again, and how long
#: past the holder's heartbeat window to keep looking.
_NAME_WAIT_POLL = 0.5
_NAME_WAIT_MARGIN = 1.0


@dataclass(frozen=True)
class WorkerInfo:
    """A worker row: its name, host, status, the queues it serves and its heartbeat.

    ``queue`` is the first queue the worker serves; ``queues`` every queue it serves, as its row
    records them (see the attribute for older rows).
    """

    id: int
    name: str
    hostname: str
    port: int | None
    queue: str | None
    status: str
    started_at: datetime
    heartbeat_at: datetime
    heartbeat_age: float
    stopped_at: datetime | None
    #: the registering process's id (None for rows written before pgqrs 0002)
    pid: int | None = None
    #: the worker's heartbeat interval in seconds; its row is stale after three of them
    heartbeat_interval: float | None = None
    #: every queue the worker serves, ``queue`` first, as it registered them. A row written
    #: before pgqrs 0003 records only ``queue``: then ``queue`` and the queues of the messages
    #: it holds now (leases not yet ended), until the worker registers again
    queues: list[str] = field(default_factory=list)


class WorkersAdmin(StoreCore):
    """The Store's reads and housekeeping of worker rows."""

    async def list_workers(self) -> list[WorkerInfo]:
        """Every worker row, by name, with the queues each serves (see :class:`WorkerInfo`)."""
        w, t, msg = self.tables.workers, self.tables.queues, self.tables.messages
        stmt = (
            select(w, t.c.queue_name, utcnow().label("now"))
            .select_from(w.outerjoin(t, t.c.id == w.c.queue_id))
            .order_by(w.c.worker_name)
        )
        # Rows written before pgqrs 0003 record one queue: such a worker shows the others it
        # serves through the messages it holds (the rows of live, claimed messages: few,
        # whatever the backlog).
        held = (
            select(msg.c.consumer_worker_id, t.c.queue_name)
            .select_from(msg.join(t, t.c.id == msg.c.queue_id))
            .where(msg.c.archived_at.is_(None), msg.c.consumer_worker_id.is_not(None))
            .distinct()
            .order_by(t.c.queue_name)
        )
        async with self._read() as conn:
            rows = (await conn.execute(stmt)).all()
            holding: dict[int, list[str]] = {}
            for worker_id, queue_name in (await conn.execute(held)).all():
                holding.setdefault(worker_id, []).append(queue_name)
        result = []
        for r in rows:
            m = r._mapping
            heartbeat = aware(m["heartbeat_at"])
            assert heartbeat is not None
            first = [m["queue_name"]] if m["queue_name"] is not None else []
            served = m["queues"] if isinstance(m["queues"], list) else first
            result.append(
                WorkerInfo(
                    id=m["id"],
                    name=m["worker_name"],
                    hostname=m["hostname"],
                    port=m["port"],
                    queue=m["queue_name"],
                    status=m["status"],
                    started_at=aware(m["started_at"]),  # type: ignore[arg-type]
                    heartbeat_at=heartbeat,
                    heartbeat_age=(aware(m["now"]) - heartbeat).total_seconds(),  # type: ignore[operator]
                    stopped_at=aware(m["stopped_at"]),
                    pid=m["pid"],
                    heartbeat_interval=m["heartbeat_interval"],
                    queues=served + [n for n in holding.get(m["id"], []) if n not in served],
                )
            )
        return result

    async def prune_workers(
        self,
        *,
        older_than: timedelta | float = timedelta(days=7),
        dry_run: bool = False,
        limit: int = 1000,
    ) -> int:
        """Delete the rows of workers stopped longer than ``older_than`` ago; returns how many.

        With ``dry_run``: how many would go, deleting nothing.

        One statement deletes at most ``limit`` rows. A row a live or unfinished message
        still points at (a lease not yet given back) is never deleted, nor a worker that
        has not stopped. Archived messages the worker handled keep its id in
        ``consumer_worker_id`` (not a foreign key: a row's delete reads no message). Workers
        call this at registration with the default retention, so rows of restarted
        ``host-pid`` workers do not pile up.
        """
        seconds = older_than.total_seconds() if isinstance(older_than, timedelta) else older_than
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not seconds >= 0
            or seconds == float("inf")
        ):
            raise ValidationError(
                f"older_than must be a timedelta or a number of seconds >= 0, got {older_than!r}"
            )
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValidationError(f"limit must be a positive int, got {limit!r}")
        w, m = self.tables.workers, self.tables.messages
        prunable = (
            select(w.c.id)
            .where(
                w.c.status == WorkerStatus.STOPPED.value,
                w.c.stopped_at < utcnow_plus(-float(seconds)),
                ~select(m.c.id)
                .where(m.c.consumer_worker_id == w.c.id, m.c.archived_at.is_(None))
                .exists(),
            )
            .order_by(w.c.id)
            .limit(limit)
        )
        if dry_run:
            async with self._read() as conn:
                counted = select(func.count()).select_from(prunable.subquery())
                return int((await conn.execute(counted)).scalar_one())
        # DELETE has no LIMIT on PostgreSQL: bound it by the ids the subquery picks.
        stmt = delete(w).where(w.c.id.in_(prunable.scalar_subquery()))
        async with self._begin() as conn:
            deleted = int((await conn.execute(stmt)).rowcount)
        if deleted:
            log.info("pruned %d stopped worker row(s)", deleted)
        return deleted

    async def _prune_workers_quietly(self, worker: str) -> None:
        """A worker's housekeeping once registered: drop rows of long-stopped workers.

        The default retention applies (a ``host-pid`` name adds one row per restart), a bounded
        batch at a time. A failure is logged, never raised: it must not stop the worker starting.
        """
        try:
            await self.prune_workers(limit=100)
        except Exception as error:
            log.warning("worker %s: could not prune stopped worker rows: %s", worker, error)

    async def active_worker_count(self) -> int:
        w = self.tables.workers
        async with self._read() as conn:
            return int(
                (
                    await conn.execute(
                        select(func.count()).where(w.c.status != WorkerStatus.STOPPED.value)
                    )
                ).scalar_one()
            )


#: The worker rows this process's Worker objects hold, by (database, worker id). A row that
#: names our own pid but is not in here was left by an earlier life of this pid: a container
#: restart runs the worker as pid 1 again.
_LIVE: weakref.WeakValueDictionary[tuple[str, int], Registration] = weakref.WeakValueDictionary()


def _pid_running(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (signal 0 tests, delivers nothing).

    A zombie — killed, not yet reaped by its parent or init, which signal 0 still finds —
    is dead. When it cannot tell, it says yes: the worker row is then judged by its
    heartbeat alone.
    """
    if pid <= 0 or sys.platform == "win32":  # Windows' os.kill(pid, 0) would terminate it
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, under another user
        pass
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """Linux: the process has exited and only its entry is left; False where there is no procfs.

    ``/proc/PID/stat`` shows state ``Z``, or ``X`` while it is being reaped.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:  # reaped since the signal: gone
        return bool(os.path.isdir("/proc/self"))
    except OSError:
        return False
    # "pid (comm) S ...": comm may hold spaces and parentheses, so the state follows the last ")".
    state = stat[stat.rfind(b")") + 2 :][:1]
    return state in (b"Z", b"X")


async def _when_name_free(make: Callable[[], Awaitable[T]]) -> T:
    """``await make()`` (which registers a worker), waiting while its name's holder may be dead.

    While the name is held by a worker that may be dead — its heartbeat window has not passed
    yet — wait and try again, at most until that window (as first seen) has passed, and log that
    it waits. A live holder keeps heartbeating, so it still wins: the ``WorkerNameInUse`` is
    raised after the wait.

    For the embedded runners and the CLI, where a restart after a crash must not abort
    because the crashed process's row looks alive for a few more seconds.
    """
    deadline: float | None = None
    while True:
        try:
            return await make()
        except WorkerNameInUse as clash:
            stale_in: float | None = getattr(clash, "stale_in", None)
            if stale_in is None:
                raise
            now = time.monotonic()
            if deadline is None:
                deadline = now + stale_in + _NAME_WAIT_MARGIN
                log.warning(
                    "%s; waiting up to %.1fs for that worker to stop or its heartbeat to go "
                    "stale, then taking the name",
                    clash,
                    deadline - now,
                )
            if now >= deadline:
                raise
            await asyncio.sleep(min(_NAME_WAIT_POLL, deadline - now))


class Registration:
    """One worker's row: registered once, fenced by (id, pid, hostname) after that.

    ``store`` is the worker's store; ``queues`` the names it serves (``queue_id`` the
    first's id); ``heartbeat_interval`` is recorded on the row, so that others judge its
    staleness by this worker's own interval.
    """

    def __init__(
        self,
        store: WorkersAdmin,
        name: str,
        *,
        port: int | None,
        hostname: str,
        queues: list[str],
        queue_id: int,
        heartbeat_interval: float,
    ) -> None:
        self.store = store
        self.name = name
        self.port = port
        self.hostname = hostname
        self.queues = queues
        self.queue_id = queue_id
        self.heartbeat_interval = heartbeat_interval
        self.id = 0
        #: the process that registers the row (recorded on it, and part of its fence)
        self.pid = os.getpid()
        self.status = WorkerStatus.READY
        #: another registration took this worker's row (its heartbeat found it gone)
        self.taken_over = False
        #: orders status writes: suspend() racing the poll loop's start cannot reorder them
        self._status_lock = asyncio.Lock()

    async def register(self) -> None:
        """Insert the row, or take over the row of this name if its holder is provably dead.

        See :meth:`live_holder`; ``WorkerNameInUse`` if the holder is not dead.
        """
        w = self.store.tables.workers

        def work(conn: Connection) -> int:
            # FOR UPDATE (PostgreSQL; SQLite's write transaction serialises anyway): two
            # workers taking over one stale row queue up here, and the second sees the first.
            row = conn.execute(
                self.store.dialect.lock_for_update(
                    select(
                        w.c.id,
                        w.c.status,
                        w.c.heartbeat_at,
                        w.c.hostname,
                        w.c.pid,
                        w.c.heartbeat_interval,
                        utcnow().label("now"),
                    ).where(w.c.worker_name == self.name)
                )
            ).first()
            values = {
                "hostname": self.hostname,
                "port": self.port,
                "queue_id": self.queue_id,
                "queues": self.queues,
                "status": WorkerStatus.READY.value,
                "started_at": utcnow(),
                "heartbeat_at": utcnow(),
                "stopped_at": None,
                "pid": self.pid,
                "heartbeat_interval": self.heartbeat_interval,
            }
            if row is None:
                nested = conn.begin_nested()
                try:
                    new_id: int = conn.execute(
                        w.insert().values(worker_name=self.name, **values).returning(w.c.id)
                    ).scalar_one()
                    nested.commit()
                    return new_id
                except exc.IntegrityError:
                    nested.rollback()
                    raise WorkerNameInUse(
                        f"worker name {self.name!r} was registered concurrently by another worker; pick "
                        "another name",
                        worker=self.name,
                        stale_in=None,
                    ) from None
            holder = self.live_holder(row)
            if holder is not None:
                interval = row.heartbeat_interval or self.heartbeat_interval
                age = (aware(row.now) - aware(row.heartbeat_at)).total_seconds()  # type: ignore[operator]
                raise WorkerNameInUse(
                    f"worker name {self.name!r} is in use by an active worker ({holder}); "
                    "pick another name or stop that worker",
                    worker=self.name,
                    stale_in=max(0.0, 3 * interval - age),
                )
            conn.execute(update(w).where(w.c.id == row.id).values(**values))
            # A previous life of this name died holding leases: give them back now.
            conn.execute(q.release_dead_worker_stmt(self.store.tables, row.id))
            return int(row.id)

        self.id = await self.store._in_transaction(work)
        _LIVE[self.store.db_key, self.id] = self
        await self.store._prune_workers_quietly(self.name)  # rows stopped over a week ago
        log.info("worker %s registered (id %s) for %s", self.name, self.id, self.queues)

    def live_holder(self, row: Row[Any]) -> str | None:
        """Who holds the worker row ``row`` (described), or None if it may be taken over.

        A stopped row is free. A row registered from this host is free at once when its
        process is gone — or when it names our own pid but no Worker of this process holds it
        (a container restarts as pid 1 again) — so "worker-1" restarted after a crash gets
        its name back without waiting. Otherwise the row is live until its heartbeat is
        older than three of the *holder's* heartbeat intervals (ours for rows that do not
        record one): a newcomer with a short interval must not judge a live worker with a
        long one dead.
        """
        if row.status == WorkerStatus.STOPPED.value:
            return None
        if row.hostname == self.hostname and row.pid is not None:
            if row.pid == self.pid:
                if _LIVE.get((self.store.db_key, row.id)) is None:
                    return None
            elif not _pid_running(row.pid):
                return None
        interval = row.heartbeat_interval or self.heartbeat_interval
        age = (aware(row.now) - aware(row.heartbeat_at)).total_seconds()  # type: ignore[operator]
        if age >= 3 * interval:
            return None
        return (
            f"status {row.status}, pid {row.pid} on {row.hostname}, heartbeat {age:.1f}s ago, "
            f"every {interval:g}s"
        )

    def row_fence(self) -> ColumnElement[bool]:
        """The worker row as this Worker registered it.

        A later registration of the same name (another process, after judging this one dead) no
        longer matches.
        """
        w = self.store.tables.workers
        return and_(w.c.id == self.id, w.c.pid == self.pid, w.c.hostname == self.hostname)

    def holds_row(self) -> bool:
        """No other Worker of this process registered our row since.

        The fence's pid and hostname cannot tell two Workers of one process apart.
        """
        return _LIVE.get((self.store.db_key, self.id)) is self

    async def beat(self, conn: AsyncConnection) -> bool:
        """Write the heartbeat on ``conn``; False if another registration took the row."""
        if not self.holds_row():
            return False
        w = self.store.tables.workers
        stmt = update(w).where(self.row_fence()).values(heartbeat_at=utcnow()).returning(w.c.id)
        return (await conn.execute(stmt)).first() is not None

    async def set_status(self, status: WorkerStatus | Callable[[], WorkerStatus | None]) -> None:
        """Write the row's status: ``status``, or what the callable says (None: write nothing).

        The callable is called under the lock that orders status writes. Raises ``WorkerNameInUse``
        if another registration took the row.
        """
        w = self.store.tables.workers
        async with self._status_lock:
            chosen = status() if callable(status) else status
            if chosen is None:
                return
            values: dict[str, Any] = {"status": chosen.value, "heartbeat_at": utcnow()}
            if chosen is WorkerStatus.STOPPED:
                values["stopped_at"] = utcnow()
            row = None
            if self.holds_row():
                async with self.store._autocommit() as conn:
                    row = (
                        await conn.execute(
                            update(w).where(self.row_fence()).values(**values).returning(w.c.id)
                        )
                    ).first()
            if row is None:
                self.taken_over = True
                raise WorkerNameInUse(
                    f"worker {self.name!r} (id {self.id}): another worker registered this name "
                    "after judging this one dead; this one must stop",
                    worker=self.name,
                )
            self.status = chosen

    async def deregister(self, leases: dict[int, int], released: Callable[[], None]) -> None:
        """Give back ``leases`` (then call ``released``) and mark the row stopped.

        A fault that may heal (SQLite busy under load, a cancelled statement) is retried a few
        times, within ``_DEREGISTER_BUDGET`` seconds. What still fails is logged, never raised: the
        leases then expire and the row goes stale on their own.
        """
        first_failure: float | None = None
        for attempt in itertools.count():
            try:
                if leases:
                    # Fenced by token: a retry after a release that went through is a no-op.
                    async with self.store._autocommit() as conn:
                        await conn.execute(
                            q.release_many_stmt(self.store.tables),
                            {"p_leases": list(leases.items()), "p_worker_id": self.id},
                        )
                    leases = {}
                released()
                if not self.taken_over:  # otherwise the row is the new holder's
                    await self.set_status(WorkerStatus.STOPPED)
                return
            except Exception as error:
                mapped = translate(error, "stopping the worker")
                now = time.monotonic()
                first_failure = now if first_failure is None else first_failure
                if (
                    isinstance(mapped, DatabaseError)
                    and mapped.transient
                    and now - first_failure < _DEREGISTER_BUDGET
                ):
                    delay = min(1.0, 0.1 * 2.0**attempt) * random.uniform(0.5, 1.0)
                    log.warning(
                        "worker %s: deregistering failed (%s); retrying in %.1fs",
                        self.name,
                        _describe(mapped),
                        delay,
                    )
                    await asyncio.sleep(delay)
                    continue
                log.warning(
                    "worker %s: could not deregister cleanly (%s); its leases expire and its "
                    "row goes stale on their own",
                    self.name,
                    _describe(mapped),
                )
                return
