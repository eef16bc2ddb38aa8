"""The run context handed to a workflow handler (``ctx.step``), and the writes that move a run on.

The writes: checkpoint a step, finish, pause, retry later.

Every write here is fenced by the run's lease (the message's owner and delivery count), so
a worker that lost its lease changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    ColumnElement,
    select,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from ._db import translated
from ._error_record import error_record as error_record, storable_text as storable_text
from ._logging import get_logger, step_var
from ._runs_write import finish_stmt, run_update_stmt
from ._signals import (
    Pause,
    _ConnectionLostSignal,
    _LeaseLostSignal,
    _RecordedMeanwhile,
    _Refused,
    _RetryLater,
    _RunCancelledSignal,
    _StepExhausted,
    _StepPaused,
    _TransitionRefusedSignal,
)
from ._steps_write import step_upsert_stmt
from .codec import check_json, check_text
from .dialects import aware
from .errors import (
    DatabaseUnavailable,
    HandlerError,
    PayloadError,
    StepNameReused,
    TransientError,
)
from .models import RunStatus, StepStatus, Tables
from .queue import (
    Message,
    archive_delivery_stmt,
    held,
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
                raise await self.diagnose(conn)  # type: ignore[misc]
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
                return row is not None
        async with self.store._begin() as conn:
            if (
                await conn.execute(
                    run_update_stmt(self.tables, new, True, self.store.dialect), params
                )
            ).first() is None:
                return False
            await conn.execute(archive_delivery_stmt(self.tables), params)
        return True

    async def park(self, new: RunStatus, delay: float, step_write: Any = None) -> bool:
        """Record the step and run status, release the message for ``delay`` s; all or nothing.

        The release is not a failed delivery. If any fenced write is refused (the lease was lost,
        or the step's state forbids it), the transaction rolls back and this returns False. Used
        for pauses and transient retries.
        """
        try:
            async with self.store._begin() as conn:
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


class RunContext:
    """What a workflow handler gets as ``ctx``: ``await ctx.step(name, fn)``."""

    def __init__(self, execution: Execution) -> None:
        self._x = execution

    @property
    def run_id(self) -> int:
        """The id of the run being executed."""
        return self._x.run_id

    @property
    def workflow(self) -> str:
        """The name of the run's workflow."""
        return self._x.workflow

    @property
    def attempt(self) -> int:
        """Which delivery of this run this is (1 for the first)."""
        return self._x.message.read_ct

    def __repr__(self) -> str:
        return f"<RunContext run={self.run_id} workflow={self.workflow!r} attempt={self.attempt}>"

    async def step(
        self,
        name: str,
        fn: Callable[..., Any],
        *,
        transactional: bool = False,
        retry: RetryPolicy | None = None,
    ) -> Any:
        """Run step ``name`` once per run, recording its JSON result.

        If the step already succeeded in an earlier delivery, its recorded value is returned
        without calling ``fn``. ``fn`` takes no arguments (a sync callable runs in a
        thread); with ``transactional=True`` it takes an ``AsyncSession`` (or, if sync, a
        ``Session``, run on the event loop, so keep CPU work out of it) whose writes commit in
        one transaction with the step's record.
        """
        x = self._x
        check_text(name, what="step name", option="name")  # str, 1-255, storable
        if name in x.used:
            raise StepNameReused(
                f"step {name!r} was already called in run {x.run_id}; give each step a unique name",
                run_id=x.run_id,
                step_name=name,
            )
        x.used.add(name)
        recorded = x.steps.get(name)
        if recorded is not None and recorded.status is StepStatus.SUCCESS:
            return recorded.output
        if x.lease_lost:
            raise _LeaseLostSignal(f"lease on run {x.run_id} lost")
        if x.cancel_requested:
            raise _RunCancelledSignal(f"run {x.run_id} cancelled")
        attempts = x.attempts_of(name)
        token = step_var.set(name)
        try:
            return await self._execute(name, fn, attempts, transactional, retry)
        finally:
            step_var.reset(token)

    def _step_value(self, name: str, result: Any) -> Any:
        """Step ``name``'s return value as a replay reads it back, so the live call returns that.

        It is JSON-checked; a :class:`Pause` the body returned is raised.
        """
        if isinstance(result, Pause):
            raise result
        return check_json(
            result,
            what=f"result of step {name!r}",
            max_bytes=self._x.store.max_payload_bytes,
            default=self._x.store.json_default,
        )

    async def _execute(
        self,
        name: str,
        fn: Callable[..., Any],
        attempts: int,
        transactional: bool,
        retry: RetryPolicy | None,
    ) -> Any:
        x = self._x
        started = time.monotonic()
        try:
            if transactional:
                result = await self._transactional(name, fn, attempts, started)
                log.debug("step %s done (transactional)", name)
                return result
            # A transactional body runs under its own lock on the message row; a plain one
            # must know first that no other worker can have taken the run over.
            await x.ensure_lease()
            result = self._step_value(name, await _call(fn))
        except Pause as pause:
            raise _StepPaused(name, pause.seconds, attempts) from None
        except TransientError as error:
            policy = retry or x.policy
            record = error_record(error, step=name, attempts=attempts)
            if attempts >= policy.max_attempts:
                await x.record_error(name, record, attempts, time.monotonic() - started)
                raise _StepExhausted(name, record) from error
            delay = error.retry_after if error.retry_after is not None else policy.delay(attempts)
            log.info("step %s: transient error (attempt %d), retry in %.2fs", name, attempts, delay)
            raise _RetryLater(name, attempts, delay, record) from error
        except (_LeaseLostSignal, _RunCancelledSignal, PayloadError):
            raise
        except DatabaseUnavailable as error:
            raise _ConnectionLostSignal(str(error)) from error
        except Exception as error:
            x.failed_step = (name, error)
            await x.record_error(
                name,
                error_record(error, step=name, attempts=attempts),
                attempts,
                time.monotonic() - started,
            )
            raise
        try:
            result = await x.checkpoint(name, result, attempts, time.monotonic() - started)
        except DatabaseUnavailable as error:
            raise _ConnectionLostSignal(str(error)) from error
        log.debug("step %s done", name)
        return result

    async def _transactional(
        self, name: str, fn: Callable[..., Any], attempts: int, started: float
    ) -> Any:
        x = self._x
        try:
            return await self._transaction(name, fn, attempts, started)
        except _RecordedMeanwhile as recorded:
            # update_step recorded this step while fn ran: fn's writes rolled back, and the
            # run goes on with the recorded value, as every later replay will.
            x.steps[name] = recorded.record
            return recorded.record.output

    async def _transaction(
        self, name: str, fn: Callable[..., Any], attempts: int, started: float
    ) -> Any:
        x = self._x
        t = x.tables
        await x.release_connection()  # the session takes its own: never hold two per run
        sent = time.monotonic()  # before the transaction begins, so before its now()
        async with (
            x.store._writer(),
            AsyncSession(x.store.engine, expire_on_commit=False) as session,
        ):
            with translated(f"transactional step {name!r}"):
                async with session.begin():
                    # Lock our message row until commit: a concurrent claim (FOR UPDATE SKIP
                    # LOCKED) cannot take the run over while this transaction decides. KEY
                    # SHARE, not UPDATE: our own heartbeat must still extend the lease (an
                    # UPDATE of vt takes only FOR NO KEY UPDATE, which KEY SHARE admits), or
                    # a long step would let every other lease this worker holds expire.
                    lock = select(t.messages.c.id).where(
                        held(t, x.message.id, x.worker_id, x.message.read_ct)
                    )
                    lock = x.store.dialect.lock_fence(lock, held=True)
                    if (await session.execute(lock)).first() is None:
                        raise _as_signal(await x.diagnose(session))
                    if inspect.iscoroutinefunction(fn):
                        result = await fn(session)
                    else:
                        result = await session.run_sync(fn)
                        if inspect.isawaitable(result):
                            # e.g. ``lambda session: save(session)`` with an ``async def
                            # save``: the lambda got a sync Session, which cannot be awaited
                            # on. Refuse (rolling the transaction back) rather than run it.
                            if inspect.iscoroutine(result):
                                result.close()
                            raise HandlerError(
                                f"transactional step {name!r}: its function is not an "
                                f"`async def` but returned an awaitable "
                                f"({type(result).__name__}); a plain function gets a sync "
                                "Session. Write the step as `async def step(session): ...` "
                                "to get an AsyncSession (not a lambda calling an async def).",
                                run_id=x.run_id,
                                step_name=name,
                            )
                    result = self._step_value(name, result)
                    write = x.step_upsert(
                        x.store.engine.dialect.name,
                        name,
                        StepStatus.SUCCESS,
                        result,
                        None,
                        attempts,
                        time.monotonic() - started,
                    )
                    row = (await session.execute(*write)).first()
                    if row is None:
                        raise _as_signal(await x.diagnose(session, name))
        x.note_lease(sent, row.lease_vt, row.db_now)
        x.steps[name] = StepRecord(StepStatus.SUCCESS, result, attempts, x.message.read_ct)
        return result


def _as_signal(refused: BaseException | StepRecord) -> BaseException:
    return _RecordedMeanwhile(refused) if isinstance(refused, StepRecord) else refused


async def _call(fn: Callable[..., Any]) -> Any:
    if inspect.iscoroutinefunction(fn):
        return await fn()
    result = await asyncio.to_thread(fn)
    if inspect.isawaitable(result):
        return await result
    return result


Handler = Callable[[RunContext, Any], Awaitable[Any]]
