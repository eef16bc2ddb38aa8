"""The scale-out bench drains with real worker processes and reads their journals (so it cannot rot).

``bench.scaleout.drain`` at a very small size, on both backends (on SQLite the processes
share the database file): every run is delivered once, journaled start and end, and the
most that ran at once, computed from the journals as the bench computes it, is within the
limits. (Its speed is the bench's business, not asserted here.)
"""

from __future__ import annotations

from pathlib import Path

import pgqrs_sqla as pgqrs
from bench import scaleout

SMALL = scaleout.Shape(
    runs=60, processes=2, concurrency=4, keys=6, limit=3, key_limit=1, work_ms=20, pool_size=3
)


async def test_scaleout_drain_holds_the_limits(
    store: pgqrs.Store, db_url: str, tmp_path: Path
) -> None:
    drained = await scaleout.drain(db_url, store, SMALL, tmp_path, limited=True)
    assert drained.deliveries == SMALL.runs
    assert 1 <= drained.most <= SMALL.limit
    assert drained.most_per_key == SMALL.key_limit
    assert drained.seconds > 0
    assert scaleout.take_journals(tmp_path) == []  # read, then removed


def test_most_at_once_counts_an_end_before_a_start_at_the_same_instant() -> None:
    assert scaleout.most_at_once([(0.0, 1.0), (1.0, 2.0)]) == 1
    assert scaleout.most_at_once([(0.0, 2.0), (1.0, 3.0), (1.5, 1.6)]) == 3
    lines = [
        {"pid": 1, "run": 1, "key": "a", "event": "start", "t": 0.0},
        {"pid": 2, "run": 2, "key": "a", "event": "start", "t": 0.5},
        {"pid": 1, "run": 1, "key": "a", "event": "end", "t": 1.0},
        {"pid": 2, "run": 2, "key": "a", "event": "end", "t": 1.5},
    ]
    assert scaleout.overlaps(lines) == (2, 2, 2)
