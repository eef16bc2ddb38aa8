"""Rows the tests read straight from pgqrs's tables, where no public read shows them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

import pgqrs_sqla as pgqrs


async def message_of(store: pgqrs.Store, run_id: int) -> Any:
    """The message row of run ``run_id`` (its lease, ``read_ct``, ``archived_at``...)."""
    m, r = store.tables.messages, store.tables.runs
    async with store._read() as conn:
        return (
            await conn.execute(select(m).join(r, r.c.message_id == m.c.id).where(r.c.id == run_id))
        ).one()


async def deliveries_by_run(store: pgqrs.Store) -> dict[int, int]:
    """Every run's deliveries so far (its message's ``read_ct``), by run id."""
    m, r = store.tables.messages, store.tables.runs
    async with store._read() as conn:
        rows = await conn.execute(select(r.c.id, m.c.read_ct).join(m, m.c.id == r.c.message_id))
        return {run_id: read_ct for run_id, read_ct in rows.all()}
