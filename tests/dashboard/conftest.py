"""Fixtures for the dashboard's tests: a database seeded with runs in every state."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

import pgqrs_sqla as pgqrs
from tests.dashboard._seed import Seeded, seed


@pytest.fixture
async def seeded(
    store: pgqrs.Store, run_worker: Callable[..., Awaitable[pgqrs.Worker]]
) -> AsyncIterator[Seeded]:
    """Runs in every state on the test's database (workers stopped after the test)."""
    made = await seed(store, run_worker)
    yield made
    made.release.set()
