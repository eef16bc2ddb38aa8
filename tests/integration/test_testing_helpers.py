"""pgqrs_sqla.testing: what a host app's own tests use."""

from __future__ import annotations

from typing import Any

import pgqrs_sqla as pgqrs
from pgqrs_sqla.testing import drain, temp_store, triggered


async def test_temp_store_drain_and_triggered() -> None:
    async def double(ctx: pgqrs.RunContext, params: dict[str, int]) -> int:
        return await ctx.step("double", lambda: params["x"] * 2)

    seen: list[Any] = []

    async def plain(message: pgqrs.Message) -> None:
        seen.append(message.payload)

    async with temp_store() as store:
        await store.create_workflow("double")
        await store.create_queue("plain")
        ids = [await pgqrs.workflow("double").trigger({"x": x}).execute(store) for x in (1, 2)]
        await store.queue("plain").enqueue({"hello": "world"})
        assert [r.input for r in await triggered(store, "double")] == [{"x": 1}, {"x": 2}]
        await drain(store, {"double": double, "plain": plain})
        assert [await store.wait_for_run(i, timeout=1) for i in ids] == [2, 4]
        assert seen == [{"hello": "world"}]
        assert await triggered(store, "double", status=pgqrs.RunStatus.QUEUED) == []
