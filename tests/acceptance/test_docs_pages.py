"""The docs pages run as written (installation and existing-app: test_docs_existing_app.py)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

import pgqrs_sqla as pgqrs
from tests._cli import run_cli
from tests._wait import alive, eventually, eventually_sync
from tests.acceptance.docs_blocks import DOCS, console_lines, python_blocks, run_page

#: Pages that run as written on the test's database, and what each must print.
PRINTS = {
    "workflows.md": [
        "[save_results] Saving 3 records",
        "[{'order': 101}, {'order': 102}, {'order': 103}]",
        "refused: same (0, 1)",
    ],
    "timers.md": ["('cool_off', 'SUCCESS')"],
    "typed.md": [
        "[totals] Totals: revenue Decimal('1234.50')",
        "run 42: result of step 'approval' cannot be decoded as Approval: at $.at",
    ],
    "children.md": ["('pay', 'child', {'run_id': ", "{'made': 49, 'failed': ["],
    "deadlines.md": ["was cancelled: pgqrs_sqla.DeadlineExceeded: run 1 passed its deadline"],
    "upgrades.md": ["shipped after charged 30, approved by ops", "'approved' is recorded as"],
    "dashboard.md": [
        "before login: 401",
        "grace sees a Cancel button: False",
        "grace cancels: 403",
        "ada cancels: 303 CANCELLED",
        "beside a sync app: 200",
    ],
}
# The tests that run each page's ```python and ```console blocks. A page of the site's nav
# with such blocks and no entry here (or NOT_RUN) fails test_every_page_is_in_the_nav_and_runs.
RUN_BY = {
    **{page: ["test_docs_pages::test_page_prints"] for page in PRINTS},
    "installation.md": ["test_docs_existing_app::test_installation_page"],
    "existing-app.md": [
        "test_docs_existing_app::test_existing_app_page",
        "test_docs_existing_app::test_new_app_commands_run_as_written",
        "test_docs_existing_app::test_the_branch_console_blocks_show_what_alembic_prints",
    ],
    "events.md": ["test_docs_pages::test_events_page"],
    "retention.md": ["test_docs_pages::test_retention_page"],
    "schedules.md": ["test_docs_pages::test_schedules_page"],
    "limits.md": ["test_docs_pages::test_limits_page"],
    "flow-control.md": ["test_docs_pages::test_flow_control_page"],
    "queue.md": ["test_docs_pages::test_queue_page"],
    "embedding.md": ["test_docs_pages::test_embedding_page"],
    "orders-app.md": ["test_docs_pages::test_orders_app_page"],
    "operate.md": [
        "test_docs_pages::test_operate_page",
        "test_docs_pages::test_operate_page_commands_run",
    ],
    "testing.md": ["test_docs_pages::test_testing_page"],
    "tracing.md": ["test_docs_pages::test_tracing_page"],
}
# Pages whose console blocks only run the test suite or the benchmarks themselves.
NOT_RUN = {"reliability.md", "benchmarks.md"}


def nav_pages(nav: object) -> list[str]:
    """The page files of mkdocs.yml's ``nav``, in order."""
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in nav_pages(value)]
    assert isinstance(nav, list), nav
    return [page for item in nav for page in nav_pages(item)]


def test_every_page_is_in_the_nav_and_runs() -> None:
    """The site's nav lists every page of docs/ once and nothing else, and every page with
    code blocks has the tests that run them."""
    config = yaml.safe_load((DOCS.parent / "mkdocs.yml").read_text())
    nav = nav_pages(config["nav"])
    assert len(nav) == len(set(nav)), nav
    assert set(nav) == {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    with_code = {
        page for page in nav if re.search(r"```(?:python|console)\n", (DOCS / page).read_text())
    }
    assert with_code == set(RUN_BY) | NOT_RUN
    for test in (test for tests in RUN_BY.values() for test in tests):
        module, _, name = test.partition("::")
        assert callable(getattr(importlib.import_module(f"tests.acceptance.{module}"), name)), test


def run_on(page: str, backend: str, url: str, tmp_path: Path) -> str:
    """Run ``page`` on PostgreSQL at ``url``; on SQLite as a new user runs it, with no
    ``DATABASE_URL``: the page then keeps its SQLite file in a temporary folder, which it
    must remove when its script ends (the temp directory it was given is empty afterwards)."""
    if backend == "postgresql":
        return run_page(page, tmp_path, {"DATABASE_URL": url})
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    out = run_page(page, tmp_path, {"TMPDIR": str(scratch)})
    assert list(scratch.iterdir()) == [], f"{page} left {list(scratch.iterdir())}"
    return out


@pytest.mark.parametrize("page", list(PRINTS))
def test_page_prints(page: str, backend: str, empty_db_url: str, tmp_path: Path) -> None:
    out = run_on(page, backend, empty_db_url, tmp_path)
    for line in PRINTS[page]:
        assert line in out


def test_events_page(backend: str, empty_db_url: str, tmp_path: Path) -> None:
    """On PostgreSQL with a psycopg URL: the page's sync app makes its own engine from it."""
    url = empty_db_url.replace("postgresql://", "postgresql+psycopg://", 1)
    out = run_on("events.md", backend, url, tmp_path)
    assert "order 1 shipped (ops)" in out
    for error in ("RunNotFound", "IllegalTransition", "InvalidName", "PayloadError"):
        assert f"{error} - " in out


def prints_as_shown(page: str, backend: str, url: str, tmp_path: Path) -> None:
    """Each ```text block after a ```python block of ``page`` is what that block prints."""
    out = run_on(page, backend, url, tmp_path)
    text = (DOCS / page).read_text()
    shown = re.findall(r"```python\n.*?```\n\n(?:[^`]*?\n\n)?```text\n(.*?)```", text, flags=re.S)
    assert "".join(shown) == out


def test_retention_page(backend: str, empty_db_url: str, tmp_path: Path) -> None:
    prints_as_shown("retention.md", backend, empty_db_url, tmp_path)


def test_schedules_page(backend: str, empty_db_url: str, tmp_path: Path) -> None:
    prints_as_shown("schedules.md", backend, empty_db_url, tmp_path)


def test_limits_page(backend: str, empty_db_url: str, tmp_path: Path) -> None:
    prints_as_shown("limits.md", backend, empty_db_url, tmp_path)


def test_flow_control_page(backend: str, empty_db_url: str, tmp_path: Path) -> None:
    prints_as_shown("flow-control.md", backend, empty_db_url, tmp_path)


def test_operate_page(tmp_path: Path) -> None:
    run_page("operate.md", tmp_path)


def test_embedding_page(tmp_path: Path) -> None:
    """It keeps its SQLite file in a temporary folder, and removes it when its script ends:
    the temp directory it was given (TMPDIR) is empty afterwards."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    run_page("embedding.md", tmp_path, {"TMPDIR": str(scratch)})
    assert list(scratch.iterdir()) == []


def test_queue_page(tmp_path: Path) -> None:
    run_page("queue.md", tmp_path)


def test_testing_page(backend: str, db_url: str, tmp_path: Path) -> None:
    """On SQLite without a URL; on PostgreSQL in a schema of its own on a database whose
    own pgqrs tables it leaves alone."""
    url = db_url if backend == "postgresql" else ""
    run_page("testing.md", tmp_path, {"TEST_DATABASE_URL": url} if url else None)


def test_tracing_page(empty_db_url: str, tmp_path: Path) -> None:
    """The console shows the request's trace down to the last step, the metrics at the end,
    and the JSON log line of the step with its run, step and trace ids."""
    out = run_page("tracing.md", tmp_path, {"DATABASE_URL": empty_db_url})
    assert "shipped 2 items for 20" in out
    for span in ("POST /checkout", "trigger checkout", "run checkout", "step ship"):
        assert f'"name": "{span}"' in out
    assert '"pgqrs.runs.finished"' in out and '"pgqrs.step.duration"' in out
    [line] = [line for line in out.splitlines() if line.startswith('{"msg": "label printed"')]
    logged = json.loads(line)
    assert (logged["workflow"], logged["step"]) == ("label", "print_label")
    assert isinstance(logged["run_id"], int)
    assert f'"trace_id": "0x{logged["trace_id"]}"' in out  # the step span's trace
    assert f'"span_id": "0x{logged["span_id"]}"' in out


def _command(line: str, values: dict[str, str]) -> tuple[list[str], str | None]:
    """A console line as argv (comments dropped, the page's example ids and names replaced
    by real ones) and what it pipes into, if anything."""
    command, _, pipe = line.partition(" | ")
    argv = [values.get(token, token) for token in shlex.split(command, comments=True)]
    return argv, pipe.strip() or None


async def test_operate_page_commands_run(empty_db_url: str, tmp_path: Path) -> None:
    """Every command of operate.md's console blocks, in order, against a database holding
    what they name (run 42 paused, dead letters 7 and 9 of ``emails``): each exits 0."""
    # myapp/jobs.py is the page's own registry block.
    (tmp_path / "myapp").mkdir()
    (tmp_path / "myapp" / "__init__.py").write_text("")
    (tmp_path / "myapp" / "jobs.py").write_text("\n\n".join(python_blocks("operate.md")))

    async def pause(ctx: pgqrs.RunContext, params: Any) -> Any:
        return await ctx.step("wait", lambda: pgqrs.Step.pause(3600))

    async with await pgqrs.connect(empty_db_url) as store:
        await store.install()
        await store.create_workflow("fulfil_order")
        await store.create_queue("emails", max_deliveries=1)
        run_id = await pgqrs.workflow("fulfil_order").trigger({"order_id": 1}).execute(store)
        worker = await pgqrs.consumer("prep", None, "fulfil_order").handler(pause).create(store)
        await worker.run_until_idle(timeout=30)
        assert (await store.get_run(run_id)).status is pgqrs.RunStatus.PAUSED
        mail = (
            await pgqrs.consumer("mail", None, "emails")
            .handler(pause)
            .create(store, own_pool=False)
        )
        dead = [await store.queue("emails").enqueue({"n": n}) for n in range(2)]
        for msg in await mail.dequeue(2):
            await mail.fail(msg, "smtp down")

        values = {"42": str(run_id), "7": str(dead[0]), "9": str(dead[1])}
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        lines = console_lines("operate.md")
        assert lines[0].startswith("export PGQRS_DATABASE_URL=")
        env["PGQRS_DATABASE_URL"] = empty_db_url  # the page's URL, made real
        env["DATABASE_URL"] = empty_db_url  # the app's own setting (for --app)
        ran = []
        for line in lines[1:]:
            argv, pipe = _command(line, values)
            assert argv[0] == "pgqrs-sqla", line
            if argv[1] == "worker":  # runs until SIGTERM
                proc = await asyncio.create_subprocess_exec(*argv, cwd=tmp_path, env=env)

                async def serving(proc: asyncio.subprocess.Process = proc) -> bool:
                    alive(proc)  # another process's state: nothing to await
                    return any(w.status == "polling" for w in await store.list_workers()
                               if w.name != "prep" and w.name != "mail")  # fmt: skip

                await eventually(serving, interval=0.05, what=line)
                proc.send_signal(signal.SIGTERM)
                assert await asyncio.wait_for(proc.wait(), 30) == 0, line
                ran.append(argv[1])
                continue
            # In this process: the command's work, without an interpreter start each time.
            done = await asyncio.to_thread(
                run_cli, *argv[1:], cwd=tmp_path,
                env={"PGQRS_DATABASE_URL": empty_db_url, "DATABASE_URL": empty_db_url},
            )  # fmt: skip
            assert done.returncode == 0, f"{line}\n{done.stderr}"
            if pipe == "jq .status":  # jq may be missing: the same filter, in Python
                assert json.loads(done.stdout)["status"] == "QUEUED"  # retried just before
            else:
                assert pipe is None, line
            ran.append(" ".join(argv[1:3]))
    assert "worker" in ran and "runs retry" in ran and "dead-letters replay" in ran
    assert (tmp_path / "alembic" / "env.py").exists()


def test_orders_app_page(empty_db_url: str, tmp_path: Path) -> None:
    """orders-app.md's console block, as far as a test can: the install line is skipped
    (the package is installed), the rest runs in examples/orders_app with the page's
    database URL replaced by a real one; the app answers, then stops on SIGTERM."""
    app_dir = DOCS.parent / "examples" / "orders_app"
    env = {**os.environ, "PYTHONPATH": str(app_dir)}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    ran = []
    for line in console_lines("orders-app.md"):
        argv = shlex.split(line, comments=True)
        if argv[0] == "cd":
            assert argv[1] == "examples/orders_app"
        elif argv[:2] == ["pip", "install"]:
            continue  # installed already
        elif argv[0] == "export":
            name, _, _ = argv[1].partition("=")
            env[name] = empty_db_url
        elif argv[:3] == ["python", "-m", "orders_app"]:
            port = argv[argv.index("--port") + 1]
            proc = subprocess.Popen([sys.executable, *argv[1:]], cwd=app_dir, env=env)
            try:

                def answers(proc: subprocess.Popen[bytes] = proc, port: str = port) -> bool:
                    alive(proc)
                    with contextlib.suppress(httpx.HTTPError):
                        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).is_success
                    return False

                eventually_sync(answers, what="the orders app answers /health")
            finally:
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(30) in (0, -signal.SIGTERM)
        else:
            done = subprocess.run(
                [sys.executable, "-m", *argv] if argv[0] == "alembic" else argv,
                cwd=app_dir, env=env, capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            assert done.returncode == 0, f"{line}\n{done.stderr}"
        ran.append(argv[0])
    assert ran == ["cd", "export", "alembic", "python"]
