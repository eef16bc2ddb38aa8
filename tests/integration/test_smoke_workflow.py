"""The guide's flow end to end, on both backends: trigger, steps, transient retry, pause,
update_step + resume_run, output."""

from __future__ import annotations

import pgqrs_sqla as pgqrs
from pgqrs_sqla import Step, StepStatus, TransientError


async def test_guide_flow(store: pgqrs.Store) -> None:
    calls: dict[str, int] = {}

    async def handler(ctx: pgqrs.RunContext, params: dict[str, str]) -> dict[str, object]:
        async def fetch() -> list[int]:
            calls["fetch"] = calls.get("fetch", 0) + 1
            if calls["fetch"] < 2:
                raise TransientError(retry_after=0.05)
            return [1, 2, 3]

        data = await ctx.step("fetch_data", fetch)
        doubled = await ctx.step("transform", lambda: [x * 2 for x in data])
        approval = await ctx.step("wait_for_approval", lambda: Step.pause(3600))
        return {"n": len(doubled), "approval": approval, "url": params["url"]}

    await store.create_workflow("data_pipeline")
    worker = await (
        pgqrs.consumer("worker-1", 8080, "data_pipeline")
        .handler(handler)
        .create(store, poll_interval=0.05)
    )
    run_id = await pgqrs.workflow("data_pipeline").trigger({"url": "u"}).execute(store)
    worker.start()
    try:
        run = await store.wait_for_status(run_id, pgqrs.RunStatus.PAUSED, timeout=10)
        assert {s.name: (s.status, s.attempts) for s in run.steps} == {
            "fetch_data": (StepStatus.SUCCESS, 2),
            "transform": (StepStatus.SUCCESS, 1),
            "wait_for_approval": (StepStatus.PAUSED, 1),
        }
        await store.update_step(run_id, "wait_for_approval", StepStatus.SUCCESS, {"ok": True})
        await store.resume_run(run_id)
        output = await store.wait_for_run(run_id, timeout=10)
    finally:
        await worker.stop()
    assert output == {"n": 3, "approval": {"ok": True}, "url": "u"}
    assert calls["fetch"] == 2  # replayed from the record after the pause, not re-run
