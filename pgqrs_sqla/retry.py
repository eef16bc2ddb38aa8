"""Retry policies: how long a step that raised ``TransientError`` waits, and how often."""

from __future__ import annotations

import random
from dataclasses import dataclass

from .errors import ValidationError, duration_seconds


@dataclass(frozen=True)
class RetryPolicy:
    """How a step that raised ``TransientError`` is retried.

    Delay for attempt *n* (1-based) is ``min(cap, base * 2**(n-1))``, with full jitter
    (a random value between half and all of it) unless ``jitter=False``.
    """

    max_attempts: int = 5
    base: float = 1.0
    cap: float = 300.0
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
        duration_seconds(self.base, "RetryPolicy base")
        duration_seconds(self.cap, "RetryPolicy cap")

    def delay(self, attempt: int) -> float:
        """The delay in seconds for attempt ``attempt`` (1-based), jitter included."""
        raw: float = min(self.cap, self.base * 2 ** max(0, attempt - 1))
        return raw * random.uniform(0.5, 1.0) if self.jitter else raw
