"""Bad input sweep: every kind of bad input gets a typed error (a ``PgqrsError`` subclass),
writes nothing to any of the pgqrs tables, and — when the call ran in the caller's
``AsyncSession`` — leaves that transaction usable: the app writes before and after the
failed call, commits, and both writes are there."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

import pgqrs_sqla as pgqrs

from ._support import report, table_counts

pytestmark = pytest.mark.reliability

LIMIT = 4096  # max_payload_bytes of the store under test
BIG = "x" * (LIMIT + 1)
S = pgqrs.StepStatus

Call = Callable[[Any], Any]


def _deep(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


DEEP = _deep(5000)

# Calls made in the caller's transaction (``s`` is its AsyncSession).
IN_SESSION: list[tuple[str, Call, type[pgqrs.PgqrsError]]] = [
    (
        "params: a set",
        lambda s: pgqrs.workflow("wf").trigger({"x": {1}}).execute(s),
        pgqrs.PayloadError,
    ),
    (
        "params: NaN",
        lambda s: pgqrs.workflow("wf").trigger(float("nan")).execute(s),
        pgqrs.PayloadError,
    ),
    (
        "params: datetime",
        lambda s: pgqrs.workflow("wf").trigger(datetime.now()).execute(s),
        pgqrs.PayloadError,
    ),
    (
        "params: too big",
        lambda s: pgqrs.workflow("wf", max_payload_bytes=LIMIT).trigger(BIG).execute(s),
        pgqrs.PayloadError,
    ),
    (
        "idempotency key empty",
        lambda s: pgqrs.workflow("wf").trigger({}, idempotency_key="").execute(s),
        pgqrs.ValidationError,
    ),
    (
        "trigger delay < 0",
        lambda s: pgqrs.workflow("wf").trigger({}, delay=-1).execute(s),
        pgqrs.ValidationError,
    ),
    (
        "workflow name invalid",
        lambda s: pgqrs.workflow("bad name").trigger({}).execute(s),
        pgqrs.InvalidName,
    ),
    (
        "workflow name with NUL",
        lambda s: pgqrs.workflow("wf\x00").trigger({}).execute(s),
        pgqrs.InvalidName,
    ),
    # What PostgreSQL refuses (and SQLite accepts) is refused before any SQL on both.
    (
        "params: NUL in a value",
        lambda s: pgqrs.workflow("wf").trigger({"a": "x\x00y"}).execute(s),
        pgqrs.PayloadError,
    ),
    (
        "params: NUL in a key",
        lambda s: pgqrs.workflow("wf").trigger({"a\x00": 1}).execute(s),
        pgqrs.PayloadError,
    ),
    (
        "params: lone surrogate",
        lambda s: pgqrs.workflow("wf").trigger({"a": "\ud800"}).execute(s),
        pgqrs.PayloadError,
    ),
    (
        "params: 5000-deep nesting",
        lambda s: pgqrs.workflow("wf").trigger(DEEP).execute(s),
        pgqrs.PayloadError,
    ),
    (
        "params: an int key",
        lambda s: pgqrs.workflow("wf").trigger({"data": {1: "x"}}).execute(s),
        pgqrs.PayloadError,
    ),
    (
        "idempotency key with NUL",
        lambda s: pgqrs.workflow("wf").trigger({}, idempotency_key="k\x00").execute(s),
        pgqrs.ValidationError,
    ),
    (
        "idempotency key a lone surrogate",
        lambda s: pgqrs.workflow("wf").trigger({}, idempotency_key="\udfff").execute(s),
        pgqrs.ValidationError,
    ),
    (
        "trigger priority 2**40",
        lambda s: pgqrs.workflow("wf").trigger({}, priority=2**40).execute(s),
        pgqrs.ValidationError,
    ),
    (
        "trigger priority a str",
        lambda s: pgqrs.workflow("wf").trigger({}, priority="1").execute(s),
        pgqrs.ValidationError,
    ),
    (
        "trigger delay 1e13",
        lambda s: pgqrs.workflow("wf").trigger({}, delay=1e13).execute(s),
        pgqrs.DurationError,
    ),
    (
        "enqueue delay 1e13",
        lambda s: STORE.queue("q").enqueue(1, delay=1e13, target=s),
        pgqrs.DurationError,
    ),
    (
        "enqueue priority 2**40",
        lambda s: STORE.queue("q").enqueue(1, priority=2**40, target=s),
        pgqrs.ValidationError,
    ),
    (
        "payload: NUL",
        lambda s: STORE.queue("q").enqueue({"t": "\x00"}, target=s),
        pgqrs.PayloadError,
    ),
    (
        "payload: lone surrogate in a batch",
        lambda s: STORE.queue("q").enqueue_batch([1, ["\udc80"]], target=s),
        pgqrs.PayloadError,
    ),
    (
        "payload: 5000-deep nesting",
        lambda s: STORE.queue("q").enqueue(DEEP, target=s),
        pgqrs.PayloadError,
    ),
    (
        "update_step: NUL in the value",
        lambda s: STORE.update_step(RUN, "s", S.SUCCESS, "a\x00", target=s),
        pgqrs.PayloadError,
    ),
    (
        "update_step: NUL in the step name",
        lambda s: STORE.update_step(RUN, "s\x00", S.SUCCESS, 1, target=s),
        pgqrs.ValidationError,
    ),
    (
        "update_step: lone surrogate in the step name",
        lambda s: STORE.update_step(RUN, "\ud800", S.SUCCESS, 1, target=s),
        pgqrs.ValidationError,
    ),
    ("payload: object", lambda s: STORE.queue("q").enqueue(object(), target=s), pgqrs.PayloadError),
    ("payload: too big", lambda s: STORE.queue("q").enqueue(BIG, target=s), pgqrs.PayloadError),
    (
        "payload: one bad in a batch",
        lambda s: STORE.queue("q").enqueue_batch([1, 2, {3}], target=s),
        pgqrs.PayloadError,
    ),
    (
        "enqueue: naive available_at",
        lambda s: STORE.queue("q").enqueue(1, available_at=datetime.now(), target=s),
        pgqrs.ValidationError,
    ),
    (
        "enqueue: priority not int",
        lambda s: STORE.queue("q").enqueue(1, priority="high", target=s),
        pgqrs.ValidationError,
    ),
    ("queue name invalid", lambda s: STORE.queue("1q").enqueue(1, target=s), pgqrs.InvalidName),
    ("queue unknown", lambda s: STORE.queue("nope").enqueue(1, target=s), pgqrs.QueueNotFound),
    (
        "update_step: run unknown",
        lambda s: STORE.update_step(10**9, "s", S.SUCCESS, 1, target=s),
        pgqrs.RunNotFound,
    ),
    (
        "update_step: run id a str",
        lambda s: STORE.update_step("1", "s", S.SUCCESS, 1, target=s),
        pgqrs.ValidationError,
    ),
    (
        "update_step: status 'DONE'",
        lambda s: STORE.update_step(RUN, "s", "DONE", 1, target=s),
        pgqrs.ValidationError,
    ),
    (
        "update_step: status 'success'",
        lambda s: STORE.update_step(RUN, "s", "success", 1, target=s),
        pgqrs.ValidationError,
    ),
    (
        "update_step: status RUNNING",
        lambda s: STORE.update_step(RUN, "s", S.RUNNING, 1, target=s),
        pgqrs.ValidationError,
    ),
    (
        "update_step: status PAUSED",
        lambda s: STORE.update_step(RUN, "s", S.PAUSED, 1, target=s),
        pgqrs.ValidationError,
    ),
    (
        "update_step: status None",
        lambda s: STORE.update_step(RUN, "s", None, 1, target=s),
        pgqrs.ValidationError,
    ),
    (
        "update_step: step name empty",
        lambda s: STORE.update_step(RUN, "", S.SUCCESS, 1, target=s),
        pgqrs.ValidationError,
    ),
    (
        "update_step: value a set",
        lambda s: STORE.update_step(RUN, "s", S.SUCCESS, {1}, target=s),
        pgqrs.PayloadError,
    ),
    (
        "update_step: value too big",
        lambda s: STORE.update_step(RUN, "s", S.SUCCESS, BIG, target=s),
        pgqrs.PayloadError,
    ),
    (
        "update_step: SUCCESS step again",
        lambda s: STORE.update_step(RUN, "approved", S.ERROR, "no", target=s),
        pgqrs.IllegalTransition,
    ),
    (
        "update_step: finished run",
        lambda s: STORE.update_step(DONE, "late", S.SUCCESS, 1, target=s),
        pgqrs.IllegalTransition,
    ),
    (
        "update_step: run id past 64 bits",
        lambda s: STORE.update_step(2**70, "s", S.SUCCESS, 1, target=s),
        pgqrs.ValidationError,
    ),
    (
        "resume_run: run id past 64 bits",
        lambda s: STORE.resume_run(2**64, target=s),
        pgqrs.ValidationError,
    ),
    ("resume_run: run unknown", lambda s: STORE.resume_run(10**9, target=s), pgqrs.RunNotFound),
    (
        "resume_run: finished run",
        lambda s: STORE.resume_run(DONE, target=s),
        pgqrs.IllegalTransition,
    ),
    ("get_run: run unknown", lambda s: STORE.get_run(10**9, target=s), pgqrs.RunNotFound),
]


async def not_async_target(message: pgqrs.Message) -> None: ...


class SyncCallable:
    def __call__(self, ctx: Any, params: Any) -> None: ...


# Calls through the store's own transactions, and builder calls that touch nothing.
ON_STORE: list[tuple[str, Call, type[pgqrs.PgqrsError]]] = [
    ("create_queue: name invalid", lambda st: st.create_queue("bad name"), pgqrs.InvalidName),
    ("create_queue: name too long", lambda st: st.create_queue("q" * 129), pgqrs.InvalidName),
    (
        "create_queue: max_deliveries 0",
        lambda st: st.create_queue("q2", max_deliveries=0),
        pgqrs.ValidationError,
    ),
    (
        "create_queue: max_deliveries 2**40",
        lambda st: st.create_queue("q3", max_deliveries=2**40),
        pgqrs.ValidationError,
    ),
    (
        "create_workflow: max_deliveries 2**40",
        lambda st: st.create_workflow("wf3", max_deliveries=2**40),
        pgqrs.ValidationError,
    ),
    ("get_run: run id past 64 bits", lambda st: st.get_run(-(2**63) - 1), pgqrs.ValidationError),
    ("cancel_run: run id past 64 bits", lambda st: st.cancel_run(2**63), pgqrs.ValidationError),
    ("create_workflow: name invalid", lambda st: st.create_workflow("bad/name"), pgqrs.InvalidName),
    ("create_workflow: name not a str", lambda st: st.create_workflow(42), pgqrs.InvalidName),
    ("retry policy invalid", lambda st: pgqrs.RetryPolicy(max_attempts=0), pgqrs.ValidationError),
    (
        "create_workflow: retention 0",
        lambda st: st.create_workflow("wf4", retention=0),
        pgqrs.DurationError,
    ),
    (
        "create_workflow: error_retention NaN",
        lambda st: st.create_workflow("wf4", error_retention=float("nan")),
        pgqrs.DurationError,
    ),
    (
        "create_workflow: retention shorter than its timeout",
        lambda st: st.create_workflow("wf4", timeout=60, retention=30),
        pgqrs.RetentionTooShort,
    ),
    (
        "create_queue: retention negative",
        lambda st: st.create_queue("q4", retention=-1),
        pgqrs.DurationError,
    ),
    ("prune: batch_size 0", lambda st: st.prune(batch_size=0), pgqrs.ValidationError),
    ("get_workflow: unknown", lambda st: st.get_workflow("nope"), pgqrs.WorkflowNotFound),
    ("get_queue: unknown", lambda st: st.get_queue("nope"), pgqrs.QueueNotFound),
    ("delete_queue: unknown", lambda st: st.delete_queue("nope"), pgqrs.QueueNotFound),
    ("purge_queue: unknown", lambda st: st.purge_queue("nope"), pgqrs.QueueNotFound),
    ("queue_stats: unknown", lambda st: st.queue_stats("nope"), pgqrs.QueueNotFound),
    (
        "replay_dead_letters: unknown",
        lambda st: st.replay_dead_letters("nope"),
        pgqrs.QueueNotFound,
    ),
    ("get_run: unknown", lambda st: st.get_run(10**9), pgqrs.RunNotFound),
    ("cancel_run: unknown", lambda st: st.cancel_run(10**9), pgqrs.RunNotFound),
    ("cancel_run: finished", lambda st: st.cancel_run(DONE), pgqrs.IllegalTransition),
    ("retry_run: unknown", lambda st: st.retry_run(10**9), pgqrs.RunNotFound),
    ("retry_run: succeeded", lambda st: st.retry_run(DONE), pgqrs.IllegalTransition),
    ("wait_for_run: unknown", lambda st: st.wait_for_run(10**9, timeout=1), pgqrs.RunNotFound),
    ("list_runs: status 'DONE'", lambda st: st.list_runs(status="DONE"), pgqrs.ValidationError),
    (
        "update_step: run unknown",
        lambda st: st.update_step(10**9, "s", S.SUCCESS, 1),
        pgqrs.RunNotFound,
    ),
    (
        "consumer: name invalid",
        lambda st: pgqrs.consumer("bad name", None, "wf"),
        pgqrs.InvalidName,
    ),
    ("consumer: no queue", lambda st: pgqrs.consumer("w", None), pgqrs.ValidationError),
    (
        "consumer: queue name invalid",
        lambda st: pgqrs.consumer("w", None, "bad name"),
        pgqrs.InvalidName,
    ),
    (
        "handler: a lambda",
        lambda st: pgqrs.consumer("w", None, "wf").handler(lambda ctx, p: None),
        pgqrs.HandlerError,
    ),
    (
        "handler: a sync def",
        lambda st: pgqrs.consumer("w", None, "wf").handler(print),
        pgqrs.HandlerError,
    ),
    (
        "handler: sync __call__",
        lambda st: pgqrs.consumer("w", None, "wf").handler(SyncCallable()),
        pgqrs.HandlerError,
    ),
    (
        "consumer: no handler",
        lambda st: pgqrs.consumer("w", None, "wf").create(st),
        pgqrs.ConfigurationError,
    ),
    (
        "consumer: concurrency 0",
        lambda st: (
            pgqrs.consumer("w", None, "wf").handler(not_async_target).create(st, concurrency=0)
        ),
        pgqrs.ValidationError,
    ),
    (
        "consumer: queue unknown",
        lambda st: pgqrs.consumer("w", None, "nope").handler(not_async_target).create(st),
        pgqrs.QueueNotFound,
    ),
    (
        "consumer: name in use",
        lambda st: pgqrs.consumer("busy", None, "q").handler(not_async_target).create(st),
        pgqrs.WorkerNameInUse,
    ),
    (
        "connect: unsupported URL",
        lambda st: pgqrs.connect("mysql://localhost/db"),
        pgqrs.ConfigurationError,
    ),
]

# Filled in by the test (the lambdas above read them when called).
STORE: pgqrs.Store
RUN: int  # a QUEUED run with one step recorded by update_step
DONE: int  # a run that ended SUCCESS


async def call(fn: Call, arg: Any) -> Any:
    result = fn(arg)
    if inspect.isawaitable(result):
        result = await result
    return result


async def outcome(fn: Call, arg: Any, expected: type[pgqrs.PgqrsError]) -> str | None:
    """None if ``fn`` raised ``expected``; otherwise what happened instead."""
    try:
        await call(fn, arg)
    except expected:
        return None
    except Exception as error:
        return f"raised {type(error).__module__}.{type(error).__name__}: {error}"
    return "raised nothing"


@pytest.mark.timeout(120)
async def test_bad_input_sweep(db_url: str, backend: str) -> None:
    global STORE, RUN, DONE
    store = STORE = await pgqrs.connect(db_url, max_payload_bytes=LIMIT)
    try:
        await store.create_workflow("wf")
        await store.create_queue("q")
        async with store._begin() as conn:
            await conn.execute(text("CREATE TABLE ledger (note VARCHAR(200) NOT NULL)"))
        DONE = await pgqrs.workflow("wf").trigger({"n": 1}).execute(store)

        async def succeed(ctx: pgqrs.RunContext, params: Any) -> Any:
            return params

        runner = await pgqrs.consumer("runner", None, "wf").handler(succeed).create(store)
        await runner.run_until_idle(timeout=30)
        assert await store.wait_for_run(DONE, timeout=1) == {"n": 1}
        RUN = await pgqrs.workflow("wf").trigger({"n": 2}).execute(store)
        await store.update_step(RUN, "approved", S.SUCCESS, True)
        # A registered, live worker (never started) holds the name "busy". Kept referenced:
        # a row naming this process whose Worker is gone is free for the taking.
        busy = await (
            pgqrs.consumer("busy", None, "q")
            .handler(not_async_target)
            .create(store, heartbeat_interval=600, own_pool=False)
        )
        assert busy.status is pgqrs.WorkerStatus.READY
        before = await table_counts(store)

        failures: list[str] = []
        for label, fn, expected in IN_SESSION:
            async with AsyncSession(store.engine) as session, session.begin():
                await session.execute(
                    text("INSERT INTO ledger (note) VALUES (:n)"), {"n": f"{label} / before"}
                )
                problem = await outcome(fn, session, expected)
                if problem:
                    failures.append(f"{label}: expected {expected.__name__}, {problem}")
                # The caller's transaction is still usable: write again, then commit.
                await session.execute(
                    text("INSERT INTO ledger (note) VALUES (:n)"), {"n": f"{label} / after"}
                )
        for label, fn, expected in ON_STORE:
            problem = await outcome(fn, store, expected)
            if problem:
                failures.append(f"{label}: expected {expected.__name__}, {problem}")
        after = await table_counts(store)
        async with store._read() as conn:
            ledger = (await conn.execute(text("SELECT count(*) FROM ledger"))).scalar_one()
    finally:
        await store.close()
    report(
        "bad input sweep",
        backend=backend,
        cases=len(IN_SESSION) + len(ON_STORE),
        in_callers_transaction=len(IN_SESSION),
        untyped_or_wrong_errors=len(failures),
        rows_written=sum(after.values()) - sum(before.values()),
    )
    assert failures == []
    assert after == before  # nothing written to any pgqrs table
    assert ledger == 2 * len(IN_SESSION)  # every caller's transaction committed both writes


@pytest.mark.timeout(60)
async def test_bad_step_results_names_and_outputs_inside_runs(db_url: str, backend: str) -> None:
    """Inside a run: a step result that is not JSON or too big, an invalid or reused step
    name — each a typed error the handler can catch, with nothing recorded for that step (a
    transactional step's own writes roll back). Left uncaught, the run ends ERROR naming it."""
    store = await pgqrs.connect(db_url, max_payload_bytes=LIMIT)
    try:
        async with store._begin() as conn:
            await conn.execute(text("CREATE TABLE ledger (note VARCHAR(200) NOT NULL)"))

        async def bad_tx(session: AsyncSession) -> Any:
            await session.execute(text("INSERT INTO ledger (note) VALUES ('tx')"))
            return {1}

        async def probe(ctx: pgqrs.RunContext, params: Any) -> Any:
            caught: list[str] = []
            for name, fn in (
                ("set", lambda: {1}),
                ("nan", lambda: float("nan")),
                ("big", lambda: BIG),
                ("object", object),
            ):
                try:
                    await ctx.step(name, fn)
                except pgqrs.PayloadError:
                    caught.append(name)
            try:
                await ctx.step("tx", bad_tx, transactional=True)
            except pgqrs.PayloadError:
                caught.append("tx")
            for bad_name in ("", "x" * 256, 42, "a\x00b", "\ud83d"):
                try:
                    await ctx.step(bad_name, lambda: 1)  # type: ignore[arg-type]
                except pgqrs.ValidationError:
                    caught.append("invalid name")
            await ctx.step("ok", lambda: 1)
            try:
                await ctx.step("ok", lambda: 2)
            except pgqrs.StepNameReused:
                caught.append("reused")
            return caught

        async def reuse(ctx: pgqrs.RunContext, params: Any) -> Any:
            await ctx.step("a", lambda: 1)
            await ctx.step("a", lambda: 2)

        async def bad_output(ctx: pgqrs.RunContext, params: Any) -> Any:
            return {"when": datetime.now()}

        runs = {}
        for name, handler in (("probe", probe), ("reuse", reuse), ("badout", bad_output)):
            await store.create_workflow(name)
            runs[name] = await pgqrs.workflow(name).trigger().execute(store)
            worker = await pgqrs.consumer(f"w-{name}", None, name).handler(handler).create(store)
            await worker.run_until_idle(timeout=30)
        probe_run = await store.get_run(runs["probe"])
        reuse_run = await store.get_run(runs["reuse"])
        bad_run = await store.get_run(runs["badout"])
        async with store._read() as conn:
            ledger = (await conn.execute(text("SELECT count(*) FROM ledger"))).scalar_one()
        stats = {s.name: s for s in await store.queue_stats()}
    finally:
        await store.close()
    report(
        "bad input inside runs",
        backend=backend,
        caught_in_handler=len(probe_run.output or []),
        uncaught_runs_ended_error=sum(
            r.status is pgqrs.RunStatus.ERROR for r in (reuse_run, bad_run)
        ),
    )
    assert probe_run.status is pgqrs.RunStatus.SUCCESS
    assert probe_run.output == ["set", "nan", "big", "object", "tx"] + ["invalid name"] * 5 + [
        "reused"
    ]
    assert [(s.name, s.status, s.output) for s in probe_run.steps] == [("ok", S.SUCCESS, 1)]
    assert ledger == 0  # the transactional step's write rolled back with it
    assert reuse_run.status is pgqrs.RunStatus.ERROR
    assert reuse_run.error["type"] == "pgqrs_sqla.errors.StepNameReused"
    assert [s.name for s in reuse_run.steps] == ["a"]
    assert bad_run.status is pgqrs.RunStatus.ERROR
    assert bad_run.error["type"] == "pgqrs_sqla.errors.PayloadError"
    assert bad_run.steps == []
    assert all((s.ready, s.leased) == (0, 0) for s in stats.values())


SyncCall = Callable[[Session], Any]

# The sync twins, in the caller's sync ``Session``.
IN_SYNC_SESSION: list[tuple[str, SyncCall, type[pgqrs.PgqrsError]]] = [
    (
        "params: NUL",
        lambda s: pgqrs.workflow("wf").trigger({"a": "\x00"}).execute_sync(s),
        pgqrs.PayloadError,
    ),
    (
        "params: lone surrogate",
        lambda s: pgqrs.workflow("wf").trigger(["\ud83d"]).execute_sync(s),
        pgqrs.PayloadError,
    ),
    (
        "params: 5000-deep nesting",
        lambda s: pgqrs.workflow("wf").trigger(DEEP).execute_sync(s),
        pgqrs.PayloadError,
    ),
    (
        "idempotency key with NUL",
        lambda s: pgqrs.workflow("wf").trigger(1, idempotency_key="\x00").execute_sync(s),
        pgqrs.ValidationError,
    ),
    (
        "trigger priority 2**40",
        lambda s: pgqrs.workflow("wf").trigger(1, priority=2**40).execute_sync(s),
        pgqrs.ValidationError,
    ),
    (
        "trigger delay 1e13",
        lambda s: pgqrs.workflow("wf").trigger(1, delay=1e13).execute_sync(s),
        pgqrs.DurationError,
    ),
    (
        "enqueue: NUL",
        lambda s: STORE.queue("q").enqueue_sync("\x00", target=s),
        pgqrs.PayloadError,
    ),
    (
        "enqueue: priority -2**40",
        lambda s: STORE.queue("q").enqueue_sync(1, priority=-(2**40), target=s),
        pgqrs.ValidationError,
    ),
    (
        "enqueue: delay 1e13",
        lambda s: STORE.queue("q").enqueue_batch_sync([1], delay=1e13, target=s),
        pgqrs.DurationError,
    ),
    (
        "update_step: NUL in the value",
        lambda s: STORE.update_step_sync(RUN, "s", S.SUCCESS, {"k": "\x00"}, target=s),
        pgqrs.PayloadError,
    ),
    (
        "update_step: NUL in the step name",
        lambda s: STORE.update_step_sync(RUN, "\x00", S.SUCCESS, 1, target=s),
        pgqrs.ValidationError,
    ),
]


@pytest.mark.timeout(120)
async def test_bad_input_in_a_sync_session(db_url: str, backend: str) -> None:
    """The same refusals through the ``_sync`` entry points in the caller's sync ``Session``:
    a typed error, nothing of ours written, and the caller's next statement and commit work."""
    global STORE, RUN
    store = STORE = await pgqrs.connect(db_url, max_payload_bytes=LIMIT)
    url = make_url(db_url)
    if backend == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    engine = create_engine(url)
    try:
        await store.create_workflow("wf")
        await store.create_queue("q")
        async with store._begin() as conn:
            await conn.execute(text("CREATE TABLE ledger (note VARCHAR(200) NOT NULL)"))
        RUN = await pgqrs.workflow("wf").trigger({"n": 2}).execute(store)
        before = await table_counts(store)
        failures: list[str] = []
        for label, fn, expected in IN_SYNC_SESSION:
            with Session(engine) as session, session.begin():
                session.execute(text("INSERT INTO ledger (note) VALUES (:n)"), {"n": "before"})
                try:
                    fn(session)
                    failures.append(f"{label}: raised nothing")
                except expected:
                    pass
                except Exception as error:
                    failures.append(f"{label}: {type(error).__name__}: {error}")
                session.execute(text("INSERT INTO ledger (note) VALUES (:n)"), {"n": "after"})
        after = await table_counts(store)
        with engine.connect() as conn:
            ledger = conn.execute(text("SELECT count(*) FROM ledger")).scalar_one()
    finally:
        engine.dispose()
        await store.close()
    assert failures == []
    assert after == before
    assert ledger == 2 * len(IN_SYNC_SESSION)
