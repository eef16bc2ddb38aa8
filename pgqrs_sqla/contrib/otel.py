"""OpenTelemetry traces and metrics of triggers, claims, deliveries and steps.

``pgqrs_sqla.contrib.otel.instrument()`` turns them on (it needs the ``otel`` extra:
``pip install 'pgqrs-sqla[otel]'``). They go through the host's ``TracerProvider`` and
``MeterProvider`` (the global ones, unless others are passed in): this module never installs
a provider or an exporter. Without ``instrument()`` nothing of OpenTelemetry is imported by
``pgqrs_sqla``, and no trace context is stored.

Spans:

- ``trigger {workflow}`` (PRODUCER), a child of the span current where the run is
  triggered (the request's). Its W3C trace context (``traceparent``, and ``tracestate``
  if any) is stored with the run, in ``pgqrs_workflow_runs.trace_context``.
- ``claim {queue}`` (CLIENT), for each claim that brought messages; a delivery links to it.
- ``run {workflow}`` (CONSUMER), one per delivery of a run, a child of the trigger's
  stored context: in the same trace as the request, whichever process runs it. A wait
  (``sleep``, ``event``, ``run``, ``child``...), a pause, a retry and a lost lease are its
  events; a failure is its status ERROR, with the exception recorded.
- ``step {name}``, one per step, a child of its delivery's span. A step a redelivery
  replays from its record is a zero-length span with ``pgqrs.step.replayed`` true.

Metrics: ``pgqrs.triggers``, ``pgqrs.runs.started`` (first deliveries),
``pgqrs.runs.finished`` (by ``pgqrs.status``), ``pgqrs.leases.lost``, the histograms
``pgqrs.step.duration`` and ``pgqrs.claim.duration`` (seconds), and the observable gauges
``pgqrs.queue.depth`` (ready messages) and ``pgqrs.queue.oldest_ready_age`` (seconds), which
read what each worker's heartbeat last read of its queues (every ``depth_interval`` seconds):
the collection thread never queries the database.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

try:
    from opentelemetry import context as otel_context, metrics, trace
    from opentelemetry.metrics import CallbackOptions, Observation as Measurement
    from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError as missing:  # the extra is not installed
    raise ImportError(
        "pgqrs_sqla.contrib.otel needs OpenTelemetry's API: pip install 'pgqrs-sqla[otel]'"
    ) from missing

from .. import _observe
from .._outcome import Outcome, OutcomeKind
from .._signals import (
    Pause,
    _LeaseLostSignal,
    _RetryLater,
    _RunCancelledSignal,
    _StepExhausted,
    _StepPaused,
    _Waiting,
)
from ..errors import LeaseLost, duration_seconds
from ..models import RunStatus

__all__ = ["instrument", "instrumented", "uninstrument"]

#: the instrumentation scope's name (``InstrumentationScope``)
SCOPE = "pgqrs_sqla"
#: the trace context column's size: a longer ``tracestate`` is left out
_MAX_CARRIER = 512
_W3C = TraceContextTextMapPropagator()
#: the last claim span of this task (the worker's poll loop): its deliveries link to it
_last_claim: contextvars.ContextVar[SpanContext | None] = contextvars.ContextVar(
    "pgqrs_otel_last_claim", default=None
)
#: the run's status as each ending outcome leaves it
_ENDED_AS = {
    OutcomeKind.SUCCEEDED: RunStatus.SUCCESS.value,
    OutcomeKind.FAILED: RunStatus.ERROR.value,
    OutcomeKind.EXHAUSTED: RunStatus.ERROR.value,
    OutcomeKind.CANCELLED: RunStatus.CANCELLED.value,
    OutcomeKind.UNRECORDABLE: RunStatus.ERROR.value,  # dead-lettered
}


def _messaging(operation: str, destination: str) -> dict[str, Any]:
    return {
        "messaging.system": "pgqrs",
        "messaging.operation.type": operation,
        "messaging.destination.name": destination,
    }


def carrier_of(span: trace.Span) -> str | None:
    """``span``'s W3C context as stored with a run: ``traceparent``, a newline, ``tracestate``.

    None for a span that is not recording a valid context.
    """
    fields: dict[str, str] = {}
    _W3C.inject(fields, context=trace.set_span_in_context(span))
    parent = fields.get("traceparent")
    if parent is None:
        return None
    state = fields.get("tracestate")
    if state and len(parent) + 1 + len(state) <= _MAX_CARRIER:
        return f"{parent}\n{state}"
    return parent


def context_of(carrier: str | None) -> otel_context.Context:
    """The context a run's stored ``carrier`` names (a new root context for None)."""
    if not carrier:
        return otel_context.Context()
    parent, _, state = carrier.partition("\n")
    fields = {"traceparent": parent}
    if state:
        fields["tracestate"] = state
    return _W3C.extract(fields, context=otel_context.Context())


class _Current(_observe.Observation):
    """A span made the current one from its start until it ends (in the same context)."""

    def __init__(self, span: trace.Span) -> None:
        self.span = span
        self._token = otel_context.attach(trace.set_span_in_context(span))

    def failed(self, error: BaseException) -> None:
        _error(self.span, error)

    def end(self) -> None:
        otel_context.detach(self._token)
        self.span.end()


def _error(span: trace.Span, error: BaseException) -> None:
    """Record ``error`` on ``span`` with status ERROR (a signal: the exception it carries)."""
    cause = error.__cause__ if not isinstance(error, Exception) else error
    if cause is None:
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        return
    span.record_exception(cause)
    span.set_status(Status(StatusCode.ERROR, f"{type(cause).__name__}: {cause}"))


class _TriggerSpan(_Current, _observe.TriggerObservation):
    def __init__(self, observer: OtelObserver, workflow: str) -> None:
        self.observer, self.workflow = observer, workflow
        attributes = {**_messaging("send", workflow), "pgqrs.workflow": workflow}
        span = observer.tracer.start_span(
            f"trigger {workflow}", kind=SpanKind.PRODUCER, attributes=attributes
        )
        super().__init__(span)

    def carrier(self) -> str | None:
        return carrier_of(self.span)

    def wrote(self, run_id: int) -> None:
        self.span.set_attribute("pgqrs.run_id", run_id)
        self.span.set_attribute("messaging.message.conversation_id", str(run_id))
        self.observer.triggers.add(1, {"pgqrs.workflow": self.workflow})


class _DeliverySpan(_Current, _observe.DeliveryObservation):
    def __init__(self, observer: OtelObserver, facts: _observe.DeliveryFacts) -> None:
        self.observer, self.facts = observer, facts
        attributes: dict[str, Any] = {
            **_messaging("process", facts.queue),
            "pgqrs.run_id": facts.run_id,
            "pgqrs.workflow": facts.workflow,
            "pgqrs.attempt": facts.attempt,
            "messaging.message.conversation_id": str(facts.run_id),
        }
        if facts.parent_run_id is not None:
            attributes["pgqrs.parent_run_id"] = facts.parent_run_id
        claim = _last_claim.get()
        span = observer.tracer.start_span(
            f"run {facts.workflow}",
            context=context_of(facts.trace_context),
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            links=[Link(claim)] if claim is not None else None,
        )
        super().__init__(span)
        if facts.attempt == 1:
            observer.runs_started.add(1, {"pgqrs.workflow": facts.workflow})

    def outcome(self, outcome: Outcome, *, ended: bool) -> None:
        span, kind, error = self.span, outcome.kind, outcome.error
        span.set_attribute("pgqrs.outcome", kind.value)
        if isinstance(error, _RetryLater):
            span.add_event(
                "retry",
                {
                    "pgqrs.step": error.step,
                    "pgqrs.attempt": error.attempts,
                    "pgqrs.delay": error.delay,
                },
            )
        elif isinstance(error, _Waiting):
            span.add_event(
                "wait",
                {
                    "pgqrs.step": error.step,
                    "pgqrs.wait.kind": error.kind,
                    "pgqrs.wait.seconds": error.seconds,
                },
            )
        elif isinstance(error, _StepPaused | Pause):
            pause: dict[str, Any] = {"pgqrs.wait.seconds": error.seconds}
            if isinstance(error, _StepPaused) and error.step is not None:
                pause["pgqrs.step"] = error.step
            span.add_event("pause", pause)
        elif kind is OutcomeKind.LEASE_LOST:
            span.add_event("lease lost")
            self.observer.leases_lost.add(1, {"pgqrs.workflow": self.facts.workflow})
        elif kind is OutcomeKind.CANCELLED:
            span.add_event("cancelled")
        elif kind is OutcomeKind.EXHAUSTED and isinstance(error, _StepExhausted):
            span.set_status(Status(StatusCode.ERROR, f"step {error.step} out of attempts"))
        elif kind in (OutcomeKind.FAILED, OutcomeKind.UNRECORDABLE) and error is not None:
            _error(span, error)
        if ended:
            status = _ENDED_AS.get(kind, RunStatus.ERROR.value)
            span.set_attribute("pgqrs.status", status)
            self.observer.runs_finished.add(
                1, {"pgqrs.workflow": self.facts.workflow, "pgqrs.status": status}
            )


class _StepSpan(_Current):
    def __init__(
        self, observer: OtelObserver, run_id: int, workflow: str, step: str, attempt: int
    ) -> None:
        self.observer, self.workflow, self.step = observer, workflow, step
        self.ok = True
        self.began = time.monotonic()
        span = observer.tracer.start_span(
            f"step {step}", attributes=_step_attributes(run_id, workflow, step, attempt, False)
        )
        super().__init__(span)

    def failed(self, error: BaseException) -> None:
        if isinstance(error, _StepPaused):
            self.span.add_event("pause", {"pgqrs.wait.seconds": error.seconds})
            return
        self.ok = False
        if isinstance(error, _LeaseLostSignal | LeaseLost):
            self.span.add_event("lease lost")  # not the step's fault: no ERROR status
        elif isinstance(error, _RunCancelledSignal):
            self.span.add_event("cancelled")
        else:
            _error(self.span, error)

    def end(self) -> None:
        seconds = time.monotonic() - self.began
        attributes: dict[str, Any] = {
            "pgqrs.workflow": self.workflow,
            "pgqrs.step": self.step,
            "pgqrs.ok": self.ok,
        }
        self.observer.step_duration.record(seconds, attributes)
        super().end()


def _step_attributes(
    run_id: int, workflow: str, step: str, attempt: int, replayed: bool
) -> dict[str, Any]:
    return {
        "pgqrs.run_id": run_id,
        "pgqrs.workflow": workflow,
        "pgqrs.step": step,
        "pgqrs.attempt": attempt,
        "pgqrs.step.replayed": replayed,
    }


class OtelObserver(_observe.Observer):
    """The :class:`~pgqrs_sqla._observe.Observer` that :func:`instrument` installs."""

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        depth_interval: float | None = 15.0,
    ) -> None:
        from .. import __version__

        self.tracer = trace.get_tracer(SCOPE, __version__, tracer_provider)
        meter = metrics.get_meter(SCOPE, __version__, meter_provider)
        self.depth_interval = depth_interval
        self.triggers = meter.create_counter(
            "pgqrs.triggers", unit="{run}", description="Runs triggered (or found by their key)"
        )
        self.runs_started = meter.create_counter(
            "pgqrs.runs.started", unit="{run}", description="Runs whose first delivery began"
        )
        self.runs_finished = meter.create_counter(
            "pgqrs.runs.finished", unit="{run}", description="Runs ended, by pgqrs.status"
        )
        self.leases_lost = meter.create_counter(
            "pgqrs.leases.lost", unit="{delivery}", description="Deliveries whose lease was lost"
        )
        self.step_duration = meter.create_histogram(
            "pgqrs.step.duration", unit="s", description="Step bodies, recorded or failed"
        )
        self.claim_duration = meter.create_histogram(
            "pgqrs.claim.duration", unit="s", description="A worker's claims, by queue"
        )
        meter.create_observable_gauge(
            "pgqrs.queue.depth",
            [_observe_depth],
            unit="{message}",
            description="Ready messages per queue, as a worker's heartbeat last read them",
        )
        meter.create_observable_gauge(
            "pgqrs.queue.oldest_ready_age",
            [_observe_age],
            unit="s",
            description="How long the oldest ready message of each queue has waited",
        )

    # ------------------------------------------------------------ hooks

    def trigger(self, workflow: str) -> _observe.TriggerObservation:
        return _TriggerSpan(self, workflow)

    def claimed(self, queue: str, seconds: float, count: int) -> None:
        self.claim_duration.record(seconds, {"messaging.destination.name": queue})
        if count == 0:
            return  # an empty poll: measured, not traced
        ended = time.time_ns()
        span = self.tracer.start_span(
            f"claim {queue}",
            context=otel_context.Context(),
            kind=SpanKind.CLIENT,
            attributes={**_messaging("receive", queue), "messaging.batch.message_count": count},
            start_time=ended - int(seconds * 1e9),
        )
        span.end(end_time=ended)
        _last_claim.set(span.get_span_context())

    def delivery(self, facts: _observe.DeliveryFacts) -> _observe.DeliveryObservation:
        return _DeliverySpan(self, facts)

    def step(self, run_id: int, workflow: str, step: str, attempt: int) -> _observe.Observation:
        return _StepSpan(self, run_id, workflow, step, attempt)

    def step_replayed(self, run_id: int, workflow: str, step: str, attempt: int) -> None:
        now = time.time_ns()
        span = self.tracer.start_span(
            f"step {step}",
            attributes=_step_attributes(run_id, workflow, step, attempt, True),
            start_time=now,
        )
        span.end(end_time=now)

    def queue_depths(self, depths: Mapping[str, tuple[int, float | None]]) -> None:
        global _depths
        _depths = {**_depths, **depths}  # one reference swap: the gauges read it in another thread


# The gauges' state is the module's, not an observer's: a meter hands back the instrument
# first made under a name (with its first callback), so after uninstrument() and
# instrument() again the gauges still read the current observer's snapshot.
_depths: dict[str, tuple[int, float | None]] = {}


def _observe_depth(_options: CallbackOptions) -> Iterable[Measurement]:
    return [
        Measurement(ready, {"messaging.destination.name": queue})
        for queue, (ready, _age) in _depths.items()
    ]


def _observe_age(_options: CallbackOptions) -> Iterable[Measurement]:
    return [
        Measurement(age or 0.0, {"messaging.destination.name": queue})
        for queue, (_ready, age) in _depths.items()
    ]


def instrument(
    *,
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: metrics.MeterProvider | None = None,
    depth_interval: float | timedelta | None = 15.0,
) -> OtelObserver:
    """Emit spans and metrics for the triggers and workers of this process; idempotent.

    Through the global ``TracerProvider`` and ``MeterProvider`` (set them up as your app
    does, before or after this call), or the ones passed in. ``depth_interval``: how often,
    in seconds, each worker's heartbeat reads its queues' depths for the gauges (None:
    never; the gauges then report nothing). Returns the installed observer; a second call
    returns the first one's.
    """
    current = _observe.observer
    if isinstance(current, OtelObserver):
        return current
    interval = None
    if depth_interval is not None:
        interval = duration_seconds(depth_interval, "depth_interval", positive=True)
    observer = OtelObserver(tracer_provider, meter_provider, interval)
    _observe.install(observer)
    return observer


def uninstrument() -> None:
    """Stop emitting: the observer :func:`instrument` installed is removed (for tests)."""
    global _depths
    if isinstance(_observe.observer, OtelObserver):
        _observe.install(None)
        _depths = {}


def instrumented() -> bool:
    """Whether :func:`instrument` is in effect."""
    return isinstance(_observe.observer, OtelObserver)
