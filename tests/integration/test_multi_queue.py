"""One worker serving several workflows shares its slots between them."""

from __future__ import annotations

import asyncio
from typing import Any

import pgqrs_sqla as pgqrs


async def test_a_busy_workflow_does_not_starve_another_on_the_same_worker(
    store: pgqrs.Store,
) -> None:
    order: list[str] = []

    async def handler(ctx: pgqrs.RunContext, params: Any) -> None:
        order.append(ctx.workflow)
        await asyncio.sleep(0)  # yield: handlers of one claim interleave

    for name in ("busy", "quiet"):
        await store.create_workflow(name)
    async with store._begin() as conn:
        for _ in range(40):
            await pgqrs.workflow("busy").trigger().execute(conn)
        await pgqrs.workflow("quiet").trigger().execute(conn)
    worker = (
        await pgqrs.consumer("both", None, "busy", "quiet")
        .handler(handler)
        .create(store, concurrency=2, batch_size=2)
    )
    await worker.run_until_idle(timeout=60)
    assert len(order) == 41
    # Claims alternate between the queues: the quiet run is among the first claims, not
    # left until the busy queue is empty (it used to run last, 41st).
    assert order.index("quiet") < 4, order
