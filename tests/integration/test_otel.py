"""``pgqrs_sqla.contrib.otel``, in one process, on both backends: the spans of a run from a
trigger inside the app's span through every delivery to the last step (their trace, their
parents, replayed steps marked, retries and waits as events), the metrics, and the trace
context stored with the run."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy import select

import pgqrs_sqla as pgqrs
from pgqrs_sqla import TransientError
from pgqrs_sqla.contrib import otel
from pgqrs_sqla.errors import DurationError
from tests._otel import Sdk, sdk


@pytest.fixture
def telemetry() -> Iterator[Sdk]:
    """The in-memory SDK, with pgqrs instrumented (the gauges read every 10 ms)."""
    found = sdk()
    otel.instrument(depth_interval=0.01)
    try:
        yield found
    finally:
        otel.uninstrument()


def _of_run(spans: list[ReadableSpan], run_id: int) -> list[ReadableSpan]:
    return [s for s in spans if (s.attributes or {}).get("pgqrs.run_id") == run_id]


def _named(spans: list[ReadableSpan], prefix: str) -> list[ReadableSpan]:
    return sorted((s for s in spans if s.name.startswith(prefix)), key=lambda s: s.start_time or 0)


def _events(span: ReadableSpan) -> dict[str, dict[str, Any]]:
    return {e.name: dict(e.attributes or {}) for e in span.events}


async def test_one_trace_from_the_trigger_to_the_last_step(
    telemetry: Sdk, store: pgqrs.Store, run_worker: Any, wait_until: Any, backend: str
) -> None:
    """Three deliveries: a transient error (retry), a durable sleep (wait), then the end.
    Every span of the run is in the app span's trace; each delivery is a child of the
    trigger, each step of its delivery; the steps a redelivery replays are zero-length spans
    marked replayed, and each step that ran is timed once."""
    failures = {"fetch": 1}
    name = f"otel_flow_{backend}"  # the metrics of one process add up across tests

    async def handler(ctx: pgqrs.RunContext, params: dict[str, int]) -> int:
        def fetch() -> int:
            if failures["fetch"]:
                failures["fetch"] -= 1
                raise TransientError("flaky", retry_after=0.01)
            return params["n"]

        n = await ctx.step("fetch", fetch)
        doubled = await ctx.step("double", lambda: n * 2)
        await ctx.sleep("nap", 0.01)
        return int(await ctx.step("finish", lambda: doubled + 1))

    await run_worker(name, handler, heartbeat_interval=0.05)
    tracer = trace.get_tracer("tests")
    with tracer.start_as_current_span("request", kind=SpanKind.SERVER) as request:
        run_id = await pgqrs.workflow(name).trigger({"n": 20}).execute(store)
    assert await store.wait_for_run(run_id, timeout=30) == 41

    spans = telemetry.finished()
    [trigger] = _named(spans, f"trigger {name}")
    trace_id = request.get_span_context().trace_id
    assert trigger.kind is SpanKind.PRODUCER
    assert (
        trigger.parent is not None and trigger.parent.span_id == request.get_span_context().span_id
    )
    assert trigger.context is not None and trigger.context.trace_id == trace_id
    assert (trigger.attributes or {})["messaging.system"] == "pgqrs"

    runs = _named(_of_run(spans, run_id), f"run {name}")
    assert [(s.attributes or {})["pgqrs.attempt"] for s in runs] == [1, 2, 3]
    for delivery in runs:
        assert delivery.kind is SpanKind.CONSUMER
        assert delivery.context is not None and delivery.context.trace_id == trace_id
        assert delivery.parent is not None and delivery.parent.span_id == trigger.context.span_id
        assert [link.context.span_id for link in delivery.links] != []  # its claim
    assert _events(runs[0])["retry"] == {
        "pgqrs.step": "fetch",
        "pgqrs.attempt": 1,
        "pgqrs.delay": 0.01,
    }
    assert _events(runs[1])["wait"]["pgqrs.wait.kind"] == "sleep"
    assert (runs[2].attributes or {})["pgqrs.status"] == "SUCCESS"

    steps = _named(_of_run(spans, run_id), "step ")
    seen = []
    for step in steps:
        attributes = step.attributes or {}
        [parent] = [
            d
            for d in runs
            if step.parent and d.context and d.context.span_id == step.parent.span_id
        ]
        seen.append(
            (
                attributes["pgqrs.step"],
                parent.attributes["pgqrs.attempt"],
                attributes["pgqrs.step.replayed"],
            )  # type: ignore[index]
        )
        assert step.context is not None and step.context.trace_id == trace_id
        if attributes["pgqrs.step.replayed"]:
            assert step.start_time == step.end_time  # not re-timed
    assert sorted(seen, key=lambda s: (s[1], s[0])) == [
        ("fetch", 1, False),  # the transient error
        ("double", 2, False),
        ("fetch", 2, False),
        ("double", 3, True),
        ("fetch", 3, True),
        ("finish", 3, False),
    ]
    [failed] = [s for s in steps if s.status.status_code is StatusCode.ERROR]
    assert (failed.attributes or {})["pgqrs.attempt"] == 1
    assert [e.name for e in failed.events] == ["exception"]

    async with store.engine.connect() as conn:
        stored = (
            await conn.execute(
                select(store.tables.runs.c.trace_context).where(store.tables.runs.c.id == run_id)
            )
        ).scalar()
    assert stored is not None and stored.startswith(f"00-{trace_id:032x}-")

    def total(name: str, **attributes: Any) -> float:
        return sum(
            p.value if hasattr(p, "value") else p.count
            for p in telemetry.points(name)
            if all(p.attributes.get(k) == v for k, v in attributes.items())
        )

    assert total("pgqrs.triggers", **{"pgqrs.workflow": name}) == 1
    assert total("pgqrs.runs.started", **{"pgqrs.workflow": name}) == 1
    assert total("pgqrs.runs.finished", **{"pgqrs.workflow": name, "pgqrs.status": "SUCCESS"}) == 1
    assert total("pgqrs.step.duration", **{"pgqrs.workflow": name, "pgqrs.step": "fetch"}) == 2
    assert total("pgqrs.step.duration", **{"pgqrs.ok": False}) >= 1
    assert total("pgqrs.claim.duration", **{"messaging.destination.name": name}) >= 3

    async def gauges() -> bool:  # the heartbeat's snapshot: nothing ready now, none waiting
        depth = [
            p
            for p in telemetry.points("pgqrs.queue.depth")
            if p.attributes.get("messaging.destination.name") == name
        ]
        return [p.value for p in depth] == [0]

    await wait_until(gauges)


async def test_a_failed_run_is_an_error_span(
    telemetry: Sdk, store: pgqrs.Store, run_worker: Any
) -> None:
    async def handler(ctx: pgqrs.RunContext, params: Any) -> None:
        await ctx.step("charge", lambda: 1 / 0)

    await run_worker("otel_fails", handler)
    run_id = await pgqrs.workflow("otel_fails").trigger().execute(store)
    await store.wait_for_status(run_id, pgqrs.RunStatus.ERROR, timeout=30)
    spans = _of_run(telemetry.finished(), run_id)
    [delivery] = _named(spans, "run otel_fails")
    [step] = _named(spans, "step charge")
    for span in (delivery, step):
        assert span.status.status_code is StatusCode.ERROR
        assert "ZeroDivisionError" in (span.status.description or "")
    assert (delivery.attributes or {})["pgqrs.status"] == "ERROR"
    # No current span at the trigger: the run's trace begins with its trigger.
    [trigger] = _named(telemetry.finished(), "trigger otel_fails")
    assert trigger.parent is None
    assert delivery.parent is not None and trigger.context is not None
    assert delivery.parent.span_id == trigger.context.span_id


async def test_a_child_run_joins_its_parents_trace(
    telemetry: Sdk, store: pgqrs.Store, run_worker: Any
) -> None:
    """``ctx.child`` triggers inside the parent's step: the child's delivery is in its trace."""

    async def child(ctx: pgqrs.RunContext, params: int) -> int:
        return int(await ctx.step("square", lambda: params * params))

    async def parent(ctx: pgqrs.RunContext, params: Any) -> int:
        return int(await ctx.child("sub", "otel_child", 3))

    await run_worker("otel_child", child)
    await run_worker("otel_parent", parent)
    run_id = await pgqrs.workflow("otel_parent").trigger().execute(store)
    assert await store.wait_for_run(run_id, timeout=30) == 9
    spans = telemetry.finished()
    [parent_trigger] = _named(spans, "trigger otel_parent")
    [child_trigger] = _named(spans, "trigger otel_child")
    assert parent_trigger.context is not None and child_trigger.context is not None
    assert child_trigger.context.trace_id == parent_trigger.context.trace_id
    [square] = _named(spans, "step square")
    assert square.context is not None and square.context.trace_id == parent_trigger.context.trace_id
    waits = [e for s in _named(spans, "run otel_parent") for e in s.events if e.name == "wait"]
    assert [(e.attributes or {})["pgqrs.wait.kind"] for e in waits] == ["run"]


def test_instrument_is_idempotent_and_checks_its_interval() -> None:
    sdk()
    try:
        first = otel.instrument()
        assert otel.instrument() is first and otel.instrumented()
    finally:
        otel.uninstrument()
    assert not otel.instrumented()
    with pytest.raises(DurationError, match="depth_interval"):
        otel.instrument(depth_interval=0)
    assert not otel.instrumented()


def test_a_stored_context_reads_back() -> None:
    """What a run stores is what its delivery's parent is made of (``tracestate`` too)."""
    found = sdk()
    tracer = trace.get_tracer("tests")
    with tracer.start_as_current_span("outer") as span:
        carrier = otel.carrier_of(span)
    assert carrier is not None
    parent = trace.get_current_span(otel.context_of(carrier)).get_span_context()
    assert parent.trace_id == span.get_span_context().trace_id
    assert parent.span_id == span.get_span_context().span_id
    assert parent.is_remote
    assert trace.get_current_span(otel.context_of(None)).get_span_context().is_valid is False
    assert found.finished()[0].name == "outer"


def test_without_the_extra_the_import_says_what_to_install() -> None:
    """Where OpenTelemetry's API is not installed (hidden here), the import names the extra."""
    code = (
        "import sys; sys.modules['opentelemetry'] = None\n"
        "try:\n"
        "    import pgqrs_sqla.contrib.otel\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'pgqrs-sqla[otel]'" in done.stdout


async def test_a_pause_and_a_deadline_are_events(
    telemetry: Sdk, store: pgqrs.Store, run_worker: Any, wait_until: Any
) -> None:
    """A step that pauses the run: a ``pause`` event on the step and on its delivery, no
    error. A run past its deadline: a ``cancelled`` event, and the run counted CANCELLED."""

    async def approval(ctx: pgqrs.RunContext, params: Any) -> Any:
        return await ctx.step("approve", lambda: pgqrs.Step.pause(3600))

    async def slow(ctx: pgqrs.RunContext, params: Any) -> None:
        await ctx.step("first", lambda: time.sleep(2.5))  # outlives the run's 2 s deadline
        await ctx.step("second", lambda: None)  # past the deadline: never runs

    await run_worker("otel_pause", approval)
    await run_worker("otel_deadline", slow)
    paused = await pgqrs.workflow("otel_pause").trigger().execute(store)
    # 2 s: with 0.3 s a loaded machine passed the deadline before the first step began.
    late = await pgqrs.workflow("otel_deadline").trigger(timeout=2).execute(store)
    await store.wait_for_status(late, pgqrs.RunStatus.CANCELLED, timeout=30)

    def delivery_of(run_id: int) -> ReadableSpan | None:
        found = [s for s in _of_run(telemetry.finished(), run_id) if s.name.startswith("run ")]
        return found[0] if found else None

    pause_delivery = await wait_until(lambda: delivery_of(paused))
    [approve] = _named(_of_run(telemetry.finished(), paused), "step approve")
    assert "pause" in _events(pause_delivery) and "pause" in _events(approve)
    for span in (pause_delivery, approve):
        assert span.status.status_code is StatusCode.UNSET
    late_delivery = await wait_until(lambda: delivery_of(late))
    assert "cancelled" in _events(late_delivery)
    assert (late_delivery.attributes or {})["pgqrs.status"] == "CANCELLED"
    assert [s.name for s in _named(_of_run(telemetry.finished(), late), "step ")] == ["step first"]
