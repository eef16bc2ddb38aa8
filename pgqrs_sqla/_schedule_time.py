"""A schedule's ticks: checking a definition, and which ticks a pass fires. Pure: no I/O.

Cron expressions are parsed and iterated by `croniter <https://github.com/pallets-eco/croniter>`_
(never by a parser of ours), in the schedule's time zone; ``every`` ticks are whole multiples
of the interval since the Unix epoch (UTC), so they do not depend on when the schedule was
made. Every datetime in and out of this module is timezone-aware UTC.

Daylight saving time, for a cron in a zone that has it (croniter's semantics plus one rule):

- a wall-clock time the clock skips (02:30 on the night it jumps from 02:00 to 03:00) fires
  at the first instant after the gap (03:00 local): croniter's answer, kept;
- a wall-clock time the clock repeats (02:30 on the night it goes back from 03:00 to 02:00)
  fires once, at its first occurrence (summer time). croniter would fire it twice (once per
  UTC offset); the second occurrence is skipped here, so a nightly job runs once a night.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from types import ModuleType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import InvalidSchedule, ValidationError, duration_seconds


class CatchUp(StrEnum):
    """What a pass does with the ticks that came due while no worker fired them."""

    #: fire the most recent due tick once; skip the older ones
    LATEST = "latest"
    #: fire each due tick, oldest first (at most :data:`CATCH_UP_MAX`, :data:`PASS_MAX` per pass)
    ALL = "all"
    #: fire the most recent due tick only if it is at most :data:`MISSED_AFTER` old
    NONE = "none"


#: the shortest ``every`` accepted, in seconds
MIN_EVERY = 1.0
#: a tick is *missed* when the pass that finds it runs more than this many seconds after it
#: (``catch_up="none"`` skips missed ticks; an on-time tick is fired whatever the catch-up)
MISSED_AFTER = 60.0
#: ``catch_up="all"`` runs at most this many missed ticks, the most recent; older ones are skipped
CATCH_UP_MAX = 1000
#: ticks one pass (one transaction) fires for one schedule at most; the rest fire in the next
PASS_MAX = 100
#: the prefix of a scheduled run's idempotency key: ``schedule:<name>:<tick>``
KEY_PREFIX = "schedule:"
_KEY_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"
_KEY_TIME_LEN = len("2026-01-01T00:00:00.000000Z")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def tick_key(name: str, tick: datetime) -> str:
    """The idempotency key of schedule ``name``'s run for ``tick``: one run per tick, ever."""
    return f"{KEY_PREFIX}{name}:{tick.astimezone(UTC).strftime(_KEY_TIME)}"


def tick_of_key(key: str | None) -> datetime | None:
    """The tick a scheduled run's idempotency key names (None: not a scheduled run's key)."""
    if key is None or not key.startswith(KEY_PREFIX) or len(key) < len(KEY_PREFIX) + _KEY_TIME_LEN:
        return None
    try:
        return datetime.strptime(key[-_KEY_TIME_LEN:], _KEY_TIME).replace(tzinfo=UTC)
    except ValueError:
        return None


# ------------------------------------------------------------ checking a definition


def check_timezone(name: str, timezone: object) -> ZoneInfo:
    """The zone ``timezone`` names (an IANA name such as ``Europe/Berlin``), or InvalidSchedule."""
    if isinstance(timezone, str) and timezone:
        try:
            return ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    raise InvalidSchedule(
        f"schedule {name!r}: unknown time zone {timezone!r}; use an IANA name such as "
        "'UTC' or 'Europe/Berlin'",
        schedule=name,
        option="timezone",
        value=timezone,
    )


def _croniter() -> ModuleType:
    """The croniter module, imported at its first use.

    With dateutil it takes tens of milliseconds to import, which an app that has no cron
    schedule need not pay at ``import pgqrs_sqla``.
    """
    import croniter

    return croniter


def check_cron(name: str, cron: object) -> str:
    """``cron`` if croniter accepts it as 5 fields, or 6 with seconds (last), or an @alias."""
    if isinstance(cron, str):
        fields = cron.split()
        if len(fields) in (5, 6) or (len(fields) == 1 and fields[0].startswith("@")):
            try:
                cron_lib = _croniter()
                cron_lib.croniter(cron, _EPOCH)
                return " ".join(fields)
            except (cron_lib.CroniterError, ValueError, KeyError, TypeError):
                pass
    raise InvalidSchedule(
        f"schedule {name!r}: invalid cron expression {cron!r}; use 5 fields (minute hour "
        "day-of-month month day-of-week, e.g. '30 2 * * *'), 6 with seconds as the last "
        "field ('*/10 * * * * 0'), or an alias such as '@daily'",
        schedule=name,
        option="cron",
        value=cron,
    )


def check_every(name: str, every: object) -> float:
    """``every`` (seconds or a ``timedelta``) in seconds, if at least :data:`MIN_EVERY`."""
    try:
        seconds = duration_seconds(every, "every", positive=True)
    except ValidationError as error:
        raise InvalidSchedule(
            f"schedule {name!r}: {error.message}", schedule=name, option="every", value=every
        ) from None
    if seconds < MIN_EVERY:
        raise InvalidSchedule(
            f"schedule {name!r}: every={every!r} is shorter than the minimum of "
            f"{MIN_EVERY:g} s; use every=timedelta(seconds=1) or more",
            schedule=name,
            option="every",
            value=every,
        )
    return seconds


def check_catch_up(name: str, catch_up: object) -> CatchUp:
    """``catch_up`` as a :class:`CatchUp`, or InvalidSchedule."""
    if isinstance(catch_up, str) and catch_up in set(CatchUp):
        return CatchUp(catch_up)
    raise InvalidSchedule(
        f"schedule {name!r}: catch_up={catch_up!r}; use 'latest', 'all' or 'none'",
        schedule=name,
        option="catch_up",
        value=catch_up,
    )


# ------------------------------------------------------------ ticks


@dataclass(frozen=True)
class Cadence:
    """When a schedule ticks: a cron in a zone, or every N seconds since the epoch."""

    cron: str | None
    every: float | None
    timezone: str = "UTC"

    @classmethod
    def of(cls, name: str, cron: object, every: object, timezone: object) -> Cadence:
        """A checked cadence: exactly one of ``cron`` and ``every``, and a known zone."""
        if (cron is None) == (every is None):
            raise InvalidSchedule(
                f"schedule {name!r}: give exactly one of cron= and every=",
                schedule=name,
                option="cron" if cron is None else "every",
                value=None if cron is None else every,
            )
        check_timezone(name, timezone)
        assert isinstance(timezone, str)
        if cron is not None:
            return cls(check_cron(name, cron), None, timezone)
        return cls(None, check_every(name, every), timezone)

    @property
    def _step_us(self) -> int:
        assert self.every is not None
        return round(self.every * 1_000_000)

    def _us(self, t: datetime) -> int:
        delta = t - _EPOCH
        return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds

    def _at(self, us: int) -> datetime:
        return _EPOCH + timedelta(microseconds=us)

    def _cron(self, start: datetime) -> Any:
        assert self.cron is not None
        return _croniter().croniter(self.cron, start.astimezone(ZoneInfo(self.timezone)))

    def next_after(self, t: datetime) -> datetime:
        """The first tick strictly after ``t``."""
        if self.every is not None:
            return self._at((self._us(t) // self._step_us + 1) * self._step_us)
        it = self._cron(t)
        while True:
            tick: datetime = it.get_next(datetime)
            if not _repeated(tick) and tick > t:
                return tick.astimezone(UTC)

    def backwards(self, t: datetime) -> Iterator[datetime]:
        """The ticks at or before ``t``, newest first."""
        if self.every is not None:
            k = self._us(t) // self._step_us
            while k >= 0:
                yield self._at(k * self._step_us)
                k -= 1
            return
        # From a second after t (ticks are whole seconds), so a tick at t itself is included.
        it = self._cron(t + timedelta(seconds=1))
        while True:
            try:
                tick: datetime = it.get_prev(datetime)
            except _croniter().CroniterError:  # before croniter's range: no earlier tick
                return
            if not _repeated(tick) and tick <= t:
                yield tick.astimezone(UTC)


def _repeated(tick: datetime) -> bool:
    """Whether ``tick`` is the second occurrence of a wall-clock time the clock repeats."""
    return tick.fold == 1 and tick.replace(fold=0).utcoffset() != tick.utcoffset()


@dataclass(frozen=True)
class Firing:
    """What one pass does for one schedule: the ticks to fire, and its next tick after it."""

    #: ticks to trigger a run for, oldest first
    ticks: list[datetime]
    #: the schedule's next tick once this pass commits
    next_tick: datetime
    #: due ticks this pass skips (missed ticks that ``catch_up`` does not run); at least
    #: this many when ``skipped_more``
    skipped: int = 0
    skipped_more: bool = False


def plan(
    cadence: Cadence,
    next_tick: datetime,
    now: datetime,
    catch_up: CatchUp,
    *,
    cap: int = CATCH_UP_MAX,
    per_pass: int = PASS_MAX,
    missed_after: float = MISSED_AFTER,
) -> Firing:
    """Which ticks to fire at ``now`` for a schedule whose stored next tick is ``next_tick``.

    The due ticks are ``next_tick`` and every tick after it up to ``now``. ``latest`` fires the
    most recent of them; ``none`` fires it only if it is at most ``missed_after`` seconds old;
    ``all`` fires each, oldest first: the ``cap`` most recent at most (older ones are skipped),
    ``per_pass`` in this pass (the schedule's next tick is then the first one left, still
    due, for the next pass). The next tick is otherwise the first tick after ``now``.
    """
    if next_tick > now:
        return Firing([], next_tick)
    # The due ticks after next_tick, newest first: as many as the catch-up can use, plus one
    # to know whether there were more.
    wanted = cap if catch_up is CatchUp.ALL else 1
    recent: list[datetime] = []
    complete = True
    for tick in cadence.backwards(now):
        if tick <= next_tick:
            break
        if len(recent) == wanted:
            complete = False
            break
        recent.append(tick)
    due = ([next_tick] if complete else []) + recent[::-1]  # oldest first
    # Left out of ``due`` when incomplete: next_tick and the older tick the loop found.
    unlisted = 0 if complete else 2
    after_now = cadence.next_after(now)
    if catch_up is CatchUp.ALL:
        kept = due[-cap:]
        skipped = len(due) - len(kept) + unlisted
        if len(kept) > per_pass:
            return Firing(kept[:per_pass], kept[per_pass], skipped, not complete)
        return Firing(kept, after_now, skipped, not complete)
    latest = due[-1]
    fire = catch_up is CatchUp.LATEST or (now - latest).total_seconds() <= missed_after
    skipped = len(due) - int(fire) + unlisted
    return Firing([latest] if fire else [], after_now, skipped, not complete)


def seconds_until(tick: datetime, now: datetime) -> float:
    """Seconds from ``now`` to ``tick`` (0 if it is due)."""
    return max(0.0, (tick - now).total_seconds())
