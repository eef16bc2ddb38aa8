"""The examples run as a new user would run them (`make demo` runs the data pipeline)."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_example(path: str, url: str | None, **extra: str) -> str:
    """Run the example; ``url=None`` runs it without DATABASE_URL (its SQLite default)."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"} | extra
    if url is not None:
        env["DATABASE_URL"] = url
    done = subprocess.run(
        [sys.executable, str(ROOT / path)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


STEPS = ("fetch_data", "transform_data", "save_results")


def test_data_pipeline_demo_shows_the_crash_story(
    backend: str, empty_db_url: str, tmp_path: Path
) -> None:
    """On SQLite as `make demo` runs it, without DATABASE_URL: then the demo's database goes
    with the demo, and the temp directory it was given (TMPDIR) is as empty afterwards."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    url = empty_db_url if backend == "postgresql" else None
    out = run_example("examples/data_pipeline/demo.py", url, TMPDIR=str(scratch))
    if url is None:
        assert f"<Store sqlite+aiosqlite:///{scratch}/" in out  # it used TMPDIR
        assert list(scratch.iterdir()) == []
    assert "worker-1 died (exit -9, SIGKILL)" in out
    before, after = out.split("worker-2 starts")
    assert "fetch_data: executing" in before
    assert "transform_data: executing" in before  # killed inside it
    assert "save_results: executing" not in before
    assert "fetch_data: executing" not in after  # replayed from the database
    assert "transform_data: executing" in after  # never recorded: run again
    assert "save_results: executing" in after
    assert "SUCCESS -> {'processed_count': 10}" in out
    summary = out.split("what worker-2 did with each step")[1]
    lines = {step: next(x for x in summary.splitlines() if step in x) for step in STEPS}
    fetch = re.search(
        r"attempts=(\d+)  replayed from the database \(executed by worker-1\)", lines["fetch_data"]
    )
    assert fetch is not None, lines["fetch_data"]
    # Every delivery spent on the step counts (StepInfo.attempts): 1, unless worker-1's
    # lease lapsed before it recorded the step (a loaded machine can stall its loop past the
    # demo's 2 s lease; its own next claim is then a second delivery). Never fewer than the
    # times its body ran.
    assert int(fetch[1]) >= before.count("fetch_data: executing") >= 1
    # The body ran twice (worker-1, killed inside it; worker-2), and attempts says so.
    assert lines["transform_data"].endswith(
        "attempts=2  executed (again: worker-1 was killed inside it)"
    )
    assert lines["save_results"].endswith("attempts=1  executed")


def test_quickstart(empty_db_url: str) -> None:
    out = run_example("examples/quickstart.py", empty_db_url)
    line = next(x for x in out.splitlines() if "SUCCESS ->" in x)
    # JSONB may reorder keys: compare the dict, not its text
    assert ast.literal_eval(line.split("-> ", 1)[1]) == {
        "processed_count": 10,
        "total": 285,
        "approved_by": "alice",
    }


def test_approval_example(backend: str, empty_db_url: str, tmp_path: Path) -> None:
    """On SQLite without DATABASE_URL (its default, in a temporary folder it removes), and on
    PostgreSQL: the approved expense is paid after its hold, the one answered after the
    reminder is rejected, the unanswered one expires; each step body ran once."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    url = empty_db_url if backend == "postgresql" else None
    out = run_example("examples/approval/demo.py", url, TMPDIR=str(scratch))
    if url is None:
        assert f"<Store sqlite+aiosqlite:///{scratch}/" in out
        assert list(scratch.iterdir()) == []
    results = {}
    for line in out.splitlines():
        if line.startswith("expense "):
            head, _, steps = line.partition("  steps=")
            output = ast.literal_eval(head.split(None, 3)[3])  # JSONB may reorder keys
            results[int(head.split()[1].rstrip(":"))] = (output, ast.literal_eval(steps))
    assert results == {
        1: ({"status": "paid", "by": "alice"}, ["request", "decision", "hold", "pay"]),
        2: ({"status": "rejected", "by": "alice"}, ["request", "decision", "remind", "decision#2"]),
        3: ({"status": "expired"}, ["request", "decision", "remind", "decision#2"]),
    }
    # Each step body printed once: replays returned the recorded values.
    assert out.count("please approve expense") == 3
    assert out.count("reminder, expense") == 2
    assert out.count("paying expense 1") == 1
