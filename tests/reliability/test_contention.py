"""Contention: 8 worker tasks in 2 processes drain one queue of 5,000 messages (2,000 on
SQLite). Each message is acknowledged exactly once, by the holder of its latest lease; some
handlers deliberately outlive their lease, and their late acknowledgement is refused with
``LeaseLost``."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

import pgqrs_sqla as pgqrs
from tests._wait import eventually

from ._support import Procs, report

pytestmark = pytest.mark.reliability

#: messages per backend: SQLite's one writer makes each of its claims and acks a turn at one
#: lock, so it drains at a fraction of PostgreSQL's pace (5,000 took 138 s on a loaded machine)
TOTALS = {"postgresql": 5000, "sqlite": 2000}
SLOW_EVERY = 250  # one message in 250 outlives its first lease


@pytest.mark.timeout(240)
async def test_contention(store: pgqrs.Store, db_url: str, backend: str, tmp_path: Path) -> None:
    total = TOTALS[backend]
    await store.create_queue("contend")
    queue = store.queue("contend")
    for start in range(0, total, 1000):
        await queue.enqueue_batch(
            [{"n": n, "slow": n % SLOW_EVERY == 0} for n in range(start, start + 1000)]
        )
    slow = total // SLOW_EVERY

    procs = Procs("plain", db_url, tmp_path)
    started = time.monotonic()
    for p in range(2):
        await procs.start(f"p{p}")

    async def drained() -> bool:
        [stats] = await store.queue_stats("contend")
        return stats.archived == total

    async with procs.session() as codes:
        await eventually(drained, timeout=180, interval=0.2, what=f"{total} messages acknowledged")
        elapsed = time.monotonic() - started

    handlings = procs.journal_lines()
    by_message: dict[int, list[dict[str, object]]] = defaultdict(list)
    for h in handlings:
        by_message[int(h["id"])].append(h)  # type: ignore[call-overload]
    acked = Counter(h["id"] for h in handlings if h["outcome"] == "acked")
    lease_lost = [h for h in handlings if h["outcome"] == "lease_lost"]
    same_lease = Counter((h["id"], h["token"]) for h in handlings)
    stats_lines = procs.stats_lines()
    [stats] = await store.queue_stats("contend")
    figures = dict(
        backend=backend,
        messages=total,
        processes=2,
        tasks=8,
        drained_s=elapsed,
        handlings=len(handlings),
        lease_lost=len(lease_lost),
        deliberately_slow=slow,
        handled_twice_under_one_lease=sum(1 for n in same_lease.values() if n > 1),
        acked_twice=sum(1 for n in acked.values() if n > 1),
        lost=total - len(acked),
    )
    report("contention", **figures)

    assert set(codes.values()) == {0}, procs.log_tail()
    assert (stats.archived, stats.ready, stats.leased, stats.delayed, stats.dead) == (
        total,
        0,
        0,
        0,
        0,
    )
    assert len(by_message) == total
    # Each message acknowledged exactly once ...
    assert acked == dict.fromkeys(by_message, 1)
    # ... never two handlings under the same lease token ...
    assert max(same_lease.values()) == 1
    # ... and by the holder of its latest lease.
    for handlings_of_one in by_message.values():
        [ack] = [h for h in handlings_of_one if h["outcome"] == "acked"]
        assert ack["token"] == max(h["token"] for h in handlings_of_one)  # type: ignore[type-var]
    # The lease-lost path ran for every deliberately slow handler (and any handler that the
    # machine slowed past its lease); each re-handling follows exactly one lost lease.
    assert len(lease_lost) >= slow
    assert len(handlings) == total + len(lease_lost)
    assert sum(int(s["lease_lost"]) for s in stats_lines) == len(lease_lost)
