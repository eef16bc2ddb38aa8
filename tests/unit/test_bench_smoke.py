"""The benchmark script runs and prints its table (timings are never asserted here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _quick_sqlite(*args: str) -> str:
    """``python -m bench --quick --backend sqlite ARGS``'s output (it must succeed)."""
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--backend", "sqlite", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_bench_quick_on_sqlite() -> None:
    stdout = _quick_sqlite("--only", "enqueue,step,latency,timer,event")
    for line in (
        "raw INSERT+COMMIT, 1 connection",
        "enqueue, one transaction each",
        "step checkpoint, 20-step workflow",
        "timer ctx.sleep(name, 0)",
        "event round trip p50",
        "| measurement | value | vs raw | goal | result |",
    ):
        assert line in stdout


def test_bench_scale_quick_on_sqlite() -> None:
    """The scale bench (fill, claims, triggers, prune under another process's load) runs."""
    stdout = _quick_sqlite("--only", "scale", "--sizes", "0,1k", "--prune-size", "2k")
    for line in (
        "claim 1 run (claim + start) p50, 1 k finished runs",
        "claim 16 plain messages p50, 0 finished runs",
        "trigger, the store's own transaction p50, 1 k finished runs",
        "delete 1 stopped worker row",
        "prune 2 k finished runs",
        "trigger p50 during the prune",
    ):
        assert line in stdout


def test_bench_scaleout_quick_on_sqlite() -> None:
    """The scale-out bench (worker processes, journals, the limits' verdict) runs."""
    stdout = _quick_sqlite("--only", "scaleout", "--runs", "40")
    for line in (
        "scale-out drain, 40 runs of 10 ms over 100 keys, 2 processes x concurrency 4, "
        "concurrency=20, key_concurrency=1",
        "scale-out drain, 40 runs of 10 ms over 100 keys, 2 processes x concurrency 4, no limits",
        "scale-out, most runs at once of the workflow (limit 20)",
        "scale-out limits: PASS: never above 20",
    ):
        assert line in stdout
