"""``pgqrs-sqla dashboard``: loopback only, no login, read-only unless ``--operate``."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import sys
from pathlib import Path

import httpx

import pgqrs_sqla as pgqrs
from pgqrs_sqla.contrib.dashboard import CSP
from pgqrs_sqla.models import RunStatus
from tests._cli import run_cli
from tests._wait import alive, eventually


def test_a_host_off_this_machine_is_refused_before_connecting(tmp_path: Path) -> None:
    missing = f"sqlite:///{tmp_path}/missing.db"  # reaching the database would exit 3
    for host in ("0.0.0.0", "192.0.2.7", "example.org", "::"):
        done = run_cli("dashboard", "--database-url", missing, "--host", host)
        assert done.returncode == 2, done.stderr
        assert "is not this machine" in done.stderr and "auth" in done.stderr


async def test_it_serves_this_machine_and_acts_with_operate(
    store: pgqrs.Store, db_url: str
) -> None:
    await store.create_workflow("idle")
    run_id = await pgqrs.workflow("idle").trigger({"n": 1}).execute(store)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pgqrs_sqla",
        "dashboard",
        "--database-url",
        db_url,
        "--port",
        str(port),
        "--operate",
        stderr=asyncio.subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base) as client:

            async def page() -> httpx.Response | None:
                alive(proc)
                try:
                    return await client.get(f"/runs/{run_id}")
                except httpx.ConnectError:
                    return None

            response = await eventually(page, what="the dashboard answering")
            assert response.status_code == 200
            assert response.headers["content-security-policy"] == CSP
            found = re.search(r'name="csrf_token" value="([^"]+)"', response.text)
            assert found is not None, "no action form: --operate shows them"
            done = await client.post(f"/runs/{run_id}/cancel", data={"csrf_token": found[1]})
            assert done.status_code == 303
        assert (await store.get_run(run_id)).status is RunStatus.CANCELLED
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(proc.wait(), 30)
        assert proc.stderr is not None
        said = (await proc.stderr.read()).decode()
    assert f"pgqrs dashboard on http://127.0.0.1:{port}/" in said
    assert proc.returncode == 0, said
