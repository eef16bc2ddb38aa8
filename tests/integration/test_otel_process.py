"""The issue's acceptance test for ``pgqrs_sqla.contrib.otel``, on both backends: one trace
from an HTTP request's trigger (a Starlette app under OpenTelemetry's ASGI middleware,
called through httpx) through a worker in another process, with an SDK of its own, to the
last step. And its cost when off: without ``instrument()`` nothing of OpenTelemetry is
imported and no trace context is stored."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.trace import SpanKind
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import pgqrs_sqla as pgqrs
from pgqrs_sqla.contrib import otel
from tests._otel import sdk

WORKER = Path(__file__).parents[1] / "otel_worker_proc.py"


async def _run_process(*args: str, timeout: float = 120) -> str:
    """Run ``python *args`` to its end; its stdout (its stderr is shown if it fails)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def _trace_context(store: pgqrs.Store, run_id: int) -> str | None:
    runs = store.tables.runs
    async with store.engine.connect() as conn:
        stmt = select(runs.c.trace_context).where(runs.c.id == run_id)
        found: str | None = (await conn.execute(stmt)).scalar()
    return found


async def test_a_requests_trace_reaches_the_last_step_in_another_process(
    store: pgqrs.Store, db_url: str, tmp_path: Path
) -> None:
    telemetry = sdk()
    otel.instrument()
    try:

        async def create_order(request: Request) -> JSONResponse:
            body = await request.json()
            run_id = await pgqrs.workflow("otel_order").trigger(body).execute(store)
            return JSONResponse({"run_id": run_id}, status_code=201)

        app = OpenTelemetryMiddleware(
            Starlette(routes=[Route("/orders", create_order, methods=["POST"])])
        )
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://shop"
        ) as client:
            response = await client.post("/orders", json={"item": "book"})
        assert response.status_code == 201, response.text
        run_id = response.json()["run_id"]
    finally:
        otel.uninstrument()

    spans_file = tmp_path / "worker-spans.jsonl"
    await _run_process(str(WORKER), db_url, str(spans_file), str(run_id))
    assert await store.wait_for_run(run_id, timeout=5) == {"shipped": "book for 42"}

    here = telemetry.finished()
    [server] = [s for s in here if s.kind is SpanKind.SERVER]
    [trigger] = [s for s in here if s.name == "trigger otel_order"]
    assert server.context is not None and trigger.context is not None
    trace_id = f"{server.context.trace_id:032x}"
    assert trigger.parent is not None and trigger.parent.span_id == server.context.span_id
    assert (trigger.attributes or {})["pgqrs.run_id"] == run_id

    there = [json.loads(line) for line in spans_file.read_text().splitlines()]
    [delivery] = [s for s in there if s["name"] == "run otel_order"]
    assert delivery["kind"] == "CONSUMER"
    assert delivery["trace_id"] == trace_id
    assert delivery["parent"] == f"{trigger.context.span_id:016x}"
    assert delivery["attributes"]["pgqrs.run_id"] == run_id
    steps = {s["attributes"]["pgqrs.step"]: s for s in there if s["name"].startswith("step ")}
    assert list(steps) == ["reserve", "charge", "ship"]  # in the order they ended
    for step in steps.values():
        assert step["trace_id"] == trace_id
        assert step["parent"] == delivery["span_id"]
        assert step["attributes"]["pgqrs.step.replayed"] is False
    stored = await _trace_context(store, run_id)  # the trigger's traceparent (then its flags)
    assert stored is not None and stored.startswith(
        f"00-{trace_id}-{trigger.context.span_id:016x}-"
    )


_UNINSTRUMENTED = textwrap.dedent(
    """
    import asyncio, json, sys
    import pgqrs_sqla as pgqrs

    async def handler(ctx, params):
        return await ctx.step("one", lambda: 1)

    async def main():
        store = await pgqrs.connect(sys.argv[1])
        await store.create_workflow("quiet")
        worker = await pgqrs.consumer("quiet", None, "quiet").handler(handler).create(
            store, poll_interval=0.05, heartbeat_interval=0.05
        )
        worker.start()
        run_id = await pgqrs.workflow("quiet").trigger().execute(store)
        await store.wait_for_run(run_id, timeout=60)
        await worker.stop()
        await store.close()
        loaded = sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")
        print(json.dumps({"run_id": run_id, "loaded": loaded}))

    asyncio.run(main())
    """
)


async def test_without_instrument_nothing_of_opentelemetry_is_imported(
    store: pgqrs.Store, db_url: str
) -> None:
    """A worker and a trigger in a process that never calls ``instrument()``: no
    ``opentelemetry`` module is loaded (though it is installed), and the run's trace context
    stays NULL."""
    got: dict[str, Any] = json.loads(await _run_process("-c", _UNINSTRUMENTED, db_url))
    assert got["loaded"] == []
    assert await _trace_context(store, got["run_id"]) is None
