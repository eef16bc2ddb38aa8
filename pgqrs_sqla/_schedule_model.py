"""The schedule table's mixin: ``pgqrs_schedules``, one row per named schedule.

Written by :mod:`pgqrs_sqla._schedules_write` only. A row says when its workflow runs next
(``next_tick_at``); a worker serving the workflow fires the ticks that came due, each a run
whose idempotency key names the tick, in the transaction that moves ``next_tick_at`` on.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    String,
)
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

from ._model_base import _in, _PgqrsTable
from ._schedule_time import CatchUp
from .dialects import BigIntKey, JSONType, utcnow


class ScheduleOrigin(enum.StrEnum):
    """Who defined a schedule: reconciling a worker's declared schedules deletes only ``code``'s."""

    #: ``store.create_schedule`` (or the CLI): never deleted by a worker's reconcile
    API = "api"
    #: declared next to a handler (``registry.schedule``, ``consumer(...).schedule``)
    CODE = "code"


class ScheduleMixin(_PgqrsTable):
    """A named schedule: a workflow triggered on a cron or every N seconds."""

    __pgqrs_suffix__ = "schedules"

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True)
    schedule_name: Mapped[str] = mapped_column(String(128), unique=True)

    @declared_attr
    @classmethod
    def workflow_id(cls) -> Mapped[int]:
        """The workflow each tick triggers (deleting the workflow deletes its schedules)."""
        return mapped_column(BigIntKey, ForeignKey(cls._ref("workflows"), ondelete="CASCADE"))

    #: a cron expression (5 fields, or 6 with seconds last), or NULL for ``every``
    cron: Mapped[str | None] = mapped_column(String(255), nullable=True)
    #: the interval in seconds (ticks at whole multiples of it since the epoch), or NULL
    every: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: the IANA zone the cron is read in
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    catch_up: Mapped[str] = mapped_column(String(8), default=CatchUp.LATEST.value)
    #: each run's params (JSON)
    params: Mapped[Any] = mapped_column(JSONType, nullable=True)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    origin: Mapped[str] = mapped_column(String(8), default=ScheduleOrigin.API.value)
    #: the next tick to fire (UTC); due once the database clock passes it
    next_tick_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    #: the last tick fired, and the run it triggered
    last_tick_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_run_id: Mapped[int | None] = mapped_column(BigIntKey, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow())

    @declared_attr.directive
    @classmethod
    def __table_args__(cls) -> tuple[Any, ...]:
        return cls._args(
            CheckConstraint(
                "(cron IS NULL) <> (every IS NULL)", name=cls._name("schedules_cadence_ck")
            ),
            CheckConstraint(_in("catch_up", CatchUp), name=cls._name("schedules_catch_up_ck")),
            CheckConstraint(_in("origin", ScheduleOrigin), name=cls._name("schedules_origin_ck")),
            Index(cls._name("schedules_due_ix"), "workflow_id", "next_tick_at"),
        )
