"""A worker's wake-ups: the LISTEN connection kept up on PostgreSQL, polling otherwise.

:class:`Wakeups` holds the listener task of one worker; on a notification for one of its
queues it calls ``wake`` (the poll loop claims at once), on a cancellation ``on_cancel``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from . import queue as q
from ._db import HUB, translate
from ._listen import Listener, ListenUnavailable
from ._logging import get_logger
from ._schedules import SCHEDULES_CHANNEL, SCHEDULES_NOTIFY_CHANNEL
from .runs import CANCEL_CHANNEL
from .store import Store

log = get_logger("pgqrs_sqla.worker")


def _listen_backoff(failures: int) -> float:
    """Seconds before the listener's next attempt: exponential up to 30 s, with jitter.

    The jitter keeps many workers from reconnecting in step.
    """
    return min(30.0, 0.25 * 2.0 ** (failures - 1)) * random.uniform(0.5, 1.5)


class Wakeups:
    """How the worker ``name`` serving ``queues`` hears of new work: LISTEN, or polling.

    LISTEN when ``listen`` and the backend has it, polling every ``poll_interval`` seconds
    otherwise (and always as the fallback). It stops when ``stopping`` is set.
    """

    def __init__(
        self,
        store: Store,
        name: str,
        queues: list[str],
        *,
        listen: bool,
        poll_interval: float,
        stopping: asyncio.Event,
        wake: Callable[[], None],
        on_cancel: Callable[[str], None],
    ) -> None:
        self.store = store
        self.name = name
        self.queues = queues
        self.listen = listen
        self.poll_interval = poll_interval
        self.stopping = stopping
        self.wake = wake
        self.on_cancel = on_cancel
        #: the LISTEN connection while it is up
        self.conn: Listener | None = None
        self.task: asyncio.Task[None] | None = None
        #: failed attempts to (re)open the LISTEN connection, in all
        self.failures = 0
        self._said = False

    @property
    def wanted(self) -> bool:
        """Whether this worker listens at all (``listen`` and a backend with LISTEN)."""
        return self.listen and self.store.dialect.supports_listen

    async def start(self) -> None:
        """Start the wake-up path and say which it is (INFO; WARNING when LISTEN cannot work).

        On PostgreSQL a task of its own keeps a LISTEN connection up (:meth:`_loop`);
        this returns once its first attempt is over, so a NOTIFY sent after the worker has
        started is heard. Once per run: a second call (the heartbeat's) does nothing.
        """
        if self.task is not None:
            return
        if not self.wanted:
            why = (
                "listen=False"
                if self.store.dialect.supports_listen
                else "SQLite has no LISTEN; enqueues in this process wake it at once"
            )
            log.info(
                "worker %s: wake-ups: polling every %gs (%s)", self.name, self.poll_interval, why
            )
            return
        self._said = False
        first: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.task = asyncio.create_task(self._loop(first), name=f"pgqrs-listen-{self.name}")
        await asyncio.wait([first, self.task], return_when=asyncio.FIRST_COMPLETED)

    async def restart_if_down(self) -> None:
        """The heartbeat's check: a listener that ended (it gave up) is started again."""
        if self.conn is None and self.wanted:
            await self.start()

    async def stop(self) -> None:
        """End the listener task; its own cleanup closes the LISTEN connection."""
        if self.task is not None:
            task, self.task = self.task, None
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

    async def _loop(self, first: asyncio.Future[None]) -> None:
        """Keep a LISTEN connection up, polling meanwhile when it is down.

        On a failure or a lost connection: WARNING once per episode, poll meanwhile, reconnect with
        jittered exponential backoff, INFO when it is back (and claim at once: what was notified
        meanwhile went unheard). Ends, leaving the worker to poll, when LISTEN cannot work here (a
        transaction pooler).
        """
        failures = 0
        listener: Listener | None = None
        try:
            while not self.stopping.is_set():
                try:
                    pooled = await self.store._behind_pooler()
                    if pooled and not first.done():
                        # Its test NOTIFY takes a while to give up on: poll meanwhile.
                        first.set_result(None)
                    listener = await self.store.dialect.open_listener(
                        self.store.engine,
                        [q.NOTIFY_CHANNEL, CANCEL_CHANNEL, SCHEDULES_NOTIFY_CHANNEL],
                        self._on_notification,
                        pooled=pooled,
                        notify=self._notify,
                    )
                except ListenUnavailable as why:
                    log.warning(
                        "worker %s: wake-ups: polling every %gs, because LISTEN cannot work "
                        "here: %s",
                        self.name,
                        self.poll_interval,
                        why,
                    )
                    return
                except Exception as error:  # driver errors too: this task must survive them
                    failures += 1
                    self.failures += 1
                    if failures == 1:
                        log.warning(
                            "worker %s: LISTEN connection failed (%s); polling every %gs "
                            "meanwhile, reconnecting",
                            self.name,
                            translate(error, "LISTEN"),
                            self.poll_interval,
                        )
                    if not first.done():
                        first.set_result(None)
                    await self._sleep(_listen_backoff(failures))
                    continue
                self.conn = listener
                if failures:
                    log.info(
                        "worker %s: LISTEN connection back (via %s); wake-ups resumed",
                        self.name,
                        listener.driver,
                    )
                    self.wake()
                elif not self._said:
                    self._said = True
                    log.info(
                        "worker %s: wake-ups: LISTEN via %s, polling every %gs as a fallback",
                        self.name,
                        listener.driver,
                        self.poll_interval,
                    )
                failures = 0
                if not first.done():
                    first.set_result(None)
                stop: asyncio.Future[Any] = asyncio.ensure_future(self.stopping.wait())
                lost: asyncio.Future[Any] = listener.lost
                try:
                    await asyncio.wait([lost, stop], return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stop.cancel()
                if self.stopping.is_set():
                    return
                self._lost()
                await listener.close()
                listener = None
                failures = 1
                await self._sleep(_listen_backoff(failures))
        finally:
            self.conn = None
            if not first.done():
                first.set_result(None)
            if listener is not None:
                await listener.close()

    def _on_notification(self, channel: str, payload: str) -> None:
        if channel == CANCEL_CHANNEL:
            self.on_cancel(payload)
        elif channel == SCHEDULES_NOTIFY_CHANNEL:
            HUB.notify(self.store.db_key, SCHEDULES_CHANNEL)
        elif payload in self.queues:
            self.wake()

    async def _notify(self, channel: str, payload: str) -> None:
        """NOTIFY from a connection other than the listener's (its test notification)."""
        async with self.store._autocommit() as conn:
            notify = self.store.dialect.notify(channel, payload)
            if notify is not None:
                await conn.execute(select(notify))

    def _lost(self) -> None:
        log.warning(
            "worker %s: LISTEN connection lost; polling every %gs until it is back",
            self.name,
            self.poll_interval,
        )
        self.conn = None
