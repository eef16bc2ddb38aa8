"""The leases a worker holds, and the lease operations of its by-hand API.

:class:`Leases` runs the fenced message writes (extend, archive, delete, release, fail) for
one worker and remembers the deliveries taken with ``dequeue()`` and not yet given up, so
that shutdown gives back exactly those.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from sqlalchemy import Row

from . import queue as q
from ._core import StoreCore
from ._error_record import storable_text
from ._registration import Registration
from .errors import LeaseLost
from .models import ArchiveReason


class Leases:
    """Lease operations of the worker registered as ``registration`` (its id fences them)."""

    def __init__(self, store: StoreCore, registration: Registration) -> None:
        self.store = store
        self.registration = registration
        #: leases taken with dequeue() and not yet given up: (message id -> token), so that
        #: shutdown gives back exactly these deliveries, not whatever bears this worker's id
        self.held: dict[int, int] = {}

    def took(self, messages: list[q.Message]) -> None:
        """``messages`` were claimed by hand (``dequeue()``): they are ours to give back."""
        self.held.update((msg.id, msg.read_ct) for msg in messages)

    def forget(self, msg: q.Message) -> None:
        """This delivery is no longer a lease of ours (acknowledged, given back, lost)."""
        if self.held.get(msg.id) == msg.read_ct:
            del self.held[msg.id]

    async def fenced(
        self, stmt: Any, msg: q.Message, action: str, *, ends: bool = True
    ) -> Row[Any]:
        """Run a lease-fenced statement; ``ends``: on success the lease is no longer ours."""
        try:
            async with self.store._autocommit() as conn:
                row = await q.fenced(conn, stmt, msg, action)
        except LeaseLost:
            self.forget(msg)
            raise
        if ends:
            self.forget(msg)
        return row

    async def extend(self, msg: q.Message, seconds: float) -> None:
        vt = q.lease_seconds(seconds, "extend() seconds")
        stmt = q.extend_stmt(self.store.tables, msg, self.registration.id, vt)
        await self.fenced(stmt, msg, "extend", ends=False)

    async def archive(self, msg: q.Message) -> None:
        stmt = q.archive_stmt(self.store.tables, msg, self.registration.id)
        await self.fenced(stmt, msg, "archive")

    async def delete(self, msg: q.Message) -> None:
        stmt = q.delete_held_stmt(self.store.tables, msg, self.registration.id)
        await self.fenced(stmt, msg, "delete")

    async def release(self, msg: q.Message, *, delay: float = 0.0) -> None:
        stmt = q.release_stmt(self.store.tables, msg, self.registration.id, q.seconds(delay))
        await self.fenced(stmt, msg, "release")

    async def fail(self, msg: q.Message, error: str | None = None, *, delay: float = 0.0) -> bool:
        text = None if error is None else storable_text(str(error))  # NUL, lone surrogates
        stmt = q.fail_stmt(self.store.tables, msg, self.registration.id, q.seconds(delay), text)
        row = await self.fenced(stmt, msg, "fail")
        return bool(row.archive_reason == ArchiveReason.DEAD.value)

    async def release_quietly(self, msg: q.Message) -> None:
        """Give ``msg`` back, shielded from a cancellation under way; failures are ignored.

        The lease then expires.
        """
        with contextlib.suppress(Exception):
            await asyncio.shield(self.release(msg))
