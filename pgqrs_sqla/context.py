"""The run context handed to a workflow handler: ``ctx.step``, ``ctx.sleep``, ``ctx.wait_for_event``.

What one delivery knows and writes is its :class:`~pgqrs_sqla._execution.Execution`; the
durable waits are in :mod:`pgqrs_sqla._waits`.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession

from . import _children, _observe, _waits
from ._db import translated
from ._error_record import error_record as error_record, storable_text as storable_text
from ._execution import Execution as Execution, StepRecord as StepRecord
from ._logging import get_logger, step_var
from ._signals import (
    Pause,
    _ConnectionLostSignal,
    _LeaseLostSignal,
    _RecordedMeanwhile,
    _RetryLater,
    _RunCancelledSignal,
    _StepExhausted,
    _StepPaused,
)
from ._typed_hooks import step_function, step_result
from .codec import check_json, check_text
from .errors import (
    DatabaseUnavailable,
    HandlerError,
    PayloadError,
    TransientError,
    duration_seconds,
)
from .models import StepStatus
from .queue import (
    held,
)
from .retry import RetryPolicy
from .trigger import WorkflowRef
from .typed import decode, encode

if TYPE_CHECKING:
    pass

log = get_logger("pgqrs_sqla.workflow")


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
    def parent_run_id(self) -> int | None:
        """The run that started this one with ``ctx.start_child`` (None: a top-level run)."""
        return self._x.parent_run_id

    @property
    def scheduled_at(self) -> datetime | None:
        """The schedule tick that triggered this run (UTC), or None if no schedule did."""
        return self._x.scheduled_at

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
        one transaction with the step's record. ``fn``'s return annotation, if it names a
        type (a dataclass, a pydantic model...), decodes the result, live and replayed alike
        (see :mod:`pgqrs_sqla.typed`).
        """
        x = self._x
        recorded = _waits.claim_name(x, name, None)
        fn, returns = step_function(fn)  # typed results: pgqrs_sqla.typed
        observer = _observe.observer
        if recorded is not None and recorded.status is StepStatus.SUCCESS:
            if observer is not None:
                observer.step_replayed(x.run_id, x.workflow, name, recorded.attempts)
            return step_result(recorded.output, returns, x.run_id, name)
        _waits.check_live(x)
        attempts = x.attempts_of(name)
        token = step_var.set(name)
        try:
            if observer is None:
                result = await self._execute(name, fn, attempts, transactional, retry)
            else:
                with observer.step(x.run_id, x.workflow, name, attempts):
                    result = await self._execute(name, fn, attempts, transactional, retry)
            return step_result(result, returns, x.run_id, name)
        finally:
            step_var.reset(token)

    async def sleep(self, name: str, duration: timedelta | float) -> None:
        """Wait ``duration`` (seconds or a ``timedelta``), durably, recorded under ``name``.

        The run releases its worker while it sleeps (no task, connection or lease is held)
        and a worker picks it up again at the deadline, which is fixed by the first call: a
        crash or restart meanwhile neither shortens nor restarts the wait. Once it has passed,
        a replay returns at once. ``sleep(name, 0)`` records the timer and goes on.
        """
        seconds = duration_seconds(duration, "sleep duration")
        await _waits.sleep(self._x, name, seconds)

    async def sleep_until(self, name: str, when: datetime) -> None:
        """Wait until ``when`` (an aware ``datetime``), durably; see :meth:`sleep`."""
        await _waits.sleep(self._x, name, _waits.until_seconds(self._x, when))

    async def wait_for_event(self, name: str, *, timeout: timedelta | float | None = None) -> Any:
        """Wait for an event called ``name`` sent to this run; returns its payload.

        ``store.send_event(run_id, name, payload)`` sends it, in the sender's transaction if
        it passes ``target=``. An event sent before the wait is kept for it; each event is
        consumed by one wait, in the order sent (a second ``wait_for_event(name)`` gets the
        next one). The run releases its worker while it waits. With ``timeout`` (from the
        first call), :class:`~pgqrs_sqla.EventTimeout` is raised when it passes; that is
        recorded too, and a replay raises it again.
        """
        seconds = None if timeout is None else duration_seconds(timeout, "timeout")
        return await _waits.wait_for_event(self._x, name, seconds)

    async def start_child(
        self,
        name: str,
        workflow: str | WorkflowRef[Any, Any],
        params: Any = None,
        *,
        idempotency_key: str | None = None,
        timeout: timedelta | float | None = None,
        concurrency_key: str | None = None,
    ) -> int:
        """Start a run of ``workflow`` as this run's child, once; returns the child's run id.

        The child's id is recorded under ``name``: a replay returns it and never starts a second
        child. Cancelling this run cancels its unfinished children. ``timeout`` is the child's
        deadline and ``concurrency_key`` the key its workflow's ``key_concurrency`` counts it
        by (as ``trigger(timeout=, concurrency_key=)``).
        """
        limit = None if timeout is None else duration_seconds(timeout, "timeout", positive=True)
        if concurrency_key is not None:
            check_text(concurrency_key, what="concurrency_key")
        if isinstance(workflow, WorkflowRef):  # typed: its params encoded by their type
            params = encode(params, workflow.params_type)
            workflow = workflow.name
        else:
            params = encode(params)  # dataclasses and pydantic models
        return await _children.start_child(
            self._x, name, workflow, params, idempotency_key, limit, concurrency_key
        )

    async def wait_for_run(
        self,
        name: str,
        run_id: int,
        *,
        timeout: timedelta | float | None = None,
        result_type: Any = None,
    ) -> Any:
        """Wait durably until run ``run_id`` ends; returns its output.

        Raises :class:`~pgqrs_sqla.RunFailed` or :class:`~pgqrs_sqla.RunCancelled` with the
        run's error if it did not succeed, and :class:`~pgqrs_sqla.WaitTimeout` after
        ``timeout`` (from the first call). The outcome is recorded under ``name``: a replay
        returns (or raises) it again without waiting. This run releases its worker while it
        waits, and is woken when the run ends. With ``result_type`` the output is decoded by
        it (see :mod:`pgqrs_sqla.typed`), on the first call and on replay alike.
        """
        (ended,) = await self.wait_for_runs(name, [run_id], timeout=timeout)
        output = _children.result_of(ended)
        if result_type is None:
            return output
        what = f"output of run {run_id}"
        return decode(output, result_type, what=what, run_id=self.run_id, step_name=name)

    async def wait_for_runs(
        self, name: str, run_ids: list[int], *, timeout: timedelta | float | None = None
    ) -> list[dict[str, Any]]:
        """Wait durably until every run of ``run_ids`` ended; what each ended as, in order.

        Each is ``{"id", "status", "output", "error"}``: fan-in, where some may have failed.
        This run is woken once, when the last of them ends. See :meth:`wait_for_run`.
        """
        limit = None if timeout is None else duration_seconds(timeout, "timeout")
        return await _children.wait_for_runs(self._x, name, list(run_ids), limit)

    async def child(
        self,
        name: str,
        workflow: str | WorkflowRef[Any, Any],
        params: Any = None,
        *,
        timeout: timedelta | float | None = None,
        concurrency_key: str | None = None,
    ) -> Any:
        """Start a child workflow and wait for it (:meth:`start_child`, then :meth:`wait_for_run`).

        Recorded as ``name`` (the start) and ``name + ":result"`` (the wait). Given a typed
        ``workflow(name, handler)`` reference, the params are encoded and the result decoded
        by the handler's types.
        """
        child_id = await self.start_child(
            name, workflow, params, timeout=timeout, concurrency_key=concurrency_key
        )
        result_type = workflow.result_type if isinstance(workflow, WorkflowRef) else None
        return await self.wait_for_run(f"{name}:result", child_id, result_type=result_type)

    async def patched(self, patch_id: str) -> bool:
        """Whether this run takes the new code path of a deploy, named ``patch_id``: branch on it.

        ``if await ctx.patched("new-fraud-check"): ...`` is True for runs that reach this
        point under the code that has the patch, and False for runs that had already passed
        it when it was deployed (they replay the old path). The answer is recorded per run,
        so every replay takes the same path; each ``patch_id`` may be asked once per run.
        """
        return await _waits.patched(self._x, patch_id)

    def _step_value(self, name: str, result: Any) -> Any:
        """Step ``name``'s return value as a replay reads it back, so the live call returns that.

        It is JSON-checked; a :class:`Pause` the body returned is raised.
        """
        if isinstance(result, Pause):
            raise result
        return check_json(
            encode(result),  # dataclasses, pydantic models
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
