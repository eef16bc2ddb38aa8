"""Messages as a worker sees them, and the checks of what goes into a message operation.

The checks cover names, priorities, delays and lease lengths. Values only;
:mod:`pgqrs_sqla.queue` builds the statements.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Row

from .dialects import aware
from .errors import InvalidName, ValidationError, duration_seconds

#: the columns an enqueue and a trigger write into ``pgqrs_messages``, in their sources' order
MESSAGE_INSERT_COLUMNS = [
    "queue_id",
    "payload",
    "priority",
    "enqueued_at",
    "vt",
    "read_ct",
    "failed_ct",
]

NOTIFY_CHANNEL = "pgqrs_wake"
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,127}$")


def validate_name(name: object, what: str = "queue") -> str:
    """Names: 1-128 characters, a letter first, then letters, digits, ``_ . -``."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InvalidName(
            f"invalid {what} name {name!r}: use 1-128 characters, starting with a letter, "
            "then letters, digits, '_', '.' or '-'",
            name=name,
        )
    return name


@dataclass(frozen=True)
class Message:
    """A message as a worker sees it. ``read_ct`` is the lease token."""

    id: int
    queue_id: int
    payload: Any
    priority: int
    enqueued_at: datetime
    vt: datetime
    read_ct: int
    failed_ct: int
    worker_id: int | None
    archived_at: datetime | None = None
    archive_reason: str | None = None
    last_error: str | None = None

    @classmethod
    def from_row(cls, row: Row[Any]) -> Message:
        m = row._mapping
        return cls(
            id=m["id"],
            queue_id=m["queue_id"],
            payload=m["payload"],
            priority=m["priority"],
            enqueued_at=aware(m["enqueued_at"]),  # type: ignore[arg-type]
            vt=aware(m["vt"]),  # type: ignore[arg-type]
            read_ct=m["read_ct"],
            failed_ct=m["failed_ct"],
            worker_id=m["consumer_worker_id"],
            archived_at=aware(m["archived_at"]),
            archive_reason=m["archive_reason"],
            last_error=m["last_error"],
        )


#: The range of a priority: the column is a 32-bit integer on both backends.
PRIORITY_MIN, PRIORITY_MAX = -(2**31), 2**31 - 1


def check_priority(priority: object) -> int:
    """``priority`` if it is an int the priority column can hold; else a ValidationError."""
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise ValidationError(
            f"priority must be an int, got {priority!r}", option="priority", value=priority
        )
    if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise ValidationError(
            f"priority {priority} is outside the 32-bit range {PRIORITY_MIN}..{PRIORITY_MAX}; "
            "use a smaller number (higher runs first)",
            option="priority",
            value=priority,
        )
    return priority


def check_max_deliveries(max_deliveries: object) -> int:
    """``max_deliveries`` (of a queue or a workflow) if it is an int from 1 to 2**31 - 1.

    Else a ValidationError: the column is a 32-bit integer on both backends.
    """
    if (
        not isinstance(max_deliveries, int)
        or isinstance(max_deliveries, bool)
        or not 1 <= max_deliveries <= 2**31 - 1
    ):
        raise ValidationError(
            f"max_deliveries must be a positive int of at most 32 bits, got {max_deliveries!r}",
            option="max_deliveries",
            value=max_deliveries,
        )
    return max_deliveries


def seconds(value: float | timedelta | None, what: str = "delay") -> float:
    """A delay: ``None`` is none; otherwise finite seconds >= 0, at most the duration cap."""
    return 0.0 if value is None else duration_seconds(value, what)


def lease_seconds(value: object, what: str) -> float:
    """A lease's length: a finite number of seconds (or a ``timedelta``) above zero.

    Zero or less would end the lease at once (or in the past), handing the message to the
    next claim while its holder still believes it owns it.
    """
    return duration_seconds(value, what, positive=True)
