"""The suite's own helpers: in-process commands leave the process as they found it, and the
one polling helper returns what it waited for or says what it waited for."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests._cli import run_cli
from tests._wait import alive, eventually, eventually_sync


def test_an_in_process_command_puts_back_what_it_changed(tmp_path: Path) -> None:
    """``pgqrs-sqla worker`` configures logging and imports the target from its working
    directory before it fails: none of it is left behind, and the next call imports the
    working directory's module afresh."""
    url = f"sqlite:///{tmp_path}/app.db"
    assert run_cli("--database-url", url, "install").returncode == 0
    (tmp_path / "jobs_for_helper_test.py").write_text("registry = None\n")
    root = logging.getLogger()
    before = (os.getcwd(), list(sys.path), list(root.handlers), root.level)
    done = run_cli(
        "--database-url", url, "worker", "jobs_for_helper_test:nothing",
        cwd=tmp_path, env={"PGQRS_HELPER_TEST": "set", "HOME": None},
    )  # fmt: skip
    assert (done.returncode, done.stderr.strip()) == (
        2,
        "error: 'jobs_for_helper_test' has no attribute 'nothing'",
    )
    assert (os.getcwd(), list(sys.path), list(root.handlers), root.level) == before
    assert "PGQRS_HELPER_TEST" not in os.environ and "HOME" in os.environ
    assert "jobs_for_helper_test" not in sys.modules
    (tmp_path / "jobs_for_helper_test.py").write_text("nothing = 1\n")
    again = run_cli("--database-url", url, "worker", "jobs_for_helper_test:nothing", cwd=tmp_path)
    assert (again.returncode, again.stderr.strip()) == (  # the new file was imported
        2,
        "error: 'jobs_for_helper_test:nothing' is not a WorkflowRegistry (or a factory returning one)",
    )


def test_usage_errors_return_argparses_status() -> None:
    done = run_cli("runs", "show", "not-a-number", env={"PGQRS_DATABASE_URL": "sqlite://"})
    assert done.returncode == 2 and "invalid int value" in done.stderr


async def test_eventually_returns_the_first_truthy_value() -> None:
    calls: list[int] = []

    async def third_time() -> int | None:
        calls.append(1)
        return len(calls) if len(calls) == 3 else None

    assert await eventually(third_time, interval=0) == 3
    assert await eventually(lambda: "sync predicates too", interval=0) == "sync predicates too"


async def test_eventually_says_what_it_waited_for() -> None:
    with pytest.raises(AssertionError, match=r"within 0\.05s: the moon \(last value 0\)"):
        await eventually(lambda: 0, timeout=0.05, interval=0.01, what="the moon")
    with pytest.raises(AssertionError, match=r"within 0\.05s: a sync moon"):
        eventually_sync(lambda: False, timeout=0.05, interval=0.01, what="a sync moon")


def test_alive_fails_at_once_when_the_process_has_exited() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(7)"])
    proc.wait(60)
    with pytest.raises(AssertionError, match=r"exited \(status 7\)"):
        eventually_sync(lambda: alive(proc), timeout=60)


async def test_alive_knows_asyncio_processes() -> None:
    aproc = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await asyncio.wait_for(aproc.wait(), 60)
    with pytest.raises(AssertionError, match=r"exited \(status 0\)"):
        await eventually(lambda: alive(aproc), timeout=60)
