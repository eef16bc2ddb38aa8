"""What a type checker sees of typed workflows (checked by tests/unit/test_typed_checking.py
with ``mypy --strict``): ``workflow(name, handler)`` and ``workflow(name, params_type=...,
result_type=...)`` are generic in the params and result types; ``workflow(name)`` takes Any."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any, assert_type

import pgqrs_sqla as pgqrs


@dataclasses.dataclass(frozen=True)
class PipelineParams:
    source: str
    batch: uuid.UUID


@dataclasses.dataclass(frozen=True)
class PipelineResult:
    rows: int


async def pipeline(ctx: pgqrs.RunContext, params: PipelineParams) -> PipelineResult:
    async def count() -> int:
        return len(params.source)

    rows = await ctx.step("count", count)
    return PipelineResult(rows)


async def start(store: pgqrs.Store) -> PipelineResult:
    ref = pgqrs.workflow("pipeline", pipeline)
    assert_type(ref, pgqrs.WorkflowRef[PipelineParams, PipelineResult])
    trigger = ref.trigger(PipelineParams("s3://in", uuid.uuid4()), idempotency_key="k")
    assert_type(trigger, pgqrs.Trigger[PipelineParams])
    run_id = await trigger.execute(store)
    result = await ref.wait_for_run(store, run_id, timeout=30)
    assert_type(result, PipelineResult)

    by_types = pgqrs.workflow("pipeline", params_type=PipelineParams, result_type=PipelineResult)
    assert_type(by_types, pgqrs.WorkflowRef[PipelineParams, PipelineResult])
    params_only = pgqrs.workflow("pipeline", params_type=PipelineParams)
    assert_type(params_only, pgqrs.WorkflowRef[PipelineParams, Any])

    untyped = pgqrs.workflow("pipeline")
    await untyped.trigger({"anything": ["goes"]}).execute(store)
    await untyped.trigger().execute(store)
    decoded = pgqrs.decode({"rows": 3}, PipelineResult)
    assert_type(decoded, PipelineResult)
    return result
