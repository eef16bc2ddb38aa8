"""Hook points for an observer of triggers, claims, deliveries and steps (tracing, metrics).

The core never imports a tracing library: it calls these hooks, and
:mod:`pgqrs_sqla.contrib.otel` installs an :class:`Observer` that turns them into
OpenTelemetry spans and metrics. None is installed by default, and every call site is
guarded by ``if _observe.observer is not None``: without one, a hook costs one module
attribute read.

Every method of the base classes does nothing, so an observer overrides only what it wants.
What a hook is handed is plain values (ids, names, counts, the delivery's
:class:`~pgqrs_sqla._outcome.Outcome`), never a database object.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from ._outcome import Outcome


class Observation:
    """Something observed while it happens (a trigger, a delivery, a step); ended once.

    A context manager too: ``with observer.step(...):`` ends it, with the exception that
    left the block, if any.
    """

    def failed(self, error: BaseException) -> None:
        """What happened raised ``error`` (recorded before :meth:`end`)."""

    def end(self) -> None:
        """It is over."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if error is not None:
            self.failed(error)
        self.end()


class TriggerObservation(Observation):
    """One trigger: the trace context it hands its run, and the run it wrote."""

    def carrier(self) -> str | None:
        """The trigger's context as a string stored with the run (W3C ``traceparent``...)."""
        return None

    def wrote(self, run_id: int) -> None:
        """The trigger wrote (or, by its idempotency key, found) run ``run_id``."""


@dataclass(frozen=True)
class DeliveryFacts:
    """What an observer is told of a run's delivery as it starts."""

    run_id: int
    workflow: str
    queue: str
    #: which delivery of the run this is (1 for the first)
    attempt: int
    #: what the trigger's observer stored with the run (:meth:`TriggerObservation.carrier`)
    trace_context: str | None
    parent_run_id: int | None = None


class DeliveryObservation(Observation):
    """One delivery of one run, from its start to its recorded outcome."""

    def outcome(self, outcome: Outcome, *, ended: bool) -> None:
        """How the delivery ended (recorded, or not, by the time this is called).

        ``ended``: the run ended with this delivery (SUCCESS, ERROR, CANCELLED, or dead).
        """


class Observer:
    """Told of what the worker and the triggers do; every method a no-op.

    Install one with :func:`install`. The hooks run on the event loop of the worker (or the
    thread of a sync trigger): they must be quick and must not block.
    """

    #: seconds between the worker's refreshes of :meth:`queue_depths` (its heartbeat reads
    #: the ready messages of its queues at most this often); None: never
    depth_interval: float | None = None

    def trigger(self, workflow: str) -> TriggerObservation:
        """A trigger of ``workflow`` begins (in the caller's context: its current span)."""
        return TriggerObservation()

    def claimed(self, queue: str, seconds: float, count: int) -> None:
        """A claim on ``queue`` took ``seconds`` and brought ``count`` messages."""

    def delivery(self, facts: DeliveryFacts) -> DeliveryObservation:
        """A run's delivery begins, in the task that runs it (its handler runs in it)."""
        return DeliveryObservation()

    def step(self, run_id: int, workflow: str, step: str, attempt: int) -> Observation:
        """Step ``step``'s body runs (attempt ``attempt``), in the delivery's task, until ended."""
        return Observation()

    def step_replayed(self, run_id: int, workflow: str, step: str, attempt: int) -> None:
        """Step ``step`` was not run: its recorded value was returned (a redelivery's replay)."""

    def queue_depths(self, depths: Mapping[str, tuple[int, float | None]]) -> None:
        """Each queue's ready messages and the age in seconds of the oldest one (None: none).

        Called from the heartbeat of a worker serving them, at most every
        :attr:`depth_interval` seconds.
        """


#: the installed observer; None (the default): nothing is observed
observer: Observer | None = None


def install(new: Observer | None) -> Observer | None:
    """Make ``new`` the observer (None: none); returns the one it replaces."""
    global observer
    old, observer = observer, new
    return old
