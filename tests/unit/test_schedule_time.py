"""A schedule's ticks, without a database or a clock: cron (5 and 6 fields), ``every``, time
zones, both DST days of Europe/Berlin in 2026, and which due ticks each ``catch_up`` fires
(with its cap)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pgqrs_sqla import InvalidSchedule
from pgqrs_sqla._schedule_time import (
    CATCH_UP_MAX,
    MISSED_AFTER,
    Cadence,
    CatchUp,
    plan,
    tick_key,
    tick_of_key,
)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def ticks_after(cadence: Cadence, start: datetime, n: int) -> list[datetime]:
    out = []
    for _ in range(n):
        start = cadence.next_after(start)
        out.append(start)
    return out


def test_five_field_cron_in_utc() -> None:
    c = Cadence.of("s", "30 2 * * *", None, "UTC")
    assert ticks_after(c, utc(2026, 1, 1, 3), 2) == [utc(2026, 1, 2, 2, 30), utc(2026, 1, 3, 2, 30)]
    # strictly after: a tick at the start is not the next one
    assert c.next_after(utc(2026, 1, 2, 2, 30)) == utc(2026, 1, 3, 2, 30)


def test_six_field_cron_has_seconds_last() -> None:
    c = Cadence.of("s", "* * * * * 15,45", None, "UTC")
    assert ticks_after(c, utc(2026, 1, 1, 0, 0, 0), 3) == [
        utc(2026, 1, 1, 0, 0, 15),
        utc(2026, 1, 1, 0, 0, 45),
        utc(2026, 1, 1, 0, 1, 15),
    ]


def test_cron_in_a_time_zone() -> None:
    c = Cadence.of("s", "0 9 * * *", None, "America/New_York")
    assert c.next_after(utc(2026, 1, 5, 0)) == utc(2026, 1, 5, 14)  # EST: UTC-5
    assert c.next_after(utc(2026, 7, 5, 0)) == utc(2026, 7, 5, 13)  # EDT: UTC-4


def test_every_is_aligned_to_the_epoch() -> None:
    c = Cadence.of("s", None, timedelta(minutes=5), "Europe/Berlin")
    assert c.next_after(utc(2026, 1, 1, 0, 7, 13)) == utc(2026, 1, 1, 0, 10)
    assert c.next_after(utc(2026, 1, 1, 0, 10)) == utc(2026, 1, 1, 0, 15)
    assert list(zip(range(2), c.backwards(utc(2026, 1, 1, 0, 10)), strict=False)) == [
        (0, utc(2026, 1, 1, 0, 10)),
        (1, utc(2026, 1, 1, 0, 5)),
    ]


def test_dst_spring_forward_fires_once_after_the_gap() -> None:
    """2026-03-29, Europe/Berlin skips 02:00-03:00: 02:30 fires at 03:00 CEST (01:00 UTC)."""
    c = Cadence.of("s", "30 2 * * *", None, "Europe/Berlin")
    assert ticks_after(c, utc(2026, 3, 27, 12), 4) == [
        utc(2026, 3, 28, 1, 30),  # 02:30 CET
        utc(2026, 3, 29, 1, 0),  # 03:00 CEST: the first instant after the gap
        utc(2026, 3, 30, 0, 30),  # 02:30 CEST
        utc(2026, 3, 31, 0, 30),
    ]
    assert list(zip(range(2), c.backwards(utc(2026, 3, 29, 12)), strict=False)) == [
        (0, utc(2026, 3, 29, 1, 0)),
        (1, utc(2026, 3, 28, 1, 30)),
    ]


def test_dst_fall_back_fires_the_repeated_time_once() -> None:
    """2026-10-25, Europe/Berlin repeats 02:00-03:00: 02:30 fires at 02:30 CEST only."""
    c = Cadence.of("s", "30 2 * * *", None, "Europe/Berlin")
    assert ticks_after(c, utc(2026, 10, 23, 12), 3) == [
        utc(2026, 10, 24, 0, 30),
        utc(2026, 10, 25, 0, 30),  # 02:30 CEST; 02:30 CET (01:30 UTC) is skipped
        utc(2026, 10, 26, 1, 30),  # 02:30 CET
    ]
    # From inside the repeated hour, backwards too.
    assert next(iter(c.backwards(utc(2026, 10, 25, 1, 45)))) == utc(2026, 10, 25, 0, 30)
    # An hourly cron: each wall-clock hour once, so the repeated 02:00 is not fired again.
    hourly = Cadence.of("h", "0 * * * *", None, "Europe/Berlin")
    assert ticks_after(hourly, utc(2026, 10, 24, 23, 30), 3) == [
        utc(2026, 10, 25, 0),  # 02:00 CEST
        utc(2026, 10, 25, 2),  # 03:00 CET (02:00 CET skipped)
        utc(2026, 10, 25, 3),
    ]


@pytest.mark.parametrize(
    ("cron", "every", "timezone", "option"),
    [
        ("61 * * * *", None, "UTC", "cron"),
        ("* * * *", None, "UTC", "cron"),
        ("0 0 1 1 * 0 2030", None, "UTC", "cron"),  # 7 fields (a year): not accepted
        ("not cron", None, "UTC", "cron"),
        (None, 0.5, "UTC", "every"),
        (None, timedelta(milliseconds=999), "UTC", "every"),
        (None, float("nan"), "UTC", "every"),
        ("* * * * *", None, "Mars/Olympus", "timezone"),
        ("* * * * *", None, "", "timezone"),
        ("* * * * *", 60, "UTC", "every"),  # both
        (None, None, "UTC", "cron"),  # neither
    ],
)
def test_bad_definitions_are_typed(cron: object, every: object, timezone: str, option: str) -> None:
    with pytest.raises(InvalidSchedule) as caught:
        Cadence.of("nightly", cron, every, timezone)
    assert caught.value.option == option
    assert caught.value.schedule == "nightly"


def test_the_tick_round_trips_through_the_key() -> None:
    tick = utc(2026, 3, 29, 1, 0, 0)
    key = tick_key("a:b", tick)
    assert key == "schedule:a:b:2026-03-29T01:00:00.000000Z"
    assert tick_of_key(key) == tick
    assert tick_of_key("order-42") is None
    assert tick_of_key(None) is None


HOURLY = Cadence.of("h", None, 3600, "UTC")
NOW = utc(2026, 5, 2, 12, 10)  # 10 minutes after a tick: on time for "none"
DAY_AGO = utc(2026, 5, 1, 12)  # the stored next tick of a schedule down for a day


def test_catch_up_latest_fires_the_most_recent_missed_tick_once() -> None:
    firing = plan(HOURLY, DAY_AGO, NOW, CatchUp.LATEST)
    assert firing.ticks == [utc(2026, 5, 2, 12)]
    assert firing.next_tick == utc(2026, 5, 2, 13)


def test_catch_up_all_fires_each_missed_tick_oldest_first_per_pass() -> None:
    firing = plan(HOURLY, DAY_AGO, NOW, CatchUp.ALL, per_pass=10)
    assert firing.ticks == [DAY_AGO + timedelta(hours=h) for h in range(10)]
    assert firing.next_tick == DAY_AGO + timedelta(hours=10)  # still due: the next pass
    rest = plan(HOURLY, firing.next_tick, NOW, CatchUp.ALL)
    assert rest.ticks == [DAY_AGO + timedelta(hours=h) for h in range(10, 25)]
    assert rest.next_tick == utc(2026, 5, 2, 13)
    assert rest.skipped == 0


def test_catch_up_all_keeps_the_most_recent_cap() -> None:
    firing = plan(HOURLY, DAY_AGO, NOW, CatchUp.ALL, cap=5)
    assert firing.ticks == [utc(2026, 5, 2, h) for h in (8, 9, 10, 11, 12)]
    assert firing.skipped_more
    assert CATCH_UP_MAX == 1000


def test_catch_up_none_skips_missed_ticks_but_fires_an_on_time_one() -> None:
    late = NOW + timedelta(seconds=MISSED_AFTER)  # 11 minutes after the 12:00 tick
    firing = plan(HOURLY, DAY_AGO, late, CatchUp.NONE)
    assert firing.ticks == []
    assert firing.next_tick == utc(2026, 5, 2, 13)
    on_time = plan(HOURLY, DAY_AGO, utc(2026, 5, 2, 12, 0, 30), CatchUp.NONE)
    assert on_time.ticks == [utc(2026, 5, 2, 12)]


@pytest.mark.parametrize("mode", list(CatchUp))
def test_a_tick_on_time_fires_whatever_the_catch_up(mode: CatchUp) -> None:
    firing = plan(HOURLY, utc(2026, 5, 2, 12), utc(2026, 5, 2, 12, 0, 1), mode)
    assert firing.ticks == [utc(2026, 5, 2, 12)]
    assert firing.next_tick == utc(2026, 5, 2, 13)
    assert plan(HOURLY, utc(2026, 5, 2, 13), NOW, mode).ticks == []  # not due yet
