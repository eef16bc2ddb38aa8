"""A worker *process* with its own OpenTelemetry SDK, for the cross-process trace test.

    python otel_worker_proc.py URL SPANS RUN_ID

Sets up a ``TracerProvider`` whose exporter appends each finished span to SPANS as one JSON
line, calls ``pgqrs_sqla.contrib.otel.instrument()``, serves the 3-step ``otel_order``
workflow until run RUN_ID ends, and exits (0 once the spans are written).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

import pgqrs_sqla as pgqrs
from pgqrs_sqla.contrib import otel


class JsonLines(SpanExporter):
    """Each finished span as one JSON line: its ids, parent, name, kind and attributes."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self.path.open("a") as out:
            for span in spans:
                assert span.context is not None
                out.write(
                    json.dumps(
                        {
                            "name": span.name,
                            "kind": span.kind.name,
                            "trace_id": f"{span.context.trace_id:032x}",
                            "span_id": f"{span.context.span_id:016x}",
                            "parent": None
                            if span.parent is None
                            else f"{span.parent.span_id:016x}",
                            "attributes": dict(span.attributes or {}),
                            "events": [e.name for e in span.events],
                        }
                    )
                    + "\n"
                )
        return SpanExportResult.SUCCESS


async def order(ctx: pgqrs.RunContext, params: dict[str, Any]) -> dict[str, Any]:
    reserved = await ctx.step("reserve", lambda: params["item"])
    charged = await ctx.step("charge", lambda: 42)
    shipped = await ctx.step("ship", lambda: f"{reserved} for {charged}")
    return {"shipped": shipped}


async def main(url: str, spans: Path, run_id: int) -> None:
    store = await pgqrs.connect(url)
    try:
        await store.create_workflow("otel_order")
        worker = (
            await pgqrs.consumer("otel-worker", None, "otel_order")
            .handler(order)
            .create(store, poll_interval=0.05)
        )
        worker.start()
        try:
            await store.wait_for_run(run_id, timeout=60)
        finally:
            await worker.stop()
    finally:
        await store.close()


if __name__ == "__main__":
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonLines(Path(sys.argv[2]))))
    trace.set_tracer_provider(provider)
    otel.instrument()
    asyncio.run(main(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])))
    provider.shutdown()
