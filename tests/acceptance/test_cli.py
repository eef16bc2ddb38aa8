"""The pgqrs-sqla command, run as a real process against both backends."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pgqrs_sqla as pgqrs


def cli(url: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pgqrs_sqla", "--database-url", url, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def cli_json(url: str, *args: str) -> Any:
    done = cli(url, "--json", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_install_and_check(empty_db_url: str) -> None:
    missing = cli(empty_db_url, "check")
    assert missing.returncode == 3
    assert "pgqrs_queues is missing" in missing.stdout
    assert cli(empty_db_url, "queues").returncode == 3  # no tables: says so, exit 3
    for _ in range(2):  # idempotent
        assert cli(empty_db_url, "install").returncode == 0
    assert cli_json(empty_db_url, "check") == {"ok": True, "problems": []}


async def test_inspect_and_control_runs(store: pgqrs.Store, db_url: str) -> None:
    async def handler(ctx: pgqrs.RunContext, params: Any) -> Any:
        await ctx.step("first", lambda: 1)
        if params.get("fail"):
            raise ValueError("bad input")
        return await ctx.step("gate", lambda: pgqrs.Step.pause(3600))

    await store.create_workflow("wf")
    await store.create_queue("mail", max_deliveries=1)
    failing = await pgqrs.workflow("wf").trigger({"fail": True}).execute(store)
    paused = await pgqrs.workflow("wf").trigger({}).execute(store)
    queued = await pgqrs.workflow("wf").trigger({"later": True}, delay=3600).execute(store)
    worker = (
        await pgqrs.consumer("w", None, "wf").handler(handler).create(store, poll_interval=0.05)
    )
    async with worker:
        await store.wait_for_status(failing, pgqrs.RunStatus.ERROR, timeout=10)
        await store.wait_for_status(paused, pgqrs.RunStatus.PAUSED, timeout=10)

    runs = await asyncio.to_thread(cli_json, db_url, "runs", "list", "--workflow", "wf")
    assert {r["id"]: r["status"] for r in runs} == {
        failing: "ERROR",
        paused: "PAUSED",
        queued: "QUEUED",
    }
    shown = await asyncio.to_thread(cli_json, db_url, "runs", "show", str(failing))
    assert shown["error"]["message"] == "bad input"
    assert [(s["name"], s["status"]) for s in shown["steps"]] == [("first", "SUCCESS")]
    text_view = await asyncio.to_thread(cli, db_url, "runs", "show", str(failing))
    assert "builtins.ValueError: bad input" in text_view.stdout

    assert (await asyncio.to_thread(cli_json, db_url, "runs", "cancel", str(queued)))[
        "status"
    ] == "CANCELLED"
    assert (await asyncio.to_thread(cli_json, db_url, "runs", "retry", str(failing)))[
        "status"
    ] == "QUEUED"
    assert (await asyncio.to_thread(cli, db_url, "runs", "resume", str(paused))).returncode == 0
    missing = await asyncio.to_thread(cli, db_url, "runs", "show", "999999")
    assert missing.returncode == 1
    assert missing.stderr.strip() == "error: no workflow run with id 999999"
    illegal = await asyncio.to_thread(cli, db_url, "runs", "cancel", str(queued))
    assert illegal.returncode == 1
    assert "Traceback" not in illegal.stderr

    queues = {q["name"]: q for q in await asyncio.to_thread(cli_json, db_url, "queues")}
    assert queues["wf"]["ready"] == 2  # the retried and the resumed run
    workers = await asyncio.to_thread(cli_json, db_url, "workers")
    assert [(w["name"], w["status"]) for w in workers] == [("w", "stopped")]

    # dead letters: max_deliveries=1, one failed delivery
    mail = await pgqrs.consumer("m", None, "mail").handler(handler).create(store, own_pool=False)
    msg_id = await store.queue("mail").enqueue({"to": "x"})
    [msg] = await mail.dequeue(1)
    await mail.fail(msg, "smtp down")
    dead = await asyncio.to_thread(cli_json, db_url, "dead-letters", "list", "mail")
    assert [(d["id"], d["last_error"]) for d in dead] == [(msg_id, "smtp down")]
    replayed = await asyncio.to_thread(
        cli_json, db_url, "dead-letters", "replay", "mail", "--id", str(msg_id)
    )
    assert replayed["replayed"] == [msg_id]


def test_errors_are_one_line_with_meaningful_exit_codes(tmp_path: Path) -> None:
    bad = cli("postgresql://nobody:secret@127.0.0.1:1/db", "queues")
    assert bad.returncode == 3
    assert bad.stderr.startswith("error: cannot reach the database")
    assert "secret" not in bad.stderr
    assert "Traceback" not in bad.stderr
    debug = cli("postgresql://nobody@127.0.0.1:1/db", "--debug", "queues")
    assert "Traceback" in debug.stderr
    unknown = cli("mysql://x/y", "queues")
    assert unknown.returncode == 3
    no_url = subprocess.run(
        [sys.executable, "-m", "pgqrs_sqla", "queues"],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "PGQRS_DATABASE_URL"},
        check=False,
    )
    assert no_url.returncode == 2
    assert "PGQRS_DATABASE_URL" in no_url.stderr
    usage = cli("sqlite://", "runs", "show", "not-a-number")
    assert usage.returncode == 2


def test_alembic_init(tmp_path: Path) -> None:
    done = cli("sqlite://", "alembic-init", str(tmp_path / "alembic"), "--template", "sync")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "alembic" / "env.py").exists()
    assert "pgqrs_sqla:migrations/versions" in (tmp_path / "alembic.ini").read_text()


REGISTRY = textwrap.dedent(
    """
    import pgqrs_sqla as pgqrs

    registry = pgqrs.WorkflowRegistry()

    @registry.workflow("greet")
    async def greet(ctx, params):
        name = await ctx.step("name", lambda: params["name"].title())
        return f"hello {name}"

    def make_registry():
        return registry
    """
)


async def test_worker_command_runs_runs_and_stops_on_sigterm(
    store: pgqrs.Store, db_url: str, tmp_path: Path
) -> None:
    (tmp_path / "jobs.py").write_text(REGISTRY)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pgqrs_sqla", "--database-url", db_url,
        "worker", "jobs:make_registry", "--name", "cli-worker", "--concurrency", "2", "--poll-interval", "0.1",
        cwd=tmp_path,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        # The worker creates the workflow itself; wait until it is registered.
        deadline = asyncio.get_running_loop().time() + 30
        while not any(
            w.name == "cli-worker" and w.status == "polling" for w in await store.list_workers()
        ):
            assert asyncio.get_running_loop().time() < deadline, "worker did not start"
            await asyncio.sleep(0.05)
        ids = [
            await pgqrs.workflow("greet").trigger({"name": n}).execute(store)
            for n in ("ada", "bob")
        ]
        assert [await store.wait_for_run(i, timeout=30) for i in ids] == ["hello Ada", "hello Bob"]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    assert proc.stderr is not None
    assert "SIGTERM: stopping" in (await proc.stderr.read()).decode()
    [worker] = await store.list_workers()
    assert (worker.name, worker.status) == ("cli-worker", "stopped")
