"""The one polling helper of the suite, async and sync.

Poll only for state that changes somewhere nothing can be awaited: another process, another
thread's counters, the database. Inside one event loop, await an event instead.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

if TYPE_CHECKING:
    import pgqrs_sqla as pgqrs

T = TypeVar("T")

#: The default deadline: generous, so a loaded machine does not fail a test; a test that
#: passes never waits it out.
TIMEOUT = 30.0


def _failed(timeout: float, what: str, last: object) -> AssertionError:
    detail = f": {what}" if what else ""
    return AssertionError(f"condition not met within {timeout:g}s{detail} (last value {last!r})")


async def eventually(
    predicate: Callable[[], Awaitable[T] | T],
    *,
    timeout: float = TIMEOUT,
    interval: float = 0.02,
    what: str = "",
) -> T:
    """Call ``predicate`` (sync or async) until it returns something truthy, and return that;
    fail with ``AssertionError`` after ``timeout`` seconds. ``interval=0`` only yields."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise _failed(timeout, what, value)
        await asyncio.sleep(interval)


def eventually_sync(
    predicate: Callable[[], T],
    *,
    timeout: float = TIMEOUT,
    interval: float = 0.05,
    what: str = "",
) -> T:
    """:func:`eventually` for sync code (a process or a server we cannot await)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise _failed(timeout, what, value)
        time.sleep(interval)  # another process's state: nothing to await


def alive(proc: Any) -> None:
    """Fail at once (rather than at the deadline) when the process we wait on has exited:
    call it inside a predicate. Works for ``subprocess.Popen`` and asyncio processes."""
    code = proc.poll() if hasattr(proc, "poll") else proc.returncode
    if code is not None:
        raise AssertionError(f"the process exited (status {code}) while we waited on it")


async def until_a_session_waits_on_a_lock(store: pgqrs.Store, timeout: float = TIMEOUT) -> None:
    """PostgreSQL: return once some session of this database is blocked on a lock."""
    from sqlalchemy import text

    query = text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )

    async def waiting() -> int:
        async with store._read() as conn:
            return int((await conn.execute(query)).scalar_one())

    await eventually(waiting, timeout=timeout, interval=0.01, what="a session blocked on a lock")


async def failed_run(store: pgqrs.Store, run_id: int, timeout: float = TIMEOUT) -> pgqrs.RunInfo:
    """Wait for run ``run_id`` to end failed (``wait_for_run`` raises ``RunFailed``); the run."""
    import pgqrs_sqla as pgqrs

    with pytest.raises(pgqrs.RunFailed):
        await store.wait_for_run(run_id, timeout=timeout)
    return await store.get_run(run_id)
