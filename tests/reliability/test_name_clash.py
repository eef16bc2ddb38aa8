"""Restart after SIGKILL (issue #9): a killed worker's name is free at once even while its
process is a zombie, and the embedded runners wait (bounded, logged) for a holder that may
be dead instead of aborting startup; a live holder still wins."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

import pgqrs_sqla as pgqrs
from pgqrs_sqla.contrib.asgi import running_worker
from pgqrs_sqla.contrib.threaded import ThreadedWorker

pytestmark = pytest.mark.reliability

Wait = Callable[..., Awaitable[Any]]

CHILD = textwrap.dedent(
    """
    import asyncio, sys
    import pgqrs_sqla as pgqrs

    async def handler(ctx, params):
        return params

    async def main():
        store = await pgqrs.connect(sys.argv[1])
        await pgqrs.consumer("web-1", None, "wf").handler(handler).create(store)
        print("ready", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
    """
)


async def handler(ctx: pgqrs.RunContext, params: Any) -> Any:
    return params


def state_of(pid: int) -> bytes:
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    return stat[stat.rfind(b")") + 2 :][:1]


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux procfs")
async def test_a_killed_workers_name_is_free_while_it_is_a_zombie(
    db_url: str, store: pgqrs.Store, wait_until: Wait
) -> None:
    await store.create_workflow("wf")
    # Popen, not asyncio's subprocesses: their child watcher would reap the child at once.
    child = subprocess.Popen(  # noqa: ASYNC220 (starting it does not block)
        [sys.executable, "-c", CHILD, db_url], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 60)
        assert line.strip() == b"ready", child.stderr.read() if child.stderr else b""
        os.kill(child.pid, signal.SIGKILL)  # and no waitpid: it stays a zombie

        async def zombie() -> bool:
            return state_of(child.pid) == b"Z"

        await wait_until(zombie, timeout=30)
        worker = await pgqrs.consumer("web-1", None, "wf").handler(handler).create(store)
        assert state_of(child.pid) == b"Z"  # still unreaped when the name was taken
        [row] = [w for w in await store.list_workers() if w.name == "web-1"]
        assert (row.id, row.pid, row.status) == (worker.id, os.getpid(), "ready")
        await worker.stop()
    finally:
        child.kill()
        child.wait()
        for pipe in (child.stdout, child.stderr):
            if pipe is not None:
                pipe.close()


@contextlib.asynccontextmanager
async def holder(store: pgqrs.Store, *, live: bool) -> AsyncIterator[pgqrs.Worker]:
    """``web-1`` registered from another host (no pid to check), heartbeating every 0.3s
    if ``live``, else silent (as a worker killed there)."""
    await store.create_workflow("wf")
    worker = (
        await pgqrs.consumer("web-1", None, "wf")
        .handler(handler)
        .create(store, hostname="elsewhere", heartbeat_interval=0.3, own_pool=False)
    )
    if live:
        worker.start()
    try:
        yield worker
    finally:
        if live:
            with contextlib.suppress(pgqrs.WorkerNameInUse):
                await worker.stop(grace=5)


def factory(store: pgqrs.Store) -> Callable[[], Awaitable[pgqrs.Worker]]:
    async def make() -> pgqrs.Worker:
        return await pgqrs.consumer("web-1", None, "wf").handler(handler).create(store)

    return make


async def test_the_lifespan_waits_for_a_holder_that_went_silent(
    store: pgqrs.Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pgqrs_sqla")
    async with (
        holder(store, live=False) as dead,
        running_worker(factory(store), grace=5) as worker,
    ):
        assert worker.id == dead.id  # the row was taken over
        run_id = await pgqrs.workflow("wf").trigger("x").execute(store)
        assert await store.wait_for_run(run_id, timeout=30) == "x"
    waited = [r for r in caplog.records if "waiting up to" in r.getMessage()]
    assert len(waited) == 1 and waited[0].levelno == logging.WARNING


async def test_a_live_holder_still_wins_after_the_wait(
    store: pgqrs.Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pgqrs_sqla")
    async with holder(store, live=True) as live:
        with pytest.raises(pgqrs.WorkerNameInUse) as clash:
            async with running_worker(factory(store), grace=5):
                pass
        assert clash.value.worker == "web-1"
        assert live.health().running
    assert any("waiting up to" in r.getMessage() for r in caplog.records)


async def test_the_thread_runner_waits_for_a_holder_that_went_silent(db_url: str) -> None:
    app = await pgqrs.connect(db_url)
    try:
        async with holder(app, live=False) as dead:

            @contextlib.asynccontextmanager
            async def make() -> AsyncIterator[pgqrs.Worker]:
                async with await pgqrs.connect(db_url) as store:
                    yield await factory(store)()

            runner = ThreadedWorker(make)
            worker = await asyncio.to_thread(runner.start, 60)
            try:
                assert worker.id == dead.id
                run_id = await pgqrs.workflow("wf").trigger("t").execute(app)
                assert await app.wait_for_run(run_id, timeout=30) == "t"
                assert runner.health().healthy
            finally:
                await asyncio.to_thread(runner.stop, 5)
    finally:
        await app.close()
