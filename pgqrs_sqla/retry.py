"""Retry policies: how long a step that raised ``TransientError`` waits, and how often."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta

from .errors import ValidationError, duration_seconds


@dataclass(frozen=True)
class RetryPolicy:
    """How a step that raised ``TransientError`` is retried.

    Delay for attempt *n* (1-based) is ``min(cap, base * 2**(n-1))``, with full jitter
    (a random value between half and all of it) unless ``jitter=False``.
    """

    max_attempts: int = 5
    #: seconds (a ``timedelta`` is accepted and stored as its seconds)
    base: float | timedelta = 1.0
    #: seconds (a ``timedelta`` is accepted and stored as its seconds)
    cap: float | timedelta = 300.0
    jitter: bool = True

    def __post_init__(self) -> None:
        if (
            not isinstance(self.max_attempts, int)
            or isinstance(self.max_attempts, bool)
            or self.max_attempts < 1
        ):
            raise ValidationError(
                f"invalid retry policy {self!r}: max_attempts must be an int >= 1",
                option="max_attempts",
                value=self.max_attempts,
            )
        # Stored as seconds, whatever the caller passed (frozen: set through object).
        object.__setattr__(self, "base", duration_seconds(self.base, "RetryPolicy base"))
        object.__setattr__(self, "cap", duration_seconds(self.cap, "RetryPolicy cap"))

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt`` + 1, after ``attempt`` failed."""
        base, cap = _seconds(self.base), _seconds(self.cap)
        # Past 2**64 the doubling has long passed any cap (at most ten years): stop there
        # rather than overflow a float.
        raw = min(cap, base * 2.0 ** min(64, max(0, attempt - 1)))
        return raw * random.uniform(0.5, 1.0) if self.jitter else raw


def _seconds(value: float | timedelta) -> float:
    """A policy's duration in seconds (``__post_init__`` already stored seconds)."""
    return value.total_seconds() if isinstance(value, timedelta) else float(value)
