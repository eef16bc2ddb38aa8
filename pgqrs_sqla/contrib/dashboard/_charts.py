"""The pictures, computed on the server: rectangles for inline SVG (no script, no style).

The throughput chart stacks the runs that ended each minute of the last hour; the timeline
(a Gantt chart) draws each step and wait of a run from its ``started_at`` to its
``finished_at`` (to now while it runs or waits, with a wait's deadline marked).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ._queries import Minute, StepRow

#: the SVG's user units: a label column, then the bars
WIDTH = 1000
LABELS = 220
ROW = 24
CHART_HEIGHT = 120


@dataclass(frozen=True)
class Rect:
    """One rectangle: its box, its CSS class and its tooltip."""

    x: float
    y: float
    width: float
    height: float
    cls: str
    title: str


@dataclass(frozen=True)
class Chart:
    """The last hour's bars, and the scale's top."""

    rects: list[Rect]
    peak: int
    width: int = WIDTH
    height: int = CHART_HEIGHT


def throughput(minutes: list[Minute], *, height: int = CHART_HEIGHT) -> Chart:
    """Stacked bars per minute: successes at the bottom, then errors, then cancellations."""
    peak = max((m.total for m in minutes), default=0)
    rects: list[Rect] = []
    if not minutes:
        return Chart(rects, peak, WIDTH, height)
    slot = WIDTH / len(minutes)
    for i, m in enumerate(minutes):
        base = float(height)
        title = f"{m.label} UTC: {m.success} ok, {m.error} failed, {m.cancelled} cancelled"
        for count, cls in ((m.success, "ok"), (m.error, "err"), (m.cancelled, "cancel")):
            if not count or not peak:
                continue
            h = height * count / peak
            base -= h
            rects.append(
                Rect(
                    round(i * slot + 1, 2),
                    round(base, 2),
                    round(slot - 2, 2),
                    round(h, 2),
                    cls,
                    title,
                )
            )
    return Chart(rects, peak, WIDTH, height)


@dataclass(frozen=True)
class Lane:
    """One step or wait of the timeline."""

    label: str
    y: float
    bar: Rect
    #: the wait's deadline, where it falls inside the picture (x), else None
    wake_x: float | None


@dataclass(frozen=True)
class Timeline:
    """A run's Gantt chart: a lane per record, and the time span it covers."""

    lanes: list[Lane]
    start: datetime
    end: datetime
    height: int
    width: int = WIDTH
    labels: int = LABELS


def _kind(step: StepRow) -> str:
    return step.kind or "step"


def timeline(start: datetime, end: datetime, steps: list[StepRow]) -> Timeline:
    """Lanes for ``steps`` between ``start`` (the run's creation) and ``end`` (its end, or now).

    A record still open (running, or a wait that has not returned) runs to ``end``.
    """
    firsts = [s.started_at for s in steps if s.started_at is not None]
    start = min([start, *firsts])
    lasts = [t for s in steps for t in (s.finished_at, s.started_at) if t is not None]
    end = max([end, *lasts])
    span = max((end - start).total_seconds(), 1e-3)
    room = WIDTH - LABELS - 10

    def x(at: datetime) -> float:
        return round(LABELS + room * (at - start).total_seconds() / span, 2)

    lanes = []
    for i, step in enumerate(steps):
        y = i * ROW + 4
        began = step.started_at or start
        ended = step.finished_at or (end if step.status in ("RUNNING", "PAUSED") else began)
        kind = _kind(step)
        cls = f"st-{step.status.lower()} kind-{kind}"
        seconds = (ended - began).total_seconds()
        waits = f" for {step.wait_for}" if step.wait_for else ""
        until = f", until {step.wake_at:%Y-%m-%d %H:%M:%S} UTC" if step.wake_at else ""
        title = (
            f"{step.name} ({kind}{waits}): {step.status}, attempt(s) {step.attempts}, "
            f"{seconds:.3f} s{until}"
        )
        left = x(began)
        bar = Rect(left, y, max(x(ended) - left, 2.0), ROW - 8, cls, title)
        wake = step.wake_at
        wake_x = x(wake) if wake is not None and start <= wake <= end else None
        label = step.name if kind == "step" else f"{step.name} [{kind}]"
        lanes.append(Lane(label, y, bar, wake_x))
    return Timeline(lanes, start, end, max(len(steps), 1) * ROW + 24)
