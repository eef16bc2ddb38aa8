"""One delivery of one run to one worker (:class:`Execution`), and the writes that move it on.

The writes: checkpoint a step, record its error, finish, park (pause, retry later, wait).
Every one is fenced by the run's lease (the message's owner and delivery count), so a worker
that lost its lease changes nothing.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    ColumnElement,
    select,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from ._db import translated
from ._error_record import error_record as error_record, storable_text as storable_text
from ._logging import get_logger
from ._runs_write import finish_stmt, run_update_stmt
from ._signals import (
    _LeaseLostSignal,
    _Refused,
    _RunCancelledSignal,
    _TransitionRefusedSignal,
)
from ._steps_write import step_upsert_stmt
from .dialects import aware
from .models import RunStatus, StepStatus, Tables
from .queue import (
    Message,
    archive_delivery_stmt,
    lease_fence,
    refresh_lease_stmt,
    release_stmt,
)
from .retry import RetryPolicy

if TYPE_CHECKING:
    from .store import Store

log = get_logger("pgqrs_sqla.workflow")


@dataclass
class StepRecord:
    """What this delivery knows of one step of its run: its recorded status, output and attempts."""

    status: StepStatus
    output: Any
    attempts: int
    #: the step row's ``next_delivery``: the first delivery that may run the steps after it
    next_delivery: int | None = None
    #: NULL for a step; the primitive that wrote a durable wait's record (see ``_waits``)
    kind: str | None = None
    #: a durable wait's deadline
    wake_at: datetime | None = None


@dataclass
class Execution:
    """One delivery of one run to one worker."""

    store: Store
    worker_id: int
    message: Message
    run_id: int
    workflow: str
    params: Any
    policy: RetryPolicy
    steps: dict[str, StepRecord] = field(default_factory=dict)
    used: set[str] = field(default_factory=set)
    lease_lost: bool = False
    cancel_requested: bool = False
    #: the run that started this one (``ctx.start_child``), and when this run is cancelled if
    #: still unfinished (``trigger(timeout=)``)
    parent_run_id: int | None = None
    deadline_at: datetime | None = None
    #: the schedule's tick that triggered the run (None: not a scheduled run)
    scheduled_at: datetime | None = None
    #: what an observer stored with the run at its trigger (``_observe``)
    trace_context: str | None = None
    #: set when the run passed ``deadline_at``: it ends CANCELLED with this as its error
    deadline_error: dict[str, Any] | None = None
    #: the run waiting on this one (``ctx.wait_for_run``), as the write that ended it said
    awaited_by: int | None = None
    #: the step whose body raised ``error`` last (so a failure is charged to the right step)
    failed_step: tuple[str, BaseException] | None = None
    #: Hold one autocommit connection for the whole delivery (PostgreSQL, a worker pool
    #: with a connection to spare per run) instead of a pool checkout per write: the
    #: checkout and return cost about as much CPU as executing the statement itself.
    hold_connection: bool = False
    #: seconds a lease refresh extends the lease to (the worker's visibility timeout)
    lease_seconds: float = 30.0
    #: local monotonic time until which no one else can hold this delivery's lease (see
    #: :meth:`note_lease`); 0: unknown, so the next step body re-reads the lease first
    lease_deadline: float = 0.0
    #: the database clock less the local one, in seconds, as the last fenced write saw it
    db_skew: float = 0.0
    #: how many waits for each event name this delivery has called (the n-th is recorded
    #: under its own name: see ``_waits.wait_for_event``)
    event_waits: dict[str, int] = field(default_factory=dict)
    _conn: AsyncConnection | None = field(default=None, repr=False)
    _conn_busy: bool = field(default=False, repr=False)

    @property
    def tables(self) -> Tables:
        """The store's tables."""
        return self.store.tables

    def note_lease(self, sent: float, vt: datetime | None, now: datetime | None) -> None:
        """Learn the lease's expiry from a statement sent at monotonic time ``sent``.

        That statement returned the lease's ``vt`` and the database clock ``now``.

        Until the database clock passes ``vt`` no claim can take the message, and that
        statement's ``now`` was read no earlier than ``sent``: so until ``sent + (vt - now)``
        on the local monotonic clock (less a margin for the two clocks' drift) the lease is
        still ours, and a step body may start without asking the database.
        """
        vt, now = aware(vt), aware(now)
        if vt is None or now is None:
            return
        remaining = (vt - now).total_seconds()
        self.db_skew = (now - datetime.now(UTC)).total_seconds()
        self.lease_deadline = sent + remaining - LEASE_MARGIN - remaining * LEASE_DRIFT

    async def ensure_lease(self) -> None:
        """Before a step body runs: make sure this delivery still holds its lease.

        Free while the tracked deadline (:meth:`note_lease`) is ahead; past it, one round
        trip extends the lease, fenced by its token, and learns the new deadline. A delivery
        whose lease is gone (another worker claimed the run) gets ``_LeaseLostSignal``, so no
        further body runs in it.
        """
        if self.lease_lost:
            raise _LeaseLostSignal(f"lease on run {self.run_id} lost")
        if time.monotonic() < self.lease_deadline:
            return
        async with self.connection() as conn:
            sent = time.monotonic()
            row = (
                await conn.execute(
                    refresh_lease_stmt(self.tables), self.bind(p_vt=self.lease_seconds)
                )
            ).first()
            if row is None:
                raise await self.refusal(conn)
        self.note_lease(sent, row.lease_vt, row.db_now)

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConnection]:
        """The connection for one single-statement write (see ``StoreCore._autocommit``).

        The delivery's held one when it has one and it is free (steps of a run may run
        concurrently), else one from the pool. A held connection that saw an error is
        dropped, so the next write starts on a clean one.
        """
        if not self.hold_connection or self._conn_busy:
            async with self.store._autocommit() as conn:
                yield conn
            return
        self._conn_busy = True
        try:
            with translated():
                if self._conn is None:
                    self._conn = await self.store.engine.connect()
                    await self._conn.execution_options(isolation_level="AUTOCOMMIT")
                yield self._conn
        except BaseException:
            self._conn_busy = False
            await self.release_connection()
            raise
        finally:
            self._conn_busy = False

    async def release_connection(self) -> None:
        """Give the held connection back to the pool, unless a write is using it."""
        if self._conn_busy:
            return
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    def bind(self, **extra: Any) -> dict[str, Any]:
        """Bind parameters naming this delivery: the run, and the lease that fences writes."""
        return {
            "p_run_id": self.run_id,
            "p_msg_id": self.message.id,
            "p_worker_id": self.worker_id,
            "p_token": self.message.read_ct,
            **extra,
        }

    def fence(self) -> ColumnElement[bool]:
        """The lease fence of this delivery's statements (its parameters bound per call)."""
        return lease_fence(self.tables, self.store.dialect)

    def attempts_of(self, name: str) -> int:
        """How many deliveries ran step ``name``'s body, counting this one (see ``StepInfo``).

        Steps of a run run one after another, so every delivery since the step could first
        be reached was spent on it: since its own record (an error, a pause) if it has one,
        else since the latest ``next_delivery`` of the run's other steps (the delivery that
        recorded the step before it, or the one after a pause there). Deliveries that died
        in the body recorded nothing, and count all the same. From what the claim loaded
        and this delivery recorded: no round trip.
        """
        delivery = self.message.read_ct
        own = self.steps.get(name)
        if own is not None:
            if own.next_delivery is None:  # recorded by update_step, or before pgqrs 0003
                return own.attempts + 1
            return own.attempts + max(0, delivery - own.next_delivery) + 1
        first = 1
        for other, record in self.steps.items():
            if other == name:
                continue
            if record.next_delivery is not None:
                first = max(first, record.next_delivery)
            elif record.attempts > 0:  # a worker's record from before pgqrs 0003: unknown
                first = delivery  # so count from here, as pgqrs did then
        return max(1, delivery - first + 1)

    def until_deadline(self) -> float:
        """Seconds from the database's now to the run's deadline (inf: none)."""
        if self.deadline_at is None:
            return float("inf")
        remaining: float = (self.deadline_at - self.db_now()).total_seconds()
        return remaining

    def db_now(self) -> datetime:
        """The database clock now, as this delivery's last fenced write saw it against ours."""
        return datetime.now(UTC) + timedelta(seconds=self.db_skew)

    def remember(self, name: str, status: StepStatus, output: Any, kind: str | None) -> None:
        """Note a record this delivery wrote (``attempts`` 1, this delivery's token)."""
        self.steps[name] = StepRecord(status, output, 1, self.message.read_ct, kind)

    def step_upsert(
        self,
        dialect: str,
        name: str,
        status: StepStatus,
        output: Any,
        error: Any,
        attempts: int,
        duration: float,
    ) -> tuple[Any, dict[str, Any]]:
        """The fenced step upsert and its parameters: ``await conn.execute(*write)``.

        See :func:`step_upsert_stmt`.
        """
        return step_upsert_stmt(self.tables, dialect, status), (
            self.bind(
                p_step_name=name,
                p_output=output,
                p_error=error,
                p_attempts=attempts,
                p_duration=duration,
            )
        )

    async def refusal(self, conn: AsyncConnection | None = None) -> BaseException:
        """Why a fenced write that records no step's result changed nothing (:meth:`diagnose`).

        On ``conn``, or on a connection of its own when the write's transaction rolled back.
        """
        if conn is None:
            async with self.connection() as own:
                return await self.refusal(own)
        reason = await self.diagnose(conn)
        assert isinstance(reason, BaseException)  # only a step's write is won by a record
        return reason

    async def diagnose(
        self, conn: AsyncConnection | AsyncSession, step: str | None = None
    ) -> BaseException | StepRecord:
        """A fenced write changed nothing: say why — the lease is gone, or the run was cancelled.

        Or (for ``step``) the step already has a recorded success, which wins: ``update_step``
        recorded it from outside while the body ran. That record is returned.
        """
        t = self.tables
        still_held = (await conn.execute(select(self.fence()), self.bind())).scalar()
        if not still_held:
            self.lease_lost = True
            return _LeaseLostSignal(f"lease on run {self.run_id} lost")
        cancelled = (
            await conn.execute(select(t.runs.c.cancel_requested).where(t.runs.c.id == self.run_id))
        ).scalar()
        if cancelled:
            self.cancel_requested = True
            return _RunCancelledSignal(f"run {self.run_id} cancelled")
        if step is not None:
            s = t.steps
            row = (
                await conn.execute(
                    select(s.c.status, s.c.output, s.c.attempts).where(
                        s.c.run_id == self.run_id, s.c.step_name == step
                    )
                )
            ).first()
            if row is not None and row.status == StepStatus.SUCCESS.value:
                # Recorded from outside while this delivery ran the body: it goes on past it.
                return StepRecord(
                    StepStatus.SUCCESS, row.output, row.attempts, self.message.read_ct
                )
        return _TransitionRefusedSignal(
            f"a write of run {self.run_id} (step {step!r}) was refused by the state machine; "
            "the lease is still held"
        )

    async def checkpoint(self, name: str, output: Any, attempts: int, duration: float) -> Any:
        """Record the step's success; returns its value (the recorded one, if ``update_step`` won).

        The write returns the lease's expiry, which moves this delivery's lease deadline on for
        free.
        """
        async with self.connection() as conn:
            write = self.step_upsert(
                conn.dialect.name, name, StepStatus.SUCCESS, output, None, attempts, duration
            )
            sent = time.monotonic()
            row = (await conn.execute(*write)).first()
            if row is None:
                refused = await self.diagnose(conn, name)
                if isinstance(refused, BaseException):
                    raise refused
                output, attempts = refused.output, refused.attempts
            else:
                self.note_lease(sent, row.lease_vt, row.db_now)
        self.steps[name] = StepRecord(StepStatus.SUCCESS, output, attempts, self.message.read_ct)
        return output

    async def record_error(
        self, name: str, error: dict[str, Any], attempts: int, duration: float
    ) -> None:
        """Record the step's error (its ``attempts`` so far); the upsert is fenced by the lease."""
        async with self.connection() as conn:
            write = self.step_upsert(
                conn.dialect.name, name, StepStatus.ERROR, None, error, attempts, duration
            )
            await conn.execute(*write)
        self.steps[name] = StepRecord(StepStatus.ERROR, None, attempts, self.message.read_ct + 1)

    # ------------------------------------------------------------ ending a delivery

    async def finish(self, new: RunStatus, *, output: Any = None, error: Any = None) -> bool:
        """End the run (SUCCESS / ERROR / CANCELLED) and archive its message, atomically."""
        params = self.bind(p_output=output, p_error=error)
        if self.store.dialect.writable_ctes:
            # One round trip on an autocommit connection: both updates in one statement.
            async with self.connection() as conn:
                row = (await conn.execute(finish_stmt(self.tables, new), params)).first()
        else:
            async with self.store._begin() as conn:
                row = (
                    await conn.execute(
                        run_update_stmt(self.tables, new, True, self.store.dialect), params
                    )
                ).first()
                if row is not None:
                    await conn.execute(archive_delivery_stmt(self.tables), params)
        if row is None:
            return False
        self.awaited_by = row.awaited_by
        return True

    async def park(
        self,
        new: RunStatus,
        delay: float | Callable[[AsyncConnection], Awaitable[float]],
        step_write: Any = None,
        after: Callable[[AsyncConnection], Awaitable[None]] | None = None,
    ) -> bool:
        """Record the step and run status, release the message for ``delay`` s; all or nothing.

        The release is not a failed delivery. If any fenced write is refused (the lease was lost,
        or the step's state forbids it), the transaction rolls back and this returns False. Used
        for pauses, transient retries and durable waits. ``delay`` may be decided in the
        transaction, before any write (a function of its connection); ``after`` runs last in
        the transaction.
        """
        try:
            async with self.store._begin() as conn:
                if callable(delay):
                    delay = await delay(conn)
                if self.deadline_at is not None:  # wake at the deadline, to end the run there
                    delay = max(0.0, min(delay, self.until_deadline()))
                if step_write is not None and (await conn.execute(*step_write)).first() is None:
                    raise _Refused
                if (
                    new is RunStatus.PAUSED
                    and (
                        await conn.execute(
                            run_update_stmt(self.tables, new, False, self.store.dialect),
                            self.bind(),
                        )
                    ).first()
                    is None
                ):
                    raise _Refused
                released = await conn.execute(
                    release_stmt(self.tables, self.message, self.worker_id, delay)
                )
                if released.first() is None:
                    raise _Refused
                if after is not None:
                    await after(conn)
        except _Refused:
            return False
        return True


# ---------------------------------------------------------------- prebuilt statements
# Hot-path statements are built once per set of tables and bound per call: building and
# cache-keying a statement tree costs more than the database round trip it makes.

#: safety margin (seconds, plus a fraction of the time left) between the lease's expiry on
#: the database clock and the local deadline a step body may start before
LEASE_MARGIN = 0.1
LEASE_DRIFT = 0.01
