"""Queue administration, mixed into the Store: create, look up, list, delete and purge queues.

Also their message counts, and dead letters (listed and replayed). The queue rows are
written through :mod:`pgqrs_sqla._catalog_write`, the messages through
:mod:`pgqrs_sqla.queue`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, case, exc, func, select
from sqlalchemy.engine import Connection

from . import queue as q
from ._catalog_write import (
    queue_delete_stmt,
    queue_insert_stmt,
    queue_retention_stmt,
    set_limits,
)
from ._core import StoreCore
from ._limits import Limit, Limits, RateLimitOption, limit_columns
from ._message import check_max_deliveries
from ._runs_write import requeue_dead_runs_stmt
from .dialects import aware, utcnow
from .errors import DeadLetterNotFound, QueueBusy, QueueNotFound, duration_seconds
from .models import ArchiveReason


@dataclass(frozen=True)
class QueueInfo:
    """A queue: its ``id``, ``name``, ``max_deliveries`` and ``created_at``.

    ``max_deliveries`` is how many deliveries a message gets before it becomes a dead letter.
    """

    id: int
    name: str
    max_deliveries: int
    created_at: datetime
    #: how long its archived messages are kept, in seconds (``create_queue(retention=)``);
    #: None: the store's default
    retention: float | None = None
    #: at most this many of its messages leased at once, across every worker (None: no limit)
    concurrency: int | None = None
    #: at most ``rate_limit[0]`` claims per window of ``rate_limit[1]`` seconds (None: none)
    rate_limit: tuple[int, float] | None = None


def rate_of(limits: Limits) -> tuple[int, float] | None:
    """The ``rate_limit`` an info type shows: ``(starts, period in seconds)``, or None."""
    if limits.rate_limit is None or limits.rate_period is None:
        return None
    return (limits.rate_limit, limits.rate_period)


def _queue_info(m: Any) -> QueueInfo:
    limits = Limits(m["concurrency"], None, m["rate_limit"], m["rate_period"])
    return QueueInfo(
        m["id"],
        m["queue_name"],
        m["max_deliveries"],
        aware(m["created_at"]),  # type: ignore[arg-type]
        m["retention"],
        limits.concurrency,
        rate_of(limits),
    )


@dataclass(frozen=True)
class QueueStats:
    """Message counts of one queue (:meth:`Store.queue_stats`) and its oldest ready message's age.

    ``ready`` to be claimed, ``leased`` to a worker now, ``delayed`` (not visible yet),
    ``archived`` (done), ``dead`` (dead letters), and ``oldest_ready_age``: the age in seconds of
    the oldest ready message (None if none).
    """

    name: str
    ready: int
    leased: int
    delayed: int
    archived: int
    dead: int
    oldest_ready_age: float | None


class QueuesAdmin(StoreCore):
    """Queue administration (see the module docstring)."""

    async def create_queue(
        self,
        name: str,
        *,
        max_deliveries: int = 5,
        retention: float | timedelta | None = None,
        concurrency: Limit = None,
        rate_limit: RateLimitOption = None,
    ) -> QueueInfo:
        """Create a queue (idempotent: an existing queue is returned unchanged).

        ``retention`` (seconds or a ``timedelta``) is how long its archived messages are kept
        before a prune deletes them (default: the store's ``retention``); given for an
        existing queue, it is updated.

        ``concurrency`` (at most that many of its messages leased at once, across every
        worker) and ``rate_limit`` (``(starts, period)``: at most that many claims per window)
        are enforced by the claim (see the Limits docs page). Given for an existing queue they update
        it, ``UNLIMITED`` removes one, ``None`` keeps it. Bad input writes nothing.
        """
        q.validate_name(name)
        check_max_deliveries(max_deliveries)
        kept = (
            None if retention is None else duration_seconds(retention, "retention", positive=True)
        )
        limits = limit_columns(concurrency=concurrency, rate_limit=rate_limit)

        def work(conn: Connection) -> QueueInfo:
            info = self._create_queue(conn, name, max_deliveries)
            if kept is None and not limits:
                return info
            if kept is not None:
                conn.execute(queue_retention_stmt(self.tables, name, kept))
            set_limits(conn, self.tables, name, limits)
            return self._create_queue(conn, name, max_deliveries)

        info = await self._in_transaction(work)
        if limits:  # a worker held back by the old limit claims again at once
            self._wake(name)
        return info

    def _create_queue(self, conn: Connection, name: str, max_deliveries: int) -> QueueInfo:
        t = self.tables.queues
        existing = conn.execute(select(t).where(t.c.queue_name == name)).first()
        if existing is None:
            nested = conn.begin_nested()
            try:
                conn.execute(queue_insert_stmt(self.tables, name, max_deliveries))
                nested.commit()
            except exc.IntegrityError:
                nested.rollback()  # created concurrently: take theirs
            existing = conn.execute(select(t).where(t.c.queue_name == name)).one()
        m = existing._mapping
        return _queue_info(m)

    async def get_queue(self, name: str) -> QueueInfo:
        q.validate_name(name)
        t = self.tables.queues
        async with self._read() as conn:
            row = (await conn.execute(select(t).where(t.c.queue_name == name))).first()
        if row is None:
            raise QueueNotFound(
                f"no queue named {name!r}: create it with `await store.create_queue({name!r})`, "
                "or check the name (store.list_queues() lists them)",
                queue=name,
            )
        m = row._mapping
        return _queue_info(m)

    async def _queue_id(self, name: str) -> int:
        if name not in self._queue_ids:
            self._queue_ids[name] = (await self.get_queue(name)).id
        return self._queue_ids[name]

    async def list_queues(self) -> list[QueueInfo]:
        t = self.tables.queues
        async with self._read() as conn:
            rows = (await conn.execute(select(t).order_by(t.c.queue_name))).all()
        return [_queue_info(r._mapping) for r in rows]

    async def delete_queue(self, name: str, *, force: bool = False) -> None:
        """Delete a queue and its messages. Refused while messages are leased, unless forced.

        The check holds against concurrent claims: nothing a worker has claimed is deleted
        unless ``force`` says so.
        """
        info = await self.get_queue(name)
        m, t = self.tables.messages, self.tables.queues
        ours, leased = m.c.queue_id == info.id, q.leased_now(self.tables)

        def busy(conn: Connection) -> None:
            count = conn.execute(select(func.count()).where(ours, leased)).scalar_one()
            if count:
                raise QueueBusy(
                    f"queue {name!r} has {count} leased message(s); wait, or pass force=True",
                    queue=name,
                    leased=count,
                )

        def work(conn: Connection) -> None:
            # SQLite: this whole transaction holds the write lock, so no claim interleaves.
            # The queue row first: an enqueue's foreign key check needs a share lock on
            # it, so no message is added until this transaction ends.
            conn.execute(self.dialect.lock_for_update(select(t.c.id).where(t.c.id == info.id)))
            if not force:
                busy(conn)  # the common refusal, before deleting anything
                # A claim can commit after that count. So delete only what is not leased:
                # a row a claim is changing is waited for and re-checked against its new
                # version, and kept if leased. A lease taken meanwhile is then still there
                # to count, and the rollback puts everything back.
                conn.execute(q.delete_messages_stmt(self.tables, info.id, leased=False))
                busy(conn)
            conn.execute(q.delete_messages_stmt(self.tables, info.id))
            conn.execute(queue_delete_stmt(self.tables, info.id))

        await self._in_transaction(work)
        self._queue_ids.pop(name, None)

    async def purge_queue(self, name: str) -> int:
        """Delete every message of the queue that is not leased; return how many."""
        info = await self.get_queue(name)
        stmt = q.delete_messages_stmt(self.tables, info.id, leased=False)
        async with self._begin() as conn:
            return (await conn.execute(stmt)).rowcount

    async def queue_stats(self, name: str | None = None) -> list[QueueStats]:
        """Per-queue counts of ready, leased, delayed, archived and dead messages."""
        m, t = self.tables.messages, self.tables.queues
        now = utcnow()
        live = m.c.archived_at.is_(None)
        leased = live & m.c.consumer_worker_id.is_not(None) & (m.c.vt > now)
        ready = live & (m.c.vt <= now)
        delayed = live & m.c.consumer_worker_id.is_(None) & (m.c.vt > now)

        def count(cond: ColumnElement[bool]) -> ColumnElement[int]:
            return func.coalesce(func.sum(case((cond, 1), else_=0)), 0)

        stmt = (
            select(
                t.c.queue_name,
                count(ready),
                count(leased),
                count(delayed),
                count(m.c.archive_reason == ArchiveReason.DONE.value),
                count(m.c.archive_reason == ArchiveReason.DEAD.value),
            )
            .select_from(t.outerjoin(m, m.c.queue_id == t.c.id))
            .group_by(t.c.queue_name)
            .order_by(t.c.queue_name)
        )
        oldest = (
            select(t.c.queue_name, func.min(m.c.enqueued_at), now)
            .select_from(t.join(m, m.c.queue_id == t.c.id))
            .where(ready)
            .group_by(t.c.queue_name)
        )
        if name is not None:
            stmt = stmt.where(t.c.queue_name == q.validate_name(name))
        async with self._read() as conn:
            rows = (await conn.execute(stmt)).all()
            ages = {
                r[0]: (aware(r[2]) - aware(r[1])).total_seconds()  # type: ignore[operator]
                for r in (await conn.execute(oldest)).all()
            }
        if name is not None and not rows:
            raise QueueNotFound(
                f"no queue named {name!r}: create it with `await store.create_queue({name!r})`, "
                "or check the name (store.list_queues() lists them)",
                queue=name,
            )
        return [
            QueueStats(r[0], int(r[1]), int(r[2]), int(r[3]), int(r[4]), int(r[5]), ages.get(r[0]))
            for r in rows
        ]

    async def dead_letters(self, name: str, *, limit: int = 100) -> list[q.Message]:
        """Messages of ``name`` that exhausted ``max_deliveries`` (oldest first)."""
        qid = (await self.get_queue(name)).id
        m = self.tables.messages
        stmt = (
            select(m)
            .where(m.c.queue_id == qid, m.c.archive_reason == ArchiveReason.DEAD.value)
            .order_by(m.c.id)
            .limit(limit)
        )
        async with self._read() as conn:
            return [q.Message.from_row(r) for r in (await conn.execute(stmt)).all()]

    async def replay_dead_letters(
        self, name: str, message_ids: Sequence[int] | None = None
    ) -> list[int]:
        """Make dead messages (all, or those listed) ready again; returns their ids.

        A workflow run whose message died is put back to ``QUEUED`` with it. A listed id that
        is not a dead letter of ``name`` raises :class:`DeadLetterNotFound` (its
        ``message_ids`` attribute names them) and nothing is replayed.
        """
        qid = (await self.get_queue(name)).id
        wanted = None if message_ids is None else sorted(set(message_ids))

        def work(conn: Connection) -> list[int]:
            ids = sorted(conn.execute(q.replay_dead_stmt(self.tables, qid, wanted)).scalars())
            missing = [i for i in wanted or () if i not in ids]
            if missing:
                # Raised inside the transaction: its rollback undoes the ids that were found.
                raise DeadLetterNotFound(
                    f"no dead letter {', '.join(map(str, missing))} in queue {name!r}: "
                    f"`pgqrs-sqla dead-letters list {name}` (or store.dead_letters) shows them",
                    queue=name,
                    message_ids=missing,
                )
            if ids:
                conn.execute(requeue_dead_runs_stmt(self.tables, ids))
            return ids

        ids = await self._in_transaction(work)
        if ids:
            self._wake(name)
        return ids
