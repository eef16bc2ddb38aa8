"""The pgqrs-sqla command against both backends: run in this process through
``cli.main(argv)`` (tests/_cli.py), except where the process itself is what is tested - the
exit status of ``python -m pgqrs_sqla``, and the ``worker`` command's signals, closed stderr
pipe and log lines."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import pytest

import pgqrs_sqla as pgqrs
from tests._cli import Done, run_cli
from tests._wait import alive, eventually


def cli(url: str, *args: str, cwd: Path | None = None) -> Done:
    return run_cli("--database-url", url, *args, cwd=cwd)


def cli_json(url: str, *args: str) -> Any:
    done = cli(url, "--json", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_install_and_check(empty_db_url: str) -> None:
    if empty_db_url.startswith("sqlite"):  # an empty database: the file exists (only
        Path(empty_db_url.removeprefix("sqlite:///")).touch()  # install may create one)
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
    assert missing.stderr.strip().startswith("error: no workflow run with id 999999: check the id")
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
    # A real process: `python -m pgqrs_sqla` exits with main()'s status.
    no_url = subprocess.run(
        [sys.executable, "-m", "pgqrs_sqla", "queues"],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "PGQRS_DATABASE_URL"},
        check=False,
        timeout=60,
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
        await polling(store, proc, "cli-worker")
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


# ---------------------------------------------------------------- errors and options


def test_user_code_errors_are_one_line_naming_the_target(db_url: str, tmp_path: Path) -> None:
    (tmp_path / "jobs.py").write_text(REGISTRY)
    (tmp_path / "explodes.py").write_text('raise RuntimeError("no config at import")\n')
    (tmp_path / "needs_dep.py").write_text("import a_dependency_nobody_installed\n")
    (tmp_path / "factory.py").write_text(
        "def make():\n    raise ValueError('DATABASE is not set')\n"
    )
    cases = {
        # target / extra args: (exit code, the one line on stderr)
        ("explodes:registry",): (
            4,
            "error: importing 'explodes' (for explodes:registry) raised "
            "RuntimeError: no config at import",
        ),
        ("needs_dep:registry",): (
            4,
            "error: importing 'needs_dep' (for needs_dep:registry) raised "
            "ModuleNotFoundError: No module named 'a_dependency_nobody_installed'",
        ),
        ("factory:make",): (
            4,
            "error: calling factory:make raised ValueError: DATABASE is not set",
        ),
        ("no_such_module:registry",): (
            2,
            "error: cannot import 'no_such_module': No module named 'no_such_module'",
        ),
        ("jobs:nothing",): (2, "error: 'jobs' has no attribute 'nothing'"),
        ("jobs:registry", "--queues", "nope"): (
            2,
            "error: --queues: nope not in jobs:registry (it has greet)",
        ),
    }
    for args, (code, line) in cases.items():
        done = cli(db_url, "worker", *args, cwd=tmp_path)
        assert (done.returncode, done.stderr.strip()) == (code, line), args
    debug = cli(db_url, "worker", "explodes:registry", "--debug", cwd=tmp_path)
    assert debug.returncode == 4
    assert "Traceback" in debug.stderr and "no config at import" in debug.stderr
    for bad in (["--concurrency", "0"], ["--poll-interval", "0"], ["--grace", "-1"]):
        done = cli(db_url, "worker", "jobs:registry", *bad, cwd=tmp_path)
        assert done.returncode == 2, bad
        assert "Traceback" not in done.stderr
        assert f"argument {bad[0]}" in done.stderr


def test_json_and_debug_are_accepted_after_the_command(db_url: str) -> None:
    assert json.loads(cli(db_url, "runs", "list", "--json").stdout) == []
    assert json.loads(cli(db_url, "queues", "--json").stdout) == []
    assert json.loads(cli(db_url, "check", "--json").stdout) == {"ok": True, "problems": []}
    assert "Traceback" in cli(db_url, "runs", "show", "1", "--debug").stderr


def test_the_database_url_comes_from_the_environment(db_url: str) -> None:
    done = run_cli("--json", "check", env={"PGQRS_DATABASE_URL": db_url})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"ok": True, "problems": []}
    # the flag wins over the environment
    done = run_cli(
        "--database-url", db_url, "check",
        env={"PGQRS_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/x"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


# ---------------------------------------------------------------- the worker process

GATED = textwrap.dedent(
    """
    import asyncio, os
    import pgqrs_sqla as pgqrs

    registry = pgqrs.WorkflowRegistry()

    @registry.workflow("slow")
    async def slow(ctx, params):
        async def gated():
            # Connect to the test's gate (it now knows the step is running), then wait
            # for its go-ahead: one byte.
            reader, writer = await asyncio.open_unix_connection(os.environ["GATE"])
            try:
                await reader.readexactly(1)
            finally:
                writer.close()
            return "done"

        return await ctx.step("gated", gated)

    @registry.workflow("greet")
    async def greet(ctx, params):
        return await ctx.step("hello", lambda: "hello " + params["name"])
    """
)


async def start_worker(
    store: pgqrs.Store, url: str, cwd: Path, name: str, *args: str, **popen: Any
) -> asyncio.subprocess.Process:
    """``pgqrs-sqla worker`` as a process; returns once its worker row is polling."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pgqrs_sqla", "--database-url", url, "worker", *args,
        "--name", name, "--poll-interval", "0.1",
        cwd=cwd, **popen,
    )  # fmt: skip
    await polling(store, proc, name)
    return proc


async def polling(store: pgqrs.Store, proc: asyncio.subprocess.Process, name: str) -> None:
    """Return once worker ``name`` (in process ``proc``) is polling."""

    async def started() -> bool:
        alive(proc)  # another process's state: nothing to await
        return any(w.name == name and w.status == "polling" for w in await store.list_workers())

    await eventually(started, interval=0.05, what=f"worker {name} polls")


class Gate:
    """A unix socket the gated step connects to; the test hands it a byte to finish."""

    def __init__(self) -> None:
        self.path = os.path.join(tempfile.mkdtemp(prefix="gate-"), "s")  # short: AF_UNIX limit
        self.arrivals: asyncio.Queue[asyncio.StreamWriter] = asyncio.Queue()
        self.writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> Gate:
        async def arrived(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.writers.append(writer)
            await self.arrivals.put(writer)

        self.server = await asyncio.start_unix_server(arrived, self.path)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        for writer in self.writers:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        await self.server.wait_closed()
        shutil.rmtree(os.path.dirname(self.path), ignore_errors=True)


async def test_worker_stops_on_sigterm_even_when_stderr_is_a_closed_pipe(
    store: pgqrs.Store, db_url: str, tmp_path: Path
) -> None:
    (tmp_path / "jobs.py").write_text(REGISTRY)
    read_end, write_end = os.pipe()
    try:
        proc = await start_worker(
            store, db_url, tmp_path, "deaf", "jobs:registry", stderr=write_end
        )
    finally:
        os.close(write_end)
    os.close(read_end)  # whoever read our stderr is gone: writing to it is EPIPE
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 15) == 0
    [worker] = await store.list_workers()
    assert (worker.name, worker.status) == ("deaf", "stopped")


async def test_queues_option_serves_only_those(
    store: pgqrs.Store, db_url: str, tmp_path: Path
) -> None:
    (tmp_path / "jobs.py").write_text(GATED)
    await store.create_workflow("slow")  # the worker creates only what it serves
    proc = await start_worker(
        store, db_url, tmp_path, "greeter", "jobs:registry", "--queues", "greet"
    )
    try:
        slow = await pgqrs.workflow("slow").trigger({}).execute(store)
        greet = await pgqrs.workflow("greet").trigger({"name": "ada"}).execute(store)
        assert await store.wait_for_run(greet, timeout=30) == "hello ada"
        assert (await store.get_run(slow)).status is pgqrs.RunStatus.QUEUED
        [worker] = await store.list_workers()
        assert worker.queue == "greet"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0


async def test_sigterm_lets_a_running_step_finish_within_grace(
    store: pgqrs.Store, db_url: str, tmp_path: Path
) -> None:
    (tmp_path / "jobs.py").write_text(GATED)
    async with Gate() as gate:
        proc = await start_worker(
            store, db_url, tmp_path, "graceful", "jobs:registry", "--grace", "30",
            env={**os.environ, "GATE": gate.path}, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stderr is not None
        run_id = await pgqrs.workflow("slow").trigger({}).execute(store)
        step = await asyncio.wait_for(gate.arrivals.get(), 30)  # the step is running
        proc.send_signal(signal.SIGTERM)
        while b"SIGTERM: stopping" not in await asyncio.wait_for(proc.stderr.readline(), 30):
            pass
        assert (await store.get_run(run_id)).status is pgqrs.RunStatus.RUNNING
        step.write(b"x")  # the step may finish now: inside the grace period
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    run = await store.get_run(run_id)
    assert (run.status, run.output) == (pgqrs.RunStatus.SUCCESS, "done")
    assert [(s.name, s.attempts) for s in run.steps] == [("gated", 1)]


async def test_sigterm_releases_a_run_still_running_after_grace(
    store: pgqrs.Store, db_url: str, tmp_path: Path
) -> None:
    (tmp_path / "jobs.py").write_text(GATED)
    async with Gate() as gate:
        proc = await start_worker(
            store, db_url, tmp_path, "impatient", "jobs:registry",
            "--grace", "0.2", "--visibility-timeout", "300",
            env={**os.environ, "GATE": gate.path},
        )  # fmt: skip
        run_id = await pgqrs.workflow("slow").trigger({}).execute(store)
        await asyncio.wait_for(gate.arrivals.get(), 30)  # the step is running, and stays so
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0

    async def quick(ctx: pgqrs.RunContext, params: Any) -> Any:
        return await ctx.step("gated", lambda: "taken over")

    # Released, not left leased for the 300 s visibility timeout: another worker runs it now.
    other = (
        await pgqrs.consumer("other", None, "slow").handler(quick).create(store, poll_interval=0.05)
    )
    async with other:
        assert await store.wait_for_run(run_id, timeout=15) == "taken over"


def test_table_prefix_and_schema_name_the_apps_tables(empty_db_url: str, backend: str) -> None:
    """An app that made its models with pgqrs_models(prefix=..., schema=...) operates them
    with the same names, by option or environment."""
    names = ["--table-prefix", "app_q_"]
    if backend == "postgresql":  # SQLite refuses schema= (see docs/existing-app.md)
        names += ["--schema", "jobs"]
    assert cli(empty_db_url, *names, "install").returncode == 0
    assert cli_json(empty_db_url, *names, "check") == {"ok": True, "problems": []}
    assert cli(empty_db_url, "check").returncode == 3  # the default names are not there
    env: dict[str, str | None] = {"PGQRS_TABLE_PREFIX": "app_q_"}
    if backend == "postgresql":
        env["PGQRS_SCHEMA"] = "jobs"
    done = run_cli("--database-url", empty_db_url, "--json", "queues", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []
    bad = cli(empty_db_url, "--table-prefix", "Bad-Prefix", "check")
    assert bad.returncode == 3 and "invalid table prefix" in bad.stderr


# ---------------------------------------------------------------- operations (issue #9)


async def test_workers_lists_every_queue_a_worker_serves(store: pgqrs.Store, db_url: str) -> None:
    async def handler(message: Any) -> None:
        return None

    for queue in ("flaky", "emails"):
        await store.create_queue(queue)
    worker = await (
        pgqrs.consumer("multi", None, "flaky", "emails")
        .handler(handler, queue="flaky")
        .handler(handler, queue="emails")
        .create(store, own_pool=False)
    )
    # Idle, holding nothing: every queue it serves is listed all the same.
    [row] = await asyncio.to_thread(cli_json, db_url, "workers")
    assert (row["queue"], row["queues"]) == ("flaky", ["flaky", "emails"])
    table = await asyncio.to_thread(cli, db_url, "workers")
    assert "flaky, emails" in table.stdout
    await store.queue("emails").enqueue({"to": "x"})
    [msg] = await worker.dequeue(1, queue="emails")
    [row] = await asyncio.to_thread(cli_json, db_url, "workers")
    assert (row["queue"], row["queues"]) == ("flaky", ["flaky", "emails"])
    await worker.archive(msg)
    await worker.stop(grace=5)


async def test_workers_prune_deletes_old_stopped_rows(store: pgqrs.Store, db_url: str) -> None:
    async def handler(message: Any) -> None:
        return None

    await store.create_queue("q")
    for name in ("gone-1", "gone-2"):
        w = await pgqrs.consumer(name, None, "q").handler(handler).create(store, own_pool=False)
        await w.stop(grace=5)
    assert await asyncio.to_thread(cli_json, db_url, "workers", "prune") == {
        "ok": True,
        "pruned": 0,  # stopped just now: the default retention is 7 days
        "dry_run": False,
    }
    dry = await asyncio.to_thread(
        cli, db_url, "workers", "prune", "--older-than", "0s", "--dry-run"
    )
    assert (dry.returncode, dry.stdout.strip()) == (
        0,
        "would prune 2 stopped worker row(s) older than 0:00:00",
    )
    assert len(await store.list_workers()) == 2
    done = await asyncio.to_thread(cli, db_url, "workers", "prune", "--older-than", "0s")
    assert done.stdout.strip() == "pruned 2 stopped worker row(s) older than 0:00:00"
    assert await store.list_workers() == []
    bad = await asyncio.to_thread(cli, db_url, "workers", "prune", "--older-than", "a week")
    assert bad.returncode == 2 and "not a duration: 'a week'" in bad.stderr


async def test_runs_list_json_includes_the_steps(store: pgqrs.Store, db_url: str) -> None:
    async def handler(ctx: pgqrs.RunContext, params: Any) -> Any:
        await ctx.step("one", lambda: 1)
        return await ctx.step("two", lambda: 2)

    await store.create_workflow("wf")
    ran = await pgqrs.workflow("wf").trigger({}).execute(store)
    worker = await pgqrs.consumer("w", None, "wf").handler(handler).create(store)
    await worker.run_until_idle(timeout=30)
    waiting = await pgqrs.workflow("wf").trigger({}).execute(store)
    runs = {r["id"]: r for r in await asyncio.to_thread(cli_json, db_url, "runs", "list")}
    assert [(s["name"], s["output"]) for s in runs[ran]["steps"]] == [("one", 1), ("two", 2)]
    assert runs[waiting]["steps"] == []


async def test_replaying_a_missing_dead_letter_fails(store: pgqrs.Store, db_url: str) -> None:
    await store.create_queue("emails")
    done = await asyncio.to_thread(cli, db_url, "dead-letters", "replay", "emails", "--id", "77")
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "error: no dead letter 77 in queue 'emails': `pgqrs-sqla dead-letters list emails` "
        "(or store.dead_letters) shows them"
    ]


def test_read_only_commands_never_create_a_sqlite_file(tmp_path: Path) -> None:
    for command in (["queues"], ["check"], ["workers"], ["runs", "list"]):
        done = cli("sqlite:///nothere.db", *command, cwd=tmp_path)
        assert done.returncode == 3, command
        assert done.stderr.splitlines() == [
            "error: SQLite database 'nothere.db' does not exist: correct the path in the URL "
            "(sqlite:////abs/path.db for an absolute path), or create it with "
            "`pgqrs-sqla install`"
        ]
        assert list(tmp_path.iterdir()) == [], command
    assert cli("sqlite:///nothere.db", "install", cwd=tmp_path).returncode == 0
    assert (tmp_path / "nothere.db").exists()


def test_a_missing_schema_is_said_on_one_line(empty_db_url: str) -> None:
    if empty_db_url.startswith("sqlite"):  # an empty file (the fixture only names it)
        Path(empty_db_url.removeprefix("sqlite:///")).touch()
    done = cli(empty_db_url, "queues")
    assert done.returncode == 3
    [line] = done.stderr.splitlines()
    assert line.startswith("error: The pgqrs tables are missing: run `await store.install()`, ")
    assert "  " not in line


APP = textwrap.dedent(
    """
    import os
    from sqlalchemy import create_engine
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool
    import pgqrs_sqla as pgqrs

    URL = os.environ["APP_DB"]  # the app's own setting, written once
    models = pgqrs.pgqrs_models(prefix="app_q_")
    # NullPool: the commands run in the test's process, where a pooled connection of the
    # app's engines (which the command leaves to the app) would outlive the command.
    async_engine = create_async_engine(
        URL.replace("postgresql://", "postgresql+asyncpg://").replace("sqlite://", "sqlite+aiosqlite://"),
        poolclass=NullPool,
    )
    sync_engine = create_engine(URL.replace("postgresql://", "postgresql+psycopg://"), poolclass=NullPool)

    def store():
        return pgqrs.Store(async_engine, models=models)

    async def connected():
        return await pgqrs.connect(URL, models=models)

    def broken():
        raise RuntimeError("settings not loaded")
    """
)


def test_app_option_takes_the_database_from_the_app(
    empty_db_url: str, backend: str, tmp_path: Path
) -> None:
    (tmp_path / "settings.py").write_text(APP)
    env: dict[str, str | None] = {
        "PGQRS_DATABASE_URL": None,
        "PGQRS_APP": None,
        "APP_DB": empty_db_url,
    }

    def run(*args: str, **extra: str) -> Done:
        return run_cli(*args, cwd=tmp_path, env={**env, **extra})

    if backend == "sqlite":  # only install creates the file, whichever way it is named
        for target in ("settings:URL", "settings:sync_engine", "settings:async_engine"):
            refused = run("--app", target, "queues")
            assert refused.returncode == 3 and "does not exist" in refused.stderr, target
        assert not Path(empty_db_url.removeprefix("sqlite:///")).exists()
    installed = run("--app", "settings:URL", "install")
    assert installed.returncode == 0, installed.stderr
    installed = run("--app", "settings:connected", "install")
    assert installed.returncode == 0, installed.stderr
    # each form sees the app's tables (prefix app_q_, from its models)
    for target in ("settings:store", "settings:connected"):
        done = run("--app", target, "--json", "check")
        assert (done.returncode, json.loads(done.stdout)) == (0, {"ok": True, "problems": []})
    for target in ("settings:async_engine", "settings:sync_engine", "settings:URL"):
        done = run("--app", target, "--table-prefix", "app_q_", "--json", "queues")
        assert (done.returncode, json.loads(done.stdout)) == (0, []), (target, done.stderr)
    from_env = run("--json", "queues", PGQRS_APP="settings:store")
    assert (from_env.returncode, json.loads(from_env.stdout)) == (0, []), from_env.stderr
    broken = run("--app", "settings:broken", "queues")
    assert (broken.returncode, broken.stderr.strip()) == (
        4,
        "error: calling settings:broken raised RuntimeError: settings not loaded",
    )
    wrong = run("--app", "settings:models", "queues")
    assert wrong.returncode == 2 and "is not a Store, an AsyncEngine" in wrong.stderr
    both = run("--app", "settings:store", "--database-url", empty_db_url, "queues")
    assert (both.returncode, both.stderr.strip()) == (
        2,
        "error: --database-url and --app both name the database: pass one",
    )


LOGGING = textwrap.dedent(
    """
    import logging
    import pgqrs_sqla as pgqrs

    registry = pgqrs.WorkflowRegistry()
    log = logging.getLogger("jobs")

    @registry.workflow("charge")
    async def charge(ctx, params):
        def card():
            log.info("charging card")
            return 1

        await ctx.step("card", card)
        raise ValueError("card declined")

    @registry.queue("emails")
    async def send(message):
        raise ConnectionError("smtp down")
    """
)

#: The head of a log line: date, time and level.
LOG_LINE = r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR) "


@pytest.mark.parametrize("debug", [False, True])
async def test_worker_logs_are_one_line_each_with_time_level_and_run(
    store: pgqrs.Store, db_url: str, tmp_path: Path, debug: bool
) -> None:
    (tmp_path / "jobs.py").write_text(LOGGING)
    await store.create_queue("emails", max_deliveries=1)
    proc = await start_worker(
        store, db_url, tmp_path, "logger", "jobs:registry", *(["--debug"] if debug else []),
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    run_id = await pgqrs.workflow("charge").trigger({}).execute(store)
    await store.queue("emails").enqueue({"to": "x"})
    with pytest.raises(pgqrs.RunFailed):
        await store.wait_for_run(run_id, timeout=30)
    lines: list[str] = []
    while not (
        any("handler failed" in line for line in lines)
        and any(f"run {run_id} failed" in line for line in lines)
    ):
        lines.append((await asyncio.wait_for(proc.stderr.readline(), 30)).decode().rstrip())
    proc.send_signal(signal.SIGTERM)
    rest = (await asyncio.wait_for(proc.stderr.read(), 30)).decode()
    assert await asyncio.wait_for(proc.wait(), 30) == 0
    text = "\n".join(lines) + rest
    step_line = next(line for line in lines if "charging card" in line)
    assert re.match(LOG_LINE + rf"jobs \[run {run_id} charge/card\] charging card$", step_line)
    failed = next(line for line in lines if f"run {run_id} failed" in line)
    assert re.match(LOG_LINE.replace("(DEBUG|INFO|WARNING|ERROR)", "ERROR"), failed)
    assert f"[run {run_id} charge]" in failed and "card declined" in failed
    handler = next(line for line in lines if "handler failed" in line)
    if debug:  # the traceback follows the line
        assert handler.endswith("handler failed") and "ConnectionError: smtp down" in text
    else:  # summarised on the line
        assert handler.endswith("handler failed (ConnectionError: smtp down)")
    assert ("Traceback" in text) is debug


async def test_runs_show_says_what_a_waiting_run_waits_for(store: pgqrs.Store, db_url: str) -> None:
    async def handler(ctx: pgqrs.RunContext, params: Any) -> Any:
        await ctx.step("first", lambda: 1)
        await ctx.sleep("cool_down", 3600)

    await store.create_workflow("waiter")
    run_id = await pgqrs.workflow("waiter").trigger().execute(store)
    worker = await pgqrs.consumer("w", None, "waiter").handler(handler).create(store)
    async with worker:
        await store.wait_for_status(run_id, pgqrs.RunStatus.PAUSED, timeout=10)
    shown = await asyncio.to_thread(cli_json, db_url, "runs", "show", str(run_id))
    steps = {s["name"]: (s["kind"], s["status"], s["wake_at"] is not None) for s in shown["steps"]}
    assert steps == {"first": (None, "SUCCESS", False), "cool_down": ("sleep", "PAUSED", True)}
    text_view = (await asyncio.to_thread(cli, db_url, "runs", "show", str(run_id))).stdout
    line = next(row for row in text_view.splitlines() if "cool_down" in row)
    assert "sleep" in line and "PAUSED until" in line


async def test_runs_show_lists_a_runs_parent_and_children(store: pgqrs.Store, db_url: str) -> None:
    async def parent(ctx: pgqrs.RunContext, params: Any) -> Any:
        kids = [await ctx.start_child(f"kid-{i}", "kid", {"fail": i == 1}) for i in range(2)]
        return [run["status"] for run in await ctx.wait_for_runs("kids", kids)]

    async def kid(ctx: pgqrs.RunContext, params: Any) -> Any:
        if params["fail"]:
            raise ValueError("kid failed")
        return "ok"

    for name in ("family", "kid"):
        await store.create_workflow(name)
    run_id = await pgqrs.workflow("family").trigger(timeout=3600).execute(store)
    worker = await (
        pgqrs.consumer("w", None, "family", "kid")
        .handler(parent, queue="family")
        .handler(kid, queue="kid")
        .create(store, poll_interval=0.05)
    )
    async with worker:
        assert await store.wait_for_run(run_id, timeout=20) == ["SUCCESS", "ERROR"]
    ok, failed = (await store.get_run(run_id)).children

    shown = await asyncio.to_thread(cli_json, db_url, "runs", "show", str(run_id))
    assert (shown["parent_run_id"], shown["children"]) == (None, [ok, failed])
    assert shown["deadline_at"] is not None
    child = await asyncio.to_thread(cli_json, db_url, "runs", "show", str(failed))
    assert (child["parent_run_id"], child["children"]) == (run_id, [])

    text_view = (await asyncio.to_thread(cli, db_url, "runs", "show", str(run_id))).stdout
    assert "children (2: 1 ERROR, 1 SUCCESS)" in text_view
    assert "  deadline " in text_view and "parent run" not in text_view
    for child_id, status in ((ok, "SUCCESS"), (failed, "ERROR .* kid failed")):
        # a row of the children table: its id, workflow and status (and error)
        assert re.search(rf"(^|\W){child_id}\W+kid\W+{status}", text_view, re.M), text_view
    text_view = (await asyncio.to_thread(cli, db_url, "runs", "show", str(failed))).stdout
    assert f"  parent run {run_id} (family, SUCCESS)" in text_view
    assert "children" not in text_view
