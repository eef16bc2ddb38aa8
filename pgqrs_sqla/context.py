"""The run context handed to a workflow handler (``ctx.step``), and the writes that move a
run through its life: checkpoint a step, finish, pause, retry later.

Every write here is fenced by the run's lease (the message's owner and delivery count), so
a worker that lost its lease changes nothing.
"""

from __future__ import annotations

import asyncio
import inspect
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import exists, false, literal, null, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from ._db import translated
from ._logging import get_logger, step_var
from .codec import check_json
from .dialects import JSONType, insert_for, utcnow, utcnow_plus
from .errors import (
    Pause,
    PayloadError,
    StepNameReused,
    TransientError,
    ValidationError,
    _LeaseLostSignal,
    _RunCancelledSignal,
)
from .models import ArchiveReason, RunStatus, StepStatus, Tables
from .queue import Message, held, release_stmt
from .runs import RetryPolicy
from .states import run_may_become, step_may_become

if TYPE_CHECKING:
    from .store import Store

log = get_logger("pgqrs_sqla.workflow")


class _RetryLater(BaseException):
    def __init__(self, step: str, attempts: int, delay: float, error: dict[str, Any]):
        super().__init__(step)
        self.step, self.attempts, self.delay, self.error = step, attempts, delay, error


class _StepPaused(BaseException):
    def __init__(self, step: str | None, seconds: float):
        super().__init__(step)
        self.step, self.seconds = step, seconds


class _StepExhausted(BaseException):
    def __init__(self, step: str, error: dict[str, Any]):
        super().__init__(step)
        self.step, self.error = step, error


def error_record(
    error: BaseException, *, step: str | None = None, attempts: int | None = None
) -> dict[str, Any]:
    """What we store about an error: type, message, traceback text (and step, attempts)."""
    record: dict[str, Any] = {
        "type": f"{type(error).__module__}.{type(error).__qualname__}",
        "message": str(error),
        "traceback": "".join(traceback.format_exception(error)),
    }
    if step is not None:
        record["step"] = step
    if attempts is not None:
        record["attempts"] = attempts
    return record


@dataclass
class StepRecord:
    status: StepStatus
    output: Any
    attempts: int


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

    @property
    def tables(self) -> Tables:
        return self.store.tables

    def fence(self) -> Any:
        t = self.tables
        return exists(
            select(literal(1))
            .select_from(t.messages)
            .where(held(t, self.message.id, self.worker_id, self.message.read_ct))
        )

    def _not_cancelled(self) -> Any:
        r = self.tables.runs
        return exists(
            select(literal(1))
            .select_from(r)
            .where(r.c.id == self.run_id, r.c.cancel_requested == false())
        )

    def step_upsert(
        self,
        dialect: str,
        name: str,
        status: StepStatus,
        output: Any,
        error: Any,
        attempts: int,
        duration: float,
    ) -> Any:
        """One INSERT ... ON CONFLICT DO UPDATE, fenced by the lease (and, for a success, by
        the run not being cancelled); returns the row id, or nothing if the fence failed."""
        s = self.tables.steps
        where = (
            self.fence() & self._not_cancelled() if status is StepStatus.SUCCESS else self.fence()
        )
        source = select(
            literal(self.run_id),
            literal(name),
            literal(status.value),
            literal(output, JSONType) if output is not None else null(),
            literal(error, JSONType) if error is not None else null(),
            literal(attempts),
            utcnow_plus(-duration),
            utcnow(),
        ).where(where)
        stmt = insert_for(dialect, s).from_select(
            [
                "run_id",
                "step_name",
                "status",
                "output",
                "error",
                "attempts",
                "started_at",
                "finished_at",
            ],
            source,
        )
        excluded = stmt.excluded
        return stmt.on_conflict_do_update(
            index_elements=[s.c.run_id, s.c.step_name],
            set_={
                "status": excluded.status,
                "output": excluded.output,
                "error": excluded.error,
                "attempts": excluded.attempts,
                "started_at": excluded.started_at,
                "finished_at": excluded.finished_at,
            },
            where=s.c.status.in_(step_may_become(status)),
        ).returning(s.c.id)

    async def diagnose(self, conn: AsyncConnection | AsyncSession) -> BaseException:
        """A fenced write changed nothing: say whether the lease is gone or the run cancelled."""
        t = self.tables
        still_held = (await conn.execute(select(self.fence()))).scalar()
        if not still_held:
            self.lease_lost = True
            return _LeaseLostSignal(f"lease on run {self.run_id} lost")
        cancelled = (
            await conn.execute(select(t.runs.c.cancel_requested).where(t.runs.c.id == self.run_id))
        ).scalar()
        if cancelled:
            self.cancel_requested = True
            return _RunCancelledSignal(f"run {self.run_id} cancelled")
        return _LeaseLostSignal(f"step write for run {self.run_id} refused by the state machine")

    async def checkpoint(self, name: str, output: Any, attempts: int, duration: float) -> None:
        async with self.store.autocommit() as conn:
            stmt = self.step_upsert(
                conn.dialect.name, name, StepStatus.SUCCESS, output, None, attempts, duration
            )
            if (await conn.execute(stmt)).first() is None:
                raise await self.diagnose(conn)
        self.steps[name] = StepRecord(StepStatus.SUCCESS, output, attempts)

    async def record_error(
        self, name: str, error: dict[str, Any], attempts: int, duration: float
    ) -> None:
        async with self.store.autocommit() as conn:
            stmt = self.step_upsert(
                conn.dialect.name, name, StepStatus.ERROR, None, error, attempts, duration
            )
            await conn.execute(stmt)
        self.steps[name] = StepRecord(StepStatus.ERROR, None, attempts)

    # ------------------------------------------------------------ ending a delivery

    def _run_update(self, new: RunStatus, **values: Any) -> Any:
        r = self.tables.runs
        values.setdefault("updated_at", utcnow())
        if new.terminal:
            values.setdefault("finished_at", utcnow())
        return (
            update(r)
            .where(r.c.id == self.run_id, r.c.status.in_(run_may_become(new)), self.fence())
            .values(status=new.value, **values)
            .returning(r.c.id)
        )

    async def finish(self, new: RunStatus, **values: Any) -> bool:
        """End the run (SUCCESS / ERROR / CANCELLED) and archive its message, atomically."""
        m = self.tables.messages
        archive = (
            update(m)
            .where(held(self.tables, self.message.id, self.worker_id, self.message.read_ct))
            .values(archived_at=utcnow(), archive_reason=ArchiveReason.DONE.value)
            .returning(m.c.id)
        )
        if self.store.postgres:
            # One round trip on an autocommit connection: both updates in one statement. The
            # run update's fence reads the pre-statement snapshot, where the message is live.
            archived = archive.cte("archived")
            run_update = self._run_update(new, **values).where(exists(select(archived.c.id)))
            async with self.store.autocommit() as conn:
                return (await conn.execute(run_update)).first() is not None
        async with self.store.begin() as conn:
            if (await conn.execute(self._run_update(new, **values))).first() is None:
                return False
            await conn.execute(archive)
        return True

    async def park(self, new: RunStatus, delay: float, step_write: Any = None) -> bool:
        """Release the message for ``delay`` seconds (not a failed delivery), after recording
        the step and the run status. Used for pauses and transient retries."""
        async with self.store.begin() as conn:
            if step_write is not None and (await conn.execute(step_write)).first() is None:
                return False
            if (
                new is RunStatus.PAUSED
                and (await conn.execute(self._run_update(new))).first() is None
            ):
                return False
            result = await conn.execute(
                release_stmt(self.tables, self.message, self.worker_id, delay)
            )
            return result.first() is not None


class RunContext:
    """What a workflow handler gets as ``ctx``: ``await ctx.step(name, fn)``."""

    def __init__(self, execution: Execution) -> None:
        self._x = execution

    @property
    def run_id(self) -> int:
        return self._x.run_id

    @property
    def workflow(self) -> str:
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
        ``Session``) whose writes commit in one transaction with the step's record.
        """
        x = self._x
        if not isinstance(name, str) or not name or len(name) > 255:
            raise ValidationError(
                f"invalid step name {name!r}: a non-empty str of at most 255 characters"
            )
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
        attempts = (recorded.attempts if recorded else 0) + 1
        token = step_var.set(name)
        try:
            return await self._execute(name, fn, attempts, transactional, retry)
        finally:
            step_var.reset(token)

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
            result = await _call(fn)
            if isinstance(result, Pause):
                raise result
            check_json(result, what=f"result of step {name!r}", max_bytes=x.store.max_payload_bytes)
        except Pause as pause:
            raise _StepPaused(name, pause.seconds) from None
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
        except Exception as error:
            await x.record_error(
                name,
                error_record(error, step=name, attempts=attempts),
                attempts,
                time.monotonic() - started,
            )
            raise
        await x.checkpoint(name, result, attempts, time.monotonic() - started)
        log.debug("step %s done", name)
        return result

    async def _transactional(
        self, name: str, fn: Callable[..., Any], attempts: int, started: float
    ) -> Any:
        x = self._x
        t = x.tables
        async with AsyncSession(x.store.engine, expire_on_commit=False) as session:
            with translated(f"transactional step {name!r}"):
                async with session.begin():
                    # Lock our message row: a concurrent claim (SKIP LOCKED) cannot take the
                    # run over while this transaction decides; the fence holds until commit.
                    lock = select(t.messages.c.id).where(
                        held(t, x.message.id, x.worker_id, x.message.read_ct)
                    )
                    if x.store.postgres:
                        lock = lock.with_for_update()
                    if (await session.execute(lock)).first() is None:
                        raise await x.diagnose(session)
                    if inspect.iscoroutinefunction(fn):
                        result = await fn(session)
                    else:
                        result = await session.run_sync(fn)
                        if inspect.isawaitable(result):
                            result = await result
                    if isinstance(result, Pause):
                        raise result
                    check_json(
                        result, what=f"result of step {name!r}", max_bytes=x.store.max_payload_bytes
                    )
                    stmt = x.step_upsert(
                        x.store.engine.dialect.name,
                        name,
                        StepStatus.SUCCESS,
                        result,
                        None,
                        attempts,
                        time.monotonic() - started,
                    )
                    if (await session.execute(stmt)).first() is None:
                        raise await x.diagnose(session)
        x.steps[name] = StepRecord(StepStatus.SUCCESS, result, attempts)
        return result


async def _call(fn: Callable[..., Any]) -> Any:
    if inspect.iscoroutinefunction(fn):
        return await fn()
    result = await asyncio.to_thread(fn)
    if inspect.isawaitable(result):
        return await result
    return result


Handler = Callable[[RunContext, Any], Awaitable[Any]]
