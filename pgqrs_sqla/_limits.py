"""Concurrency and rate limits as the API takes them: checked, and turned into queue columns.

Pure: no I/O. ``create_workflow``/``create_queue`` call :func:`limit_columns`; the claim that
enforces them is :mod:`pgqrs_sqla._limited_claim`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final, Literal

from .errors import InvalidLimit, duration_seconds


class Unlimited(enum.Enum):
    """The type of :data:`UNLIMITED`."""

    UNLIMITED = "UNLIMITED"

    def __repr__(self) -> str:
        return "UNLIMITED"


#: Pass it as a limit (``create_workflow(name, concurrency=UNLIMITED)``) to remove it.
#: ``None``, the default, leaves a limit as it is.
UNLIMITED: Final = Unlimited.UNLIMITED

#: A limit option: an int >= 1 sets it, ``UNLIMITED`` removes it, ``None`` leaves it.
Limit = int | Literal[Unlimited.UNLIMITED] | None
#: ``rate_limit=``: ``(starts, period)`` (period in seconds or a ``timedelta``), or as above.
RateLimitOption = tuple[int, float | timedelta] | Literal[Unlimited.UNLIMITED] | None

#: the most a limit may be: a 32-bit column, and far above any worker fleet's concurrency
MAX_LIMIT = 1_000_000


@dataclass(frozen=True)
class Limits:
    """A queue's (or workflow's) limits as stored; None: no such limit."""

    #: at most this many of its messages (runs) leased at once, across every worker
    concurrency: int | None = None
    #: at most this many leased at once per ``concurrency_key``
    key_concurrency: int | None = None
    #: at most ``rate_limit`` claims per window of ``rate_period`` seconds
    rate_limit: int | None = None
    rate_period: float | None = None

    @property
    def any(self) -> bool:
        """Whether any limit is set (a worker then claims through the limited claim)."""
        return (self.concurrency, self.key_concurrency, self.rate_limit) != (None, None, None)

    @classmethod
    def of(cls, row: Any) -> Limits:
        """The limits of a ``pgqrs_queues`` row (or a row with its limit columns)."""
        return cls(row.concurrency, row.key_concurrency, row.rate_limit, row.rate_period)


def _count(value: object, option: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_LIMIT:
        raise InvalidLimit(
            f"{option} must be an int from 1 to {MAX_LIMIT}, got {value!r}; pass "
            f"{option}=UNLIMITED to remove the limit, or leave it out (None) to keep it",
            option=option,
            value=value,
        )
    return value


def limit_columns(
    *, concurrency: object = None, key_concurrency: object = None, rate_limit: object = None
) -> dict[str, Any]:
    """The ``pgqrs_queues`` columns the options given set (or clear), checked.

    Options left as None are not in the result. ``InvalidLimit`` (or ``DurationError`` for
    the rate's period) for a bad value, before anything is written.
    """
    columns: dict[str, Any] = {}
    for option, value in (("concurrency", concurrency), ("key_concurrency", key_concurrency)):
        if value is UNLIMITED:
            columns[option] = None
        elif value is not None:
            columns[option] = _count(value, option)
    if rate_limit is UNLIMITED:
        columns.update(rate_limit=None, rate_period=None, rate_window_start=None)
    elif rate_limit is not None:
        if not isinstance(rate_limit, tuple) or len(rate_limit) != 2:
            raise InvalidLimit(
                f"rate_limit must be a (starts, period) tuple such as (10, 60) or "
                f"(10, timedelta(minutes=1)), got {rate_limit!r}",
                option="rate_limit",
                value=rate_limit,
            )
        starts, period = rate_limit
        columns.update(
            rate_limit=_count(starts, "rate_limit"),
            rate_period=duration_seconds(period, "rate_limit period", positive=True),
            rate_window_start=None,  # a new limit starts a new window
            rate_window_count=0,
        )
    return columns
