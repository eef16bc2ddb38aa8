"""The pictures' geometry (pure): the timeline's bars and the throughput chart's stacks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pgqrs_sqla.contrib.dashboard._charts import LABELS, WIDTH, throughput, timeline
from pgqrs_sqla.contrib.dashboard._queries import Minute, StepRow

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def step(name: str, start: float, end: float | None, status: str, **kw: object) -> StepRow:
    return StepRow(
        name=name,
        status=status,
        kind=kw.get("kind"),  # type: ignore[arg-type]
        attempts=int(kw.get("attempts", 1)),  # type: ignore[call-overload]
        started_at=T0 + timedelta(seconds=start),
        finished_at=None if end is None else T0 + timedelta(seconds=end),
        wake_at=kw.get("wake_at"),  # type: ignore[arg-type]
        wait_for=kw.get("wait_for"),  # type: ignore[arg-type]
        output=None,
        error=None,
    )


def test_timeline_places_each_record_between_the_runs_start_and_end() -> None:
    room = WIDTH - LABELS - 10
    steps = [
        step("fetch", 1, 2, "SUCCESS"),
        step("charge", 2, 3, "ERROR", attempts=3),
        step(
            "approved",
            3,
            None,
            "PAUSED",
            kind="event",
            wait_for="approved",
            wake_at=T0 + timedelta(seconds=3.5),
        ),
    ]
    t = timeline(T0, T0 + timedelta(seconds=4), steps)
    fetch, charge, wait = t.lanes
    assert fetch.bar.x == LABELS + room / 4 and fetch.bar.width == room / 4
    assert charge.bar.x == LABELS + room / 2 and "attempt(s) 3" in charge.bar.title
    assert "st-error" in charge.bar.cls
    # an open wait runs to the end, its deadline marked
    assert wait.bar.x + wait.bar.width == LABELS + room
    assert wait.wake_x == LABELS + room * 3.5 / 4
    assert wait.label == "approved [event]" and "for approved" in wait.bar.title
    assert fetch.y < charge.y < wait.y


def test_a_deadline_outside_the_picture_is_not_drawn() -> None:
    late = step("nap", 0, None, "PAUSED", kind="sleep", wake_at=T0 + timedelta(hours=1))
    [lane] = timeline(T0, T0 + timedelta(seconds=10), [late]).lanes
    assert lane.wake_x is None


def test_throughput_stacks_to_the_peak() -> None:
    minutes = [Minute("a", 2, 1, 1), Minute("b", 1, 0, 0), Minute("c", 0, 0, 0)]
    chart = throughput(minutes, height=40)
    assert chart.peak == 4
    first = [r for r in chart.rects if r.x < WIDTH / 3]
    assert sum(r.height for r in first) == 40  # the peak minute fills the height
    assert [r.cls for r in first] == ["ok", "err", "cancel"]
    assert [r.height for r in chart.rects if WIDTH / 3 <= r.x < 2 * WIDTH / 3] == [10]
    assert not [r for r in chart.rects if r.x >= 2 * WIDTH / 3]  # an empty minute: no bar
