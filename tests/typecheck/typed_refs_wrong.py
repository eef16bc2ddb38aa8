"""The mistakes mypy must catch (tests/unit/test_typed_checking.py): each line marked
``# error: <code>`` is reported, with that code, and nothing else is."""

from __future__ import annotations

import pgqrs_sqla as pgqrs

from .typed_refs import PipelineParams, PipelineResult, pipeline


async def wrong(store: pgqrs.Store) -> None:
    ref = pgqrs.workflow("pipeline", pipeline)
    ref.trigger({"source": "s3://in"})  # error: arg-type
    ref.trigger("s3://in")  # error: arg-type
    result = await ref.wait_for_run(store, 1)
    rows: str = result.rows  # error: assignment
    typed = pgqrs.workflow("pipeline", params_type=PipelineParams, result_type=PipelineResult)
    typed.trigger(PipelineResult(3))  # error: arg-type
    print(rows)
