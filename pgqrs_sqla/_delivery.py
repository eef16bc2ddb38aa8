"""Run delivery: a claimed batch's runs started, each handler called, and the outcome recorded.

How the delivery ended is decided in one place (:class:`Outcome`) and recorded.

:class:`Delivery` is handed the worker's store, registration, leases and stats; the
worker's poll loop claims through it and it spawns a task per run (per batch of plain
messages). :func:`outcome_of` maps what the handler raised to an :class:`Outcome`;
:meth:`Delivery._record` makes the writes each outcome calls for.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from . import _children, _observe, _waits, queue as q
from ._db import translated
from ._dead_letters import DeadLetters
from ._error_record import error_record
from ._execution import Execution, StepRecord
from ._leases import Leases
from ._limited_claim import StartedRun, claim_for, started_runs
from ._logging import get_logger, run_id_var, workflow_var
from ._outcome import Outcome, OutcomeKind, outcome_of, unrecorded
from ._plain_messages import PlainMessages
from ._prefetch import Slots
from ._registration import Registration
from ._runs_write import claim_and_start_stmt, hand_back_runs_stmt, start_stmt
from ._schedule_time import tick_of_key
from ._signals import (
    Pause,
    _LeaseLostSignal,
    _RetryLater,
    _RunCancelledSignal,
    _StepExhausted,
    _StepPaused,
    _Waiting,
)
from ._steps_write import recorded_steps_stmt
from ._worker_state import _Binding, _InFlight, _Stats
from .codec import check_json
from .context import RunContext
from .dialects import aware
from .errors import LeaseLost, PgqrsError
from .models import RunStatus, StepStatus
from .runs import RUN_DONE_CHANNEL, wake_waiters
from .store import Store

log = get_logger("pgqrs_sqla.worker")


def _first_of(messages: list[q.Message]) -> set[int]:
    """The ids of the messages in their first delivery."""
    return {m.id for m in messages if m.read_ct == 1}


class Delivery(PlainMessages):
    """Claims for, starts and runs the deliveries of one worker.

    ``inflight`` is the worker's table of running deliveries (message id -> task), which
    this fills; ``done(message_id)`` is called as each ends. ``own_pool``: the worker has a
    pool of its own (see :meth:`holds_connections`).
    """

    def __init__(
        self,
        store: Store,
        registration: Registration,
        leases: Leases,
        stats: _Stats,
        *,
        visibility_timeout: float,
        concurrency: int,
        own_pool: bool,
        stopping: asyncio.Event,
        inflight: dict[int, _InFlight],
        done: Callable[[int], None],
        slots: Slots,
    ) -> None:
        self.store = store
        self.registration = registration
        self.leases = leases
        self.stats = stats
        self.visibility_timeout = visibility_timeout
        self.concurrency = concurrency
        self.own_pool = own_pool
        self.stopping = stopping
        self.inflight = inflight
        self.done = done
        self.slots = slots
        self.name = registration.name
        self._next_binding = 0
        self.dead = DeadLetters(store, registration, leases)

    # ------------------------------------------------------------ claims

    async def claim(
        self, conn: AsyncConnection, binding: _Binding, batch: int, vt: float
    ) -> list[q.Message]:
        return await q.claim(
            conn,
            self.store.tables,
            binding.queue_id,
            self.registration.id,
            batch=batch,
            vt_seconds=vt,
            second_try=self._may_claim_again,
        )

    async def dequeue(self, binding: _Binding, batch: int, vt: float) -> list[q.Message]:
        """Claim by hand (``Worker.dequeue``): the live messages claimed, leased for ``vt`` seconds.

        Each is remembered as a lease of ours; dead letters are buried first. (A limited
        workflow's runs are started as well: its limits count RUNNING runs.)
        """
        while True:
            if binding.limited:
                claimed, _started = await self.claim_limited(binding, batch, vt)
                if not claimed:
                    return []
            else:
                async with self.store._autocommit() as conn:
                    claimed = await self.claim(conn, binding, batch, vt)
            if not claimed:
                return []
            self.leases.took(claimed)
            live = await self.dead.bury_exhausted(binding, claimed)
            if live:
                return live
            # Every one was dead-lettered: claim again, since more may be ready.

    def _may_claim_again(self) -> bool:
        """Whether a claim may try a second time (:func:`~pgqrs_sqla.queue.claim_rows`).

        Not once stop() has begun.
        """
        return not self.stopping.is_set()

    async def claim_round(self, bindings: list[_Binding], free: int, batch_size: int) -> int:
        """Claim up to ``free`` messages from ``bindings``' queues and run them; returns how many.

        They are claimed ``batch_size`` at a time.
        """
        claimed = 0
        # Each round starts at the next queue, so one busy queue cannot take every free slot
        # round after round while another waits.
        start = self._next_binding % len(bindings)
        self._next_binding = start + 1
        for binding in bindings[start:] + bindings[:start]:
            if free <= 0 or self.stopping.is_set():
                break
            batch = min(free, batch_size)
            if binding.closed_until > time.monotonic():
                continue  # its rate window is full: no claim until it ends
            sent = time.monotonic()
            got = await self._claim_for_round(binding, batch)
            if got is None:
                break  # stop() began
            messages, started = got
            if not messages:
                continue
            if self.stopping.is_set():
                # stop() began while the claim was in flight: its snapshot may postdate a
                # trigger committed after stop(). Hand it all back, as if never claimed.
                await self.hand_back(messages, started)
                break
            self.stats.claimed += len(messages)
            self.stats.last_claim = time.monotonic()
            claimed += len(messages)
            messages = await self.dead.bury_exhausted(binding, messages)
            if not messages:
                continue
            free -= len(messages)
            if binding.workflow is not None:
                kept = {m.id for m in messages}
                if started is not None:
                    started = [row for row in started if row.message_id in kept]
                await self.start_runs(binding, messages, started)
            else:
                self.spawn_batch(binding, messages, sent)
        return claimed

    async def _claim_for_round(
        self, binding: _Binding, batch: int
    ) -> tuple[list[q.Message], list[Any] | None] | None:
        """The poll loop's claim on ``binding``'s queue: messages, and runs it started.

        None when stop() began while the connection was taken.
        """
        if (observer := _observe.observer) is None:
            return await self._claim_once(binding, batch)
        began = time.monotonic()
        got = await self._claim_once(binding, batch)
        if got is not None:
            observer.claimed(binding.queue, time.monotonic() - began, len(got[0]))
        return got

    async def _claim_once(
        self, binding: _Binding, batch: int
    ) -> tuple[list[q.Message], list[Any] | None] | None:
        if binding.limited:
            return await self.claim_limited(binding, batch, self.visibility_timeout)
        with translated("claim"):
            async with self.store._autocommit() as conn:
                # Again here, with the connection in hand: taking it may have waited
                # (a pool checkout, SQLite's write lock), and a stop() that began
                # meanwhile must not claim what was triggered after it.
                if self.stopping.is_set():
                    return None
                if binding.workflow is not None and self.store.dialect.writable_ctes:
                    return await self.claim_and_start(conn, binding, batch)
                return await self.claim(conn, binding, batch, self.visibility_timeout), None

    async def claim_limited(
        self, binding: _Binding, batch: int, vt: float
    ) -> tuple[list[q.Message], list[StartedRun] | None]:
        """Claim within the queue's limits (:func:`~pgqrs_sqla._limited_claim.claim_for`)."""
        with translated("claim"):
            return await claim_for(
                self.store, binding, self.registration.id, batch, vt, self._may_claim_again
            )

    async def claim_and_start(
        self, conn: AsyncConnection, binding: _Binding, batch: int
    ) -> tuple[list[q.Message], list[StartedRun]]:
        """PostgreSQL: claim and mark the runs RUNNING in one statement (data-modifying CTEs)."""
        params = q.claim_params(
            binding.queue_id, self.registration.id, batch=batch, vt_seconds=self.visibility_timeout
        )
        sent = time.monotonic()
        rows = await q.claim_rows(
            conn,
            lambda across: claim_and_start_stmt(self.store.tables, self.store.dialect, across),
            params,
            self._may_claim_again,
        )
        messages = sorted(
            (q.Message.from_row(row) for row in rows), key=lambda m: (-m.priority, m.id)
        )
        return messages, started_runs(rows, sent)

    # ------------------------------------------------------------ what a claim brought

    async def hand_back(self, messages: list[q.Message], started: list[Any] | None) -> None:
        """Undo a claim that came back after stop() began.

        The messages are visible again with their delivery uncounted, and the runs this claim
        started on their first delivery QUEUED again (a redelivered run stays RUNNING, as after a
        shutdown's release).
        """
        t = self.store.tables
        first = [row.id for row in started or () if row.message_id in _first_of(messages)]
        with translated("handing back a claim"):
            async with self.store._begin() as conn:  # lock order: message, then run
                await conn.execute(
                    q.unclaim_many_stmt(t),
                    {
                        "p_leases": [(m.id, m.read_ct) for m in messages],
                        "p_worker_id": self.registration.id,
                    },
                )
                if first:
                    await conn.execute(hand_back_runs_stmt(t, first))
        log.info("worker %s: stopping; handed back %d message(s)", self.name, len(messages))

    async def start_runs(
        self, binding: _Binding, messages: list[q.Message], rows: list[Any] | None = None
    ) -> None:
        """Mark claimed runs RUNNING (unless the claim already did) and load their recorded steps.

        The steps are those earlier deliveries recorded.
        """
        t = self.store.tables
        by_id = {m.id: m for m in messages}
        steps: list[Any] = []
        sent = time.monotonic()
        # On PostgreSQL the claim started the runs and said which have recorded steps: for
        # first deliveries there is nothing to execute here, and no connection to check out.
        # (SQLite's start rows do not say; there the query is a local call.)
        if rows is None or any(row.has_steps for row in rows):
            async with self.store._autocommit() as conn:
                if rows is None:
                    ids = [m.id for m in messages]
                    rows = list((await conn.execute(start_stmt(t), {"p_ids": ids})).all())
                run_ids = [row.id for row in rows if getattr(row, "has_steps", True)]
                if run_ids:
                    steps = list((await conn.execute(recorded_steps_stmt(t, run_ids))).all())
        hold = self.holds_connections()
        started = set()
        assert binding.workflow is not None
        # In claim order (highest priority first, then oldest): the order their slots go in.
        place = {m.id: i for i, m in enumerate(messages)}
        for row in sorted(rows, key=lambda row: place[row.message_id]):
            msg = by_id[row.message_id]
            started.add(msg.id)
            execution = Execution(
                store=self.store,
                worker_id=self.registration.id,
                message=msg,
                run_id=row.id,
                workflow=binding.queue,
                params=row.input,
                policy=binding.retry or binding.workflow.retry,
                cancel_requested=bool(row.cancel_requested),
                parent_run_id=row.parent_run_id,
                deadline_at=aware(row.deadline_at),
                scheduled_at=tick_of_key(row.idempotency_key),
                trace_context=row.trace_context,
                hold_connection=hold,
                lease_seconds=self.visibility_timeout,
            )
            # The claim's vt, against the clock of the statement that started the run.
            execution.note_lease(getattr(row, "sent", None) or sent, msg.vt, row.db_now)
            execution.steps = {
                st.step_name: StepRecord(
                    StepStatus(st.status),
                    st.output,
                    st.attempts,
                    st.next_delivery,
                    st.kind,
                    st.wake_at,
                )
                for st in steps
                if st.run_id == row.id
            }
            self.slots.queued(1)
            self._spawn(binding, msg, self._process_run(binding, execution), execution)
        for msg in messages:
            if msg.id not in started:
                # The run already ended (or was never written): nothing to do but ack.
                with contextlib.suppress(LeaseLost):
                    await self.leases.archive(msg)

    def holds_connections(self) -> bool:
        """Whether each in-flight run may hold one connection for its whole delivery.

        On PostgreSQL, when the worker has a pool of its own (nothing else checks out of it) with a
        connection per run and one to spare for claims and heartbeats.
        """
        if not (self.store.dialect.autocommit_writes and self.own_pool) or (
            self.store._transactions_only()
        ):
            return False  # (a held connection is an autocommit one)
        size = getattr(self.store.engine.sync_engine.pool, "size", None)
        return callable(size) and size() > self.concurrency

    # ------------------------------------------------------------ tasks

    def _spawn(
        self, binding: _Binding, msg: q.Message, coro: Any, execution: Execution | None = None
    ) -> None:
        task = asyncio.create_task(coro, name=f"pgqrs-{binding.queue}-{msg.id}")
        self.inflight[msg.id] = _InFlight(msg, binding, task, execution)
        task.add_done_callback(lambda _t: self._ended(binding, [msg.id]))

    def _ended(self, binding: _Binding, message_ids: list[int]) -> None:
        """Deliveries ended: the worker's own loop claims again (``done``).

        For a limited queue, other workers of this process are woken too: the slot a delivery
        held is free. (Other processes hear of it at their next wake-up or poll: this worker,
        with a slot free now, claims at once.)
        """
        for message_id in message_ids:
            self.done(message_id)
        if binding.limited:
            self.store._wake(binding.queue)

    # ------------------------------------------------------------ workflow runs

    async def _process_run(self, binding: _Binding, x: Execution) -> None:
        async with self.slots.slot():
            if self.stopping.is_set():
                # Claimed ahead and not started: give it back for another worker to take at
                # once (the run stays RUNNING, as after a shutdown's release).
                await self.leases.release_quietly(x.message)
                return
            await self._process_run_now(binding, x)

    async def _process_run_now(self, binding: _Binding, x: Execution) -> None:
        # This task's own context: every record logged while the run executes carries it.
        run_id_var.set(x.run_id)
        workflow_var.set(x.workflow)
        if (observer := _observe.observer) is None:
            return await self._run(binding, x, None)
        facts = _observe.DeliveryFacts(
            x.run_id, x.workflow, binding.queue, x.message.read_ct, x.trace_context, x.parent_run_id
        )
        with observer.delivery(facts) as seen:
            await self._run(binding, x, seen)

    async def _run(
        self, binding: _Binding, x: Execution, seen: _observe.DeliveryObservation | None
    ) -> None:
        try:
            outcome = await self._outcome(binding, x)
            try:
                ended = await self._record(binding, x, outcome)
            except Exception as error:  # the outcome could not be recorded
                outcome = unrecorded(error)
                ended = await self._record(binding, x, outcome)
            if seen is not None:
                seen.outcome(outcome, ended=ended)
        finally:
            await x.release_connection()
        if ended:
            self.store._wake(RUN_DONE_CHANNEL)
            if x.awaited_by is not None:
                await self._wake_waiter(x.awaited_by)

    async def _cancelled_meanwhile(self, x: Execution) -> bool:
        """A park was refused: if the run's cancellation was asked meanwhile, end it now.

        True if it ended. Otherwise (the lease is gone, or a step was recorded from outside)
        the run is left as it is.
        """
        if not isinstance(await x.refusal(), _RunCancelledSignal):
            return False
        await x.finish(RunStatus.CANCELLED)
        log.info("run %s cancelled while it parked", x.run_id)
        await self._cancel_children(x)
        return True

    async def _cancel_children(self, x: Execution) -> None:
        """After the run ended CANCELLED: cancel its unfinished children.

        ``cancel_run`` cancels those it sees; this also catches one started while it ran,
        and a deadline's. Best effort: a failure is logged, the run stays ended.
        """
        try:
            await self.store._cancel_children(x.run_id)
        except PgqrsError as error:
            log.warning("run %s: could not cancel its children: %s", x.run_id, error)

    async def _wake_waiter(self, waiter: int) -> None:
        """The run that waits on this one (``ctx.wait_for_run(s)``): wake it if none is left."""
        try:
            await wake_waiters(self.store, [waiter])
        except PgqrsError as error:  # it wakes at its wait's horizon all the same
            log.warning("could not wake run %s, which waits on this one: %s", waiter, error)

    async def _outcome(self, binding: _Binding, x: Execution) -> Outcome:
        """Run the handler for one delivery and record its output: how the delivery ended."""
        try:
            # Its lease still ours (free while the claim's lease deadline is ahead; a run
            # claimed ahead that waited past it for a slot is extended first), and not
            # cancelled or past its deadline, before it runs.
            await x.ensure_lease()
            _waits.check_live(x)
            output = await binding.handler(RunContext(x), x.params)
            output = check_json(  # the output as stored: what wait_for_run will return
                output,
                what=f"output of workflow {x.workflow!r}",
                max_bytes=self.store.max_payload_bytes,
                default=self.store.json_default,
            )
            if not await x.finish(RunStatus.SUCCESS, output=output):
                raise _LeaseLostSignal()
        except BaseException as error:
            outcome = outcome_of(error)
            if outcome is None:
                raise
            return outcome
        return Outcome(OutcomeKind.SUCCEEDED)

    async def _record(self, binding: _Binding, x: Execution, outcome: Outcome) -> bool:
        """Make the writes ``outcome`` calls for, count and log it; True if the run ended."""
        kind, error = outcome.kind, outcome.error
        if kind is OutcomeKind.SUCCEEDED:
            self.stats.completed += 1
            log.info("run %s succeeded", x.run_id)
        elif kind is OutcomeKind.LEASE_LOST:
            self.stats.lease_lost += 1
            log.warning("run %s: lease lost; another worker owns it now", x.run_id)
        elif kind is OutcomeKind.REFUSED:
            # The lease is ours, but the run or step is in a state this write may not leave
            # (not a lost lease): leave the run as it is; the lease ends on its own.
            self.stats.refused += 1
            log.warning("run %s: %s", x.run_id, error)
        elif kind is OutcomeKind.DB_UNAVAILABLE:
            # Not the run's fault: abandon this delivery; it comes back when the lease ends.
            self.stats.errors += 1
            log.warning("run %s: database unavailable (%s); left for redelivery", x.run_id, error)
            await self.leases.release_quietly(x.message)
        elif kind is OutcomeKind.CANCELLED:
            await x.finish(RunStatus.CANCELLED, error=x.deadline_error)
            log.info("run %s cancelled%s", x.run_id, " (deadline)" if x.deadline_error else "")
            await self._cancel_children(x)
        elif kind is OutcomeKind.RETRY_LATER:
            assert isinstance(error, _RetryLater)
            write = x.step_upsert(
                self.store.engine.dialect.name,
                error.step,
                StepStatus.ERROR,
                None,
                error.error,
                error.attempts,
                0.0,
            )
            await x.park(RunStatus.RUNNING, error.delay, write)
        elif kind is OutcomeKind.STEP_PAUSED:
            assert isinstance(error, _StepPaused)
            await self._park_paused_step(x, error)
        elif kind is OutcomeKind.WAITING:
            assert isinstance(error, _Waiting)
            parked = _children.park if error.kind == _children.RUN else _waits.park
            if await parked(x, error):
                self.store._wake(RUN_DONE_CHANNEL)
                log.info("run %s waits at %s (%s)", x.run_id, error.step, error.kind)
            else:
                return await self._cancelled_meanwhile(x)
        elif kind is OutcomeKind.PAUSED:
            assert isinstance(error, Pause)
            if not await x.park(RunStatus.PAUSED, error.seconds):
                return await self._cancelled_meanwhile(x)
        elif kind is OutcomeKind.EXHAUSTED:
            assert isinstance(error, _StepExhausted)
            self.stats.errors += 1
            await x.finish(RunStatus.ERROR, error=error.error)
            log.error("run %s failed: step %s out of attempts", x.run_id, error.step)
        elif kind is OutcomeKind.INTERRUPTED:
            assert error is not None
            await self.leases.release_quietly(x.message)
            raise error
        elif kind is OutcomeKind.FAILED:
            assert error is not None
            self.stats.errors += 1
            record = error_record(error)
            if x.failed_step is not None and x.failed_step[1] is error:
                record["step"] = x.failed_step[0]
            await x.finish(RunStatus.ERROR, error=record)
            log.error("run %s failed: %s", x.run_id, record["message"])
        else:
            # The database refused to record the outcome (an unstorable value, a delay past
            # what a timestamp holds, ...): the same will happen on every redelivery, so this
            # counts as a failed delivery, and the run dead-letters at max_deliveries.
            assert kind is OutcomeKind.UNRECORDABLE and isinstance(error, Exception)
            self.stats.errors += 1
            log.error(
                "run %s: could not record the outcome; a failed delivery", x.run_id, exc_info=error
            )
            return await self.dead.fail_delivery(binding, x, error)
        return outcome.ends_run

    async def _park_paused_step(self, x: Execution, pause: _StepPaused) -> None:
        write = None
        if pause.step is not None:
            write = x.step_upsert(
                self.store.engine.dialect.name,
                pause.step,
                StepStatus.PAUSED,
                None,
                None,
                pause.attempts,
                0.0,
            )
        if await x.park(RunStatus.PAUSED, pause.seconds, write):
            self.store._wake(RUN_DONE_CHANNEL)
            log.info("run %s paused at step %s for %.0fs", x.run_id, pause.step, pause.seconds)
        elif await x.park(RunStatus.RUNNING, 0.0):
            # The pause was refused with the lease still ours: update_step recorded the
            # step while its body ran. Hand the run straight back to replay that value.
            log.info("run %s: step %s was recorded meanwhile", x.run_id, pause.step)
