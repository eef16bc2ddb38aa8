"""Retention: deleting finished runs, archived messages and stopped worker rows once old enough.

:class:`Retention` (mixed into ``Store``) prunes on demand (:meth:`Retention.prune`) and in the
background of every worker (``_heartbeat.Heartbeat`` calls :meth:`Retention._prune_round`).
Each batch is one short transaction of at most ``batch_size`` runs (or messages):

- the runs are chosen by :func:`~pgqrs_sqla._runs_write.expired_runs_select` (finished, past
  their workflow's retention, their message archived), locked ``FOR UPDATE SKIP LOCKED`` on
  PostgreSQL, so a batch never waits for a row anyone holds, and nobody waits for a row a
  batch skipped; claims never read archived messages or finished runs at all;
- the runs are deleted (``_runs_write``; steps and events go by foreign key, an app's
  foreign key to runs decides for its rows), then their messages (``queue``);
- archived messages of plain queues past their queue's retention are deleted the same way;
- stopped worker rows go through :meth:`WorkersAdmin.prune_workers`.

In the background, a worker prunes once per ``prune_interval`` (with jitter), and on
PostgreSQL only while it holds a transaction-scoped advisory lock it tried for without
waiting, so one worker of many prunes at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, MetaData, Select, Table, exc, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from . import queue as q
from ._logging import get_logger
from ._registration import WorkersAdmin
from ._runs_write import delete_runs_stmt, expired_runs_select
from .errors import ValidationError

log = get_logger("pgqrs_sqla.retention")

#: runs (or messages) one prune transaction deletes at most
PRUNE_BATCH = 500
#: batches a worker's background prune runs per round, at most (the rest waits a round)
ROUND_BATCHES = 20


@dataclass(frozen=True)
class PruneResult:
    """What :meth:`Store.prune` removed, or would with ``dry_run``."""

    #: finished runs deleted (with their steps and events)
    runs: int
    #: archived messages deleted: the pruned runs' and plain queues' own
    messages: int
    #: stopped worker rows deleted
    workers: int
    #: nothing was deleted: the counts are what a prune would remove now
    dry_run: bool = False


@dataclass(frozen=True)
class _Batch:
    runs: int
    messages: int

    @property
    def empty(self) -> bool:
        return self.runs == 0 and self.messages == 0


def _count(stmt: Select[Any]) -> Select[int]:
    return select(func.count()).select_from(stmt.subquery())


def _restricting_columns(metadata: MetaData, runs: Table) -> list[Column[Any]]:
    """The columns of other tables in ``metadata`` whose foreign key to ``runs`` restricts.

    A key without ``ON DELETE`` (or with ``RESTRICT``/``NO ACTION``) would make the database
    refuse a run's delete; ``SET NULL`` and ``CASCADE`` let it through.
    """
    columns = []
    for table in metadata.tables.values():
        if table is runs:
            continue
        for fk in table.foreign_keys:
            try:
                to_runs = fk.references(runs)
            except exc.SQLAlchemyError:  # a key to a table this metadata does not have
                continue
            if to_runs and (fk.ondelete or "NO ACTION").upper() in {"NO ACTION", "RESTRICT"}:
                columns.append(fk.parent)
    return columns


class Retention(WorkersAdmin):
    """The Store's pruning: finished runs, archived messages and stopped worker rows."""

    #: runs (or messages) per transaction of a worker's background prune
    _round_batch: int = PRUNE_BATCH

    async def prune(self, *, dry_run: bool = False, batch_size: int = PRUNE_BATCH) -> PruneResult:
        """Delete what is past its retention now; returns how much (see :class:`PruneResult`).

        Finished runs: ``SUCCESS``/``CANCELLED`` ones ended longer than their workflow's
        ``retention`` ago, ``ERROR`` ones longer than its ``error_retention`` (else the
        store's ``connect(retention=, error_retention=)``), with their steps, events and
        message. Archived messages of plain queues: past their queue's ``retention`` (else the
        store's). Worker rows stopped longer than the store's ``retention`` ago.

        It works in transactions of at most ``batch_size`` runs (or messages) each, until
        nothing is left, so it holds locks briefly; on PostgreSQL a batch skips rows others
        hold and never blocks a claim or a trigger. With ``dry_run`` it counts, deleting
        nothing. Workers prune on their own (``connect(prune_interval=)``); this is for a
        prune now, say after lowering a retention.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValidationError(
                f"batch_size must be an int >= 1, got {batch_size!r}",
                option="batch_size",
                value=batch_size,
            )
        if dry_run:
            return await self._prune_counts()
        runs = messages = 0
        while True:
            async with self._begin() as conn:
                batch = await self._prune_batch(conn, batch_size)
            runs, messages = runs + batch.runs, messages + batch.messages
            if batch.runs < batch_size and batch.messages < batch_size:
                break
        workers = await self._prune_all_workers()
        if runs or messages:
            log.info("pruned %d run(s) and %d archived message(s)", runs, messages)
        return PruneResult(runs=runs, messages=messages, workers=workers)

    async def _prune_all_workers(self, *, dry_run: bool = False) -> int:
        total = 0
        while True:
            n = await self.prune_workers(older_than=self.retention, dry_run=dry_run, limit=1000)
            total += n
            if dry_run or n < 1000:
                return total

    async def _prune_counts(self) -> PruneResult:
        t = self.tables
        expired = self._expired_runs()
        with_message = expired.where(t.runs.c.message_id.is_not(None))
        async with self._read() as conn:
            runs = int((await conn.execute(_count(expired))).scalar_one())
            run_messages = int((await conn.execute(_count(with_message))).scalar_one())
            messages = 0
            for queue in await self._plain_queues(conn):
                plain = _count(self._expired_messages())
                messages += int((await conn.execute(plain, queue)).scalar_one())
        workers = await self._prune_all_workers(dry_run=True)
        return PruneResult(runs, run_messages + messages, workers, dry_run=True)

    def _expired_runs(self) -> Select[Any]:
        keep = self.dialect.reuses_deleted_ids
        return expired_runs_select(
            self.tables,
            self.retention,
            self.error_retention,
            keep_newest=keep,
            referenced_by=_restricting_columns(self.models.metadata, self.tables.runs),
        )

    def _expired_messages(self) -> Select[int]:
        keep = self.dialect.reuses_deleted_ids
        return q.expired_messages_select(self.tables, keep_newest=keep)

    async def _plain_queues(self, conn: AsyncConnection) -> list[dict[str, Any]]:
        """Each plain queue's parameters of :meth:`_expired_messages` (its id and retention)."""
        rows = await conn.execute(q.plain_queues_select(self.tables, self.retention))
        return [{"p_queue_id": row.id, "p_kept": row.kept} for row in rows]

    async def _prune_batch(self, conn: AsyncConnection, batch_size: int) -> _Batch:
        """One batch, in ``conn``'s transaction: up to ``batch_size`` runs, then messages.

        On PostgreSQL the chosen runs and their messages are locked ``SKIP LOCKED``: rows
        another transaction holds (a ``retry_run`` taking a run back) are left for later,
        and nothing here waits for a row lock.
        """
        t = self.tables
        r, m = t.runs, t.messages
        expired = self._expired_runs()
        # Message then run, the house lock order; a run without a message locks its row only.
        oldest = r.c.finished_at  # along the finished-runs index: only the expired are read
        with_message = self.dialect.lock_skip(
            expired.join(m, m.c.id == r.c.message_id).order_by(oldest).limit(batch_size), r, m
        )
        chosen = list((await conn.execute(with_message)).all())
        if len(chosen) < batch_size:
            without = expired.where(r.c.message_id.is_(None)).order_by(oldest)
            without = self.dialect.lock_skip(without.limit(batch_size - len(chosen)), r)
            chosen += list((await conn.execute(without)).all())
        runs = messages = 0
        if chosen:
            ids = [row.id for row in chosen]
            runs = int((await conn.execute(delete_runs_stmt(t, ids))).rowcount)
            message_ids = [row.message_id for row in chosen if row.message_id is not None]
            if message_ids:
                deleted = await conn.execute(q.delete_archived_stmt(t, message_ids))
                messages = int(deleted.rowcount)
        # Queue by queue, each one's expired messages along its archived index.
        plain_ids: list[int] = []
        for queue in await self._plain_queues(conn):
            if len(plain_ids) >= batch_size:
                break
            expired_messages = self._expired_messages().order_by(m.c.archived_at)
            plain = self.dialect.lock_skip(expired_messages.limit(batch_size - len(plain_ids)), m)
            plain_ids += list((await conn.execute(plain, queue)).scalars())
        if plain_ids:
            messages += int((await conn.execute(q.delete_archived_stmt(t, plain_ids))).rowcount)
        return _Batch(runs, messages)

    async def _prune_round(self, worker: str) -> PruneResult:
        """A worker's background prune: a few batches, while no other worker prunes.

        On PostgreSQL each batch first tries the prune advisory lock (never waiting): another
        worker pruning now ends the round at once. At most :data:`ROUND_BATCHES` batches, then
        stopped worker rows. Errors are the caller's to log.
        """
        runs = messages = 0
        batch_size = self._round_batch
        gate = self.dialect.try_prune_lock()
        for _ in range(ROUND_BATCHES):
            async with self._begin() as conn:
                if gate is not None and not (await conn.execute(select(gate))).scalar_one():
                    log.debug("worker %s: another worker is pruning; skipped", worker)
                    break
                batch = await self._prune_batch(conn, batch_size)
            runs, messages = runs + batch.runs, messages + batch.messages
            if batch.runs < batch_size and batch.messages < batch_size:
                break
        workers = await self.prune_workers(older_than=self.retention, limit=100)
        if runs or messages or workers:
            log.info(
                "worker %s: pruned %d run(s), %d archived message(s), %d worker row(s)",
                worker,
                runs,
                messages,
                workers,
            )
        return PruneResult(runs=runs, messages=messages, workers=workers)
