"""Concurrency and rate limits, enforced by the claim (in-process workers, both backends).

Handlers hold a :class:`Gate` open until the test lets each one go, and count how many run
at once (one event loop: the count is exact). A handler's count drops before its run is
archived, so it never overstates what the database counts as leased: ``peak <= N`` is the
limit holding, ``peak == N`` shows the test had enough work to break it.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, select

import pgqrs_sqla as pgqrs
from pgqrs_sqla import RunStatus
from tests._wait import eventually

ENDED = (RunStatus.SUCCESS, RunStatus.ERROR, RunStatus.CANCELLED)


class Gate:
    """Handlers that run until let go, and what ran at once."""

    def __init__(self) -> None:
        self.running: Counter[str | None] = Counter()
        self.peak = 0
        self.peak_key: Counter[str | None] = Counter()
        self.started: list[str] = []
        self.held: dict[str, asyncio.Event] = {}

    @property
    def now(self) -> int:
        return sum(self.running.values())

    async def hold(self, name: str, key: str | None = None) -> None:
        self.running[key] += 1
        self.peak = max(self.peak, self.now)
        self.peak_key[key] = max(self.peak_key[key], self.running[key])
        self.started.append(name)
        self.held[name] = asyncio.Event()
        try:
            await self.held[name].wait()
        finally:
            self.running[key] -= 1

    def release(self, name: str) -> None:
        self.held[name].set()

    def waiting(self) -> list[str]:
        return [n for n in self.started if not self.held[n].is_set()]

    async def handler(self, ctx: pgqrs.RunContext, params: Any) -> Any:
        await self.hold(params["name"], params.get("key"))
        return params["name"]


@pytest.fixture
async def workers(store: pgqrs.Store) -> AsyncIterator[Callable[..., Awaitable[pgqrs.Worker]]]:
    """Start workers on a queue; all are stopped at teardown."""
    started: list[pgqrs.Worker] = []

    async def start(queue: str, handler: Any, **options: Any) -> pgqrs.Worker:
        options.setdefault("poll_interval", 0.1)
        worker = (
            await pgqrs.consumer(f"{queue}-{len(started)}", None, queue)
            .handler(handler)
            .create(store, **options)
        )
        worker.start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        await worker.stop(grace=5)


async def trigger(store: pgqrs.Store, wf: str, name: str, key: str | None = None, **kw: Any) -> int:
    params = {"name": name, "key": key}
    return await pgqrs.workflow(wf).trigger(params, concurrency_key=key, **kw).execute(store)


async def drain(gate: Gate, store: pgqrs.Store, run_ids: list[int], running: int) -> None:
    """Let the runs go one at a time, oldest first, each time ``running`` of them hold."""
    for left in range(len(run_ids), 0, -1):
        n = min(running, left)
        await eventually(lambda n=n: len(gate.waiting()) == n)
        gate.release(gate.waiting()[0])
    for run_id in run_ids:
        assert (await store.wait_for_status(run_id, *ENDED, timeout=30)).status is RunStatus.SUCCESS


async def test_global_limit_holds_across_workers(store: pgqrs.Store, workers: Any) -> None:
    gate = Gate()
    info = await store.create_workflow("limited", concurrency=2)
    assert (info.concurrency, info.key_concurrency, info.rate_limit) == (2, None, None)
    ids = [await trigger(store, "limited", f"r{i}") for i in range(10)]
    for _ in range(3):  # twelve slots between them
        await workers("limited", gate.handler, concurrency=4)
    await drain(gate, store, ids, running=2)
    assert gate.peak == 2


async def test_plain_queue_limit(store: pgqrs.Store, workers: Any) -> None:
    gate = Gate()
    info = await store.create_queue("jobs", concurrency=2, rate_limit=(100, 60))
    assert (info.concurrency, info.rate_limit) == (2, (100, 60.0))
    await store.queue("jobs").enqueue_batch([{"name": f"m{i}"} for i in range(6)])

    async def handle(msg: pgqrs.Message) -> None:
        await gate.hold(msg.payload["name"])

    for _ in range(2):  # one message a batch: a batch is acknowledged when all of it ends
        await workers("jobs", handle, concurrency=4, batch_size=1)
    for left in range(6, 0, -1):
        n = min(2, left)
        await eventually(lambda n=n: len(gate.waiting()) == n)
        gate.release(gate.waiting()[0])
    await eventually(lambda: gate.now == 0 and len(gate.started) == 6)
    await eventually(lambda: _archived(store, "jobs"), what="all acked")
    assert gate.peak == 2


async def _archived(store: pgqrs.Store, queue: str) -> bool:
    stats = await store.queue_stats(queue)
    return stats[0].archived == 6


async def test_key_limit_runs_one_key_in_trigger_order(store: pgqrs.Store, workers: Any) -> None:
    gate = Gate()
    await store.create_workflow("keyed", key_concurrency=1)
    plan = [("a1", "A"), ("b1", "B"), ("a2", "A"), ("a3", "A"), ("b2", "B"), ("n1", None)]
    ids = {name: await trigger(store, "keyed", name, key) for name, key in plan}
    assert (await store.get_run(ids["a2"])).concurrency_key == "A"
    await workers("keyed", gate.handler, concurrency=8)
    # Other keys (and runs without one) proceed while A's first run holds its key.
    await eventually(lambda: sorted(gate.waiting()) == ["a1", "b1", "n1"])
    for name in ("n1", "b1", "a1", "b2", "a2", "a3"):
        await eventually(lambda name=name: name in gate.waiting())
        gate.release(name)
    for run_id in ids.values():
        await store.wait_for_status(run_id, *ENDED, timeout=30)
    assert [n for n in gate.started if n.startswith("a")] == ["a1", "a2", "a3"]
    assert [n for n in gate.started if n.startswith("b")] == ["b1", "b2"]
    assert gate.peak_key["A"] == gate.peak_key["B"] == 1


async def test_rate_limit_fixed_window(store: pgqrs.Store, workers: Any) -> None:
    """At most 2 starts per 1 s window: any five starts span more than a window (two windows
    of two at most, a third begun a window after the first)."""
    period = 1.0
    info = await store.create_workflow("rated", rate_limit=(2, timedelta(seconds=period)))
    assert info.rate_limit == (2, period)
    ids = [await pgqrs.workflow("rated").trigger({"i": i}).execute(store) for i in range(7)]

    async def quick(ctx: pgqrs.RunContext, params: Any) -> None:
        return None

    await workers("rated", quick, concurrency=8)
    runs = [await store.wait_for_status(i, *ENDED, timeout=60) for i in ids]
    starts = sorted(r.started_at for r in runs if r.started_at is not None)
    assert len(starts) == 7
    for first, fifth in zip(starts, starts[4:], strict=False):
        assert (fifth - first).total_seconds() >= period * 0.9
    assert (starts[2] - starts[0]).total_seconds() >= period * 0.9  # the first window held 2


async def test_waiting_run_frees_its_slot(store: pgqrs.Store, workers: Any) -> None:
    await store.create_workflow("waits", concurrency=1)

    async def handler(ctx: pgqrs.RunContext, params: Any) -> Any:
        if params["wait"]:
            return await ctx.wait_for_event("go")
        return "done"

    waiter = await pgqrs.workflow("waits").trigger({"wait": True}).execute(store)
    await workers("waits", handler, concurrency=4)
    await eventually(lambda: _waiting(store, waiter))
    # The waiting run holds no slot: another run starts and ends while it waits.
    other = await pgqrs.workflow("waits").trigger({"wait": False}).execute(store)
    assert (await store.wait_for_status(other, *ENDED, timeout=30)).status is RunStatus.SUCCESS
    assert await _waiting(store, waiter)
    await store.send_event(waiter, "go", 7)
    assert await store.wait_for_run(waiter, timeout=30) == 7


async def _waiting(store: pgqrs.Store, run_id: int) -> bool:
    run = await store.get_run(run_id)
    return any(s.kind == "event" and s.status.value == "PAUSED" for s in run.steps)


async def test_expired_lease_frees_its_slot(store: pgqrs.Store, workers: Any) -> None:
    """A run claimed by hand and never acknowledged holds the one slot until its lease ends."""
    gate = Gate()
    await store.create_workflow("expiry", concurrency=1)
    first = await trigger(store, "expiry", "first")
    by_hand = await pgqrs.consumer("by-hand", None, "expiry").handler(gate.handler).create(store)
    try:
        [claimed] = await by_hand.dequeue(visibility_timeout=1.0)
        assert (await store.get_run(first)).status is RunStatus.RUNNING
        second = await trigger(store, "expiry", "second")
        await workers("expiry", gate.handler, concurrency=4)
        await eventually(lambda: bool(gate.started), what="a run after the lease ended")
        # Nothing started while the hand-made lease was live.
        assert datetime.now(UTC) >= claimed.vt
        gate.release(gate.started[0])
        await eventually(lambda: len(gate.started) == 2)
        gate.release(gate.started[1])
        for run_id in (first, second):
            assert (await store.wait_for_status(run_id, *ENDED, timeout=30)).status is (
                RunStatus.SUCCESS
            )
    finally:
        for name in gate.waiting():
            gate.release(name)
        await by_hand.stop(grace=1)


async def test_live_changes(store: pgqrs.Store, workers: Any) -> None:
    """A limit raised, removed, and added on a live system."""
    gate = Gate()
    await store.create_workflow("live", concurrency=1)
    ids = [await trigger(store, "live", f"r{i}") for i in range(8)]
    worker = await workers("live", gate.handler, concurrency=5, heartbeat_interval=0.2)
    await eventually(lambda: len(gate.waiting()) == 1)
    await store.create_workflow("live", concurrency=3)  # raised: read by the next claim
    await eventually(lambda: len(gate.waiting()) == 3)
    info = await store.create_workflow("live", concurrency=pgqrs.UNLIMITED)
    assert info.concurrency is None
    await eventually(lambda: len(gate.waiting()) == 5)  # the worker's own concurrency
    await eventually(lambda: not worker.bindings[0].limited, what="heartbeat saw it go")
    # Added again while five hold: none more starts until fewer than two are leased.
    await store.create_workflow("live", concurrency=2)
    await eventually(lambda: worker.bindings[0].limited, what="heartbeat saw it come")
    assert gate.peak == 5
    for name in gate.waiting():
        gate.release(name)
    gate.peak = 0  # (no await since: the five have not ended yet, none more has started)
    await drain(gate, store, ids[5:], running=2)
    assert gate.peak == 2
    for run_id in ids:
        await store.wait_for_status(run_id, *ENDED, timeout=30)


async def test_blocked_worker_does_not_spin(store: pgqrs.Store, workers: Any) -> None:
    """While the limit is reached, each claim is followed by a wait (a wake-up or the poll)."""
    gate = Gate()
    await store.create_workflow("spin", concurrency=1)
    ids = [await trigger(store, "spin", f"r{i}") for i in range(4)]
    claims = 0

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        nonlocal claims
        if "rate_window_count" in statement and "UPDATE" not in statement:
            claims += 1  # the limited claim's read of the queue row's limits

    event.listen(store.engine.sync_engine, "before_cursor_execute", count)
    try:
        worker = await workers("spin", gate.handler, concurrency=4, poll_interval=0.1)
        await eventually(lambda: len(gate.waiting()) == 1)
        claims_at, idle_at = claims, worker.stats.idle_waits
        await eventually(lambda: worker.stats.idle_waits >= idle_at + 5)
        assert claims - claims_at <= worker.stats.idle_waits - idle_at + 1
    finally:
        event.remove(store.engine.sync_engine, "before_cursor_execute", count)
    await drain(gate, store, ids, running=1)


async def test_rate_limited_worker_waits_for_the_window(store: pgqrs.Store, workers: Any) -> None:
    """A full rate window: no claim until it ends (but one per heartbeat, which may see a
    changed limit); a new limit starts a new window."""
    await store.create_workflow("hourly", rate_limit=(2, 3600))
    ids = [await pgqrs.workflow("hourly").trigger({"i": i}).execute(store) for i in range(4)]

    async def quick(ctx: pgqrs.RunContext, params: Any) -> None:
        return None

    worker = await workers("hourly", quick, concurrency=4, poll_interval=0.05)
    for run_id in ids[:2]:
        await store.wait_for_status(run_id, *ENDED, timeout=30)
    idle_at = worker.stats.idle_waits
    await eventually(lambda: worker.stats.idle_waits >= idle_at + 5)
    assert [(await store.get_run(i)).status for i in ids[2:]] == [RunStatus.QUEUED] * 2
    await store.create_workflow("hourly", rate_limit=(5, 3600))
    for run_id in ids[2:]:
        await store.wait_for_status(run_id, *ENDED, timeout=30)


async def test_priorities_within_limits(store: pgqrs.Store, workers: Any) -> None:
    """The limits cap what runs; among what may start, priority then trigger order decides."""
    gate = Gate()
    await store.create_workflow("prio", concurrency=2, key_concurrency=1)
    holder = await trigger(store, "prio", "holder", "A")
    await workers("prio", gate.handler, concurrency=4)
    await eventually(lambda: gate.waiting() == ["holder"])
    plan = [("low", None, 0), ("a-high", "A", 9), ("high", None, 5)]  # A is full
    async with store.engine.begin() as conn:  # all three appear at once
        ids = [
            await pgqrs.workflow("prio")
            .trigger({"name": name, "key": key}, concurrency_key=key, priority=priority)
            .execute(conn)
            for name, key, priority in plan
        ]
    await eventually(lambda: len(gate.waiting()) == 2)
    assert gate.waiting() == ["holder", "high"]
    gate.release("holder")  # A is free: its high-priority run goes before "low"
    await eventually(lambda: "a-high" in gate.waiting())
    gate.release("high")
    await eventually(lambda: "low" in gate.waiting())
    for name in ("a-high", "low"):
        gate.release(name)
    for run_id in [holder, *ids]:
        await store.wait_for_status(run_id, *ENDED, timeout=30)
    assert gate.started == ["holder", "high", "a-high", "low"]


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": -1}, "concurrency"),
        ({"concurrency": 1.5}, "concurrency"),
        ({"concurrency": True}, "concurrency"),
        ({"concurrency": "3"}, "concurrency"),
        ({"key_concurrency": 0}, "key_concurrency"),
        ({"rate_limit": (0, 10)}, "rate_limit"),
        ({"rate_limit": (5,)}, "rate_limit"),
        ({"rate_limit": 5}, "rate_limit"),
        ({"rate_limit": (5, 0)}, "rate_limit period"),
        ({"rate_limit": (5, -1)}, "rate_limit period"),
        ({"rate_limit": (5, timedelta(0))}, "rate_limit period"),
    ],
)
async def test_bad_limits_write_nothing(
    store: pgqrs.Store, options: dict[str, Any], option: str
) -> None:
    with pytest.raises(pgqrs.ValidationError) as refused:
        await store.create_workflow("bad", **options)
    assert refused.value.option == option
    assert isinstance(refused.value, pgqrs.InvalidLimit | pgqrs.DurationError)
    with pytest.raises(pgqrs.WorkflowNotFound):
        await store.get_workflow("bad")
    if "key_concurrency" not in options:
        with pytest.raises(pgqrs.ValidationError):
            await store.create_queue("badq", **options)
        assert [q.name for q in await store.list_queues()] == []
    # An existing workflow keeps its limits.
    await store.create_workflow("kept", concurrency=3, rate_limit=(4, 60))
    with pytest.raises(pgqrs.ValidationError):
        await store.create_workflow("kept", retention=3600, **options)
    info = await store.get_workflow("kept")
    assert (info.concurrency, info.rate_limit, info.retention) == (3, (4, 60.0), None)


@pytest.mark.parametrize("key", ["", "k" * 256, 5, "nul\x00"])
async def test_bad_concurrency_key_writes_nothing(store: pgqrs.Store, key: Any) -> None:
    with pytest.raises(pgqrs.ValidationError) as refused:
        pgqrs.workflow("keyed").trigger({}, concurrency_key=key)
    assert refused.value.option == "concurrency_key"
    async with store.engine.connect() as conn:
        assert (await conn.execute(select(store.tables.runs.c.id))).all() == []


async def test_limits_declared_on_a_registry_are_set_by_its_workers(store: pgqrs.Store) -> None:
    """Declared next to the handler, set at each worker's start: a deploy that changes a
    limit changes it for every worker; ``UNLIMITED`` removes one."""

    async def handler(ctx: pgqrs.RunContext, params: Any) -> Any:
        return None

    async def consume(message: Any) -> None:
        return None

    first = pgqrs.WorkflowRegistry()
    first.add_workflow("api_calls", handler, concurrency=3, key_concurrency=1)
    first.queue("emails", concurrency=2, rate_limit=(5, 60))(consume)
    async with await first.create_worker(store, "first", poll_interval=0.05):
        info = await store.get_workflow("api_calls")
        assert (info.concurrency, info.key_concurrency) == (3, 1)
        [queue] = [q for q in await store.list_queues() if q.name == "emails"]
        assert (queue.concurrency, queue.rate_limit) == (2, (5, 60.0))

    deployed = pgqrs.WorkflowRegistry()  # the next deploy: one limit raised, one removed
    deployed.add_workflow("api_calls", handler, concurrency=5, key_concurrency=pgqrs.UNLIMITED)
    async with await deployed.create_worker(store, "second", poll_interval=0.05):
        info = await store.get_workflow("api_calls")
        assert (info.concurrency, info.key_concurrency) == (5, None)


def test_a_bad_limit_on_a_registry_is_refused_where_it_is_declared() -> None:
    registry = pgqrs.WorkflowRegistry()
    with pytest.raises(pgqrs.InvalidLimit) as raised:
        registry.workflow("api_calls", concurrency=0)
    assert raised.value.option == "concurrency"
    with pytest.raises(pgqrs.InvalidLimit):
        registry.queue("emails", rate_limit=(0, 60))
    assert registry.names == []


async def test_trigger_many_concurrency_keys_hold_the_key_limit(
    store: pgqrs.Store, workers: Any
) -> None:
    """Runs written by one ``trigger_many`` carry their ``concurrency_keys``: one run of a key
    at a time, in the order of the items, other keys beside it."""
    gate = Gate()
    await store.create_workflow("keyed", key_concurrency=1)
    plan = [("a1", "A"), ("b1", "B"), ("a2", "A"), ("a3", "A"), ("n1", None)]
    ids = await (
        pgqrs.workflow("keyed")
        .trigger_many(
            [{"name": name, "key": key} for name, key in plan],
            concurrency_keys=[key for _, key in plan],
        )
        .execute(store)
    )
    await workers("keyed", gate.handler, concurrency=8)
    await eventually(lambda: sorted(gate.waiting()) == ["a1", "b1", "n1"])
    for name in ("n1", "b1", "a1", "a2", "a3"):
        await eventually(lambda name=name: name in gate.waiting())
        gate.release(name)
    for run_id in ids:
        await store.wait_for_status(run_id, *ENDED, timeout=30)
    assert [n for n in gate.started if n.startswith("a")] == ["a1", "a2", "a3"]
    assert gate.peak_key["A"] == 1
