"""The benchmark script runs and prints its table (timings are never asserted here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_quick_on_sqlite() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--backend",
            "sqlite",
            "--only",
            "enqueue,step,latency,timer,event",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    for line in (
        "raw INSERT+COMMIT, 1 connection",
        "enqueue, one transaction each",
        "step checkpoint, 20-step workflow",
        "timer ctx.sleep(name, 0)",
        "event round trip p50",
        "| measurement | value | vs raw | goal | result |",
    ):
        assert line in done.stdout
