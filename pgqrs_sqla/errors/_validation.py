"""Bad input: the errors that name an option, a value or a payload that was refused.

Each is a :class:`ValidationError`; the caller's transaction and the database are left as they
were. Re-exported by :mod:`pgqrs_sqla.errors`.
"""

from __future__ import annotations

from ._base import PgqrsError

#: The longest duration any option accepts: ten years (of 365.25 days), in seconds. Far below
#: what ``now + d`` can be on every backend (PostgreSQL's timestamptz, SQLite's ISO text and
#: Python's ``datetime`` all stop at the year 9999), so a deadline is always storable.
MAX_DURATION_SECONDS = 10 * 365.25 * 86400.0


class ValidationError(PgqrsError):
    """Invalid input; nothing was written."""

    #: the option or argument refused, when one is named
    option: str | None
    #: the value refused
    value: object

    def __init__(
        self, message: str | None = None, *, option: str | None = None, value: object = None
    ) -> None:
        super().__init__(message)
        self.option = option
        self.value = value


class InvalidName(ValidationError):
    """Invalid name."""

    #: the name refused (whatever was passed, not necessarily a str)
    name: object

    def __init__(
        self,
        message: str | None = None,
        *,
        name: object = None,
        option: str | None = None,
    ) -> None:
        super().__init__(message, option=option, value=name)
        self.name = name


class PayloadError(ValidationError):
    """The payload cannot be stored."""

    #: what was refused (``"payload"``, ``"params of workflow 'x'"``, ``"result of step 'y'"``)
    what: str
    #: ``not_json``, ``unsupported_type``, ``key_not_str``, ``bad_text``, ``too_deep``,
    #: ``too_large``
    reason: str
    #: where inside the value (``$.data[1]``), when it is one place
    path: str | None
    #: the size of its JSON in bytes (``too_large``)
    size: int | None
    #: the size limit in bytes (``too_large``)
    limit: int | None

    def __init__(
        self,
        message: str | None = None,
        *,
        what: str = "",
        reason: str = "",
        path: str | None = None,
        size: int | None = None,
        limit: int | None = None,
    ) -> None:
        super().__init__(message)
        self.what = what
        self.reason = reason
        self.path = path
        self.size = size
        self.limit = limit


class DurationError(ValidationError):
    """A duration (delay, timeout, interval, pause...) is not finite or out of range.

    ``option`` names it, ``limit`` is the cap in seconds.
    """

    #: the longest duration accepted, in seconds
    limit: float

    def __init__(
        self,
        message: str | None = None,
        *,
        option: str | None = None,
        value: object = None,
        limit: float = MAX_DURATION_SECONDS,
    ) -> None:
        super().__init__(message, option=option, value=value)
        self.limit = limit


class DuplicateIdempotencyKey(ValidationError):
    """Two items of one ``trigger_many`` have the same idempotency key; nothing was written."""

    #: the key given twice
    key: str
    #: the positions (0-based) of the first two items that have it
    positions: tuple[int, int]

    def __init__(self, message: str | None = None, *, key: str, positions: tuple[int, int]):
        super().__init__(message, option="idempotency_keys", value=key)
        self.key = key
        self.positions = positions


class InvalidLimit(ValidationError):
    """A concurrency or rate limit is not an int of at least 1 (nor ``UNLIMITED``).

    ``option`` names it (``concurrency``, ``key_concurrency``, ``rate_limit``), ``value`` is
    what was passed. Nothing was written.
    """


class RetentionTooShort(ValidationError):
    """A workflow's retention is shorter than its runs' default time limit (its ``timeout``).

    ``option`` names the retention (``retention`` or ``error_retention``), ``value`` is it in
    seconds, ``timeout`` the workflow's timeout in seconds. Nothing was written.
    """

    #: the workflow's default run time limit, in seconds
    timeout: float

    def __init__(
        self,
        message: str | None = None,
        *,
        option: str | None = None,
        value: object = None,
        timeout: float = 0.0,
    ) -> None:
        super().__init__(message, option=option, value=value)
        self.timeout = timeout


class InvalidSchedule(ValidationError):
    """A schedule's definition is refused; nothing was written.

    ``option`` names what was wrong (``cron``, ``every``, ``timezone``, ``catch_up``,
    ``params``), ``value`` is what was given, ``schedule`` the schedule's name.
    """

    #: the schedule's name
    schedule: str | None

    def __init__(
        self,
        message: str | None = None,
        *,
        schedule: str | None = None,
        option: str | None = None,
        value: object = None,
    ) -> None:
        super().__init__(message, option=option, value=value)
        self.schedule = schedule


class DecodeError(ValidationError):
    """A stored value does not fit the annotation the code reads it with; the run fails.

    ``what`` is the value (``params of workflow 'x'``, ``result of step 'y'``), ``path`` the
    place inside it (``$.items[0].id``), ``expected`` what the annotation wants there, and
    ``value`` what was found.
    """

    run_id: int | None
    #: the step whose recorded result was read (None: the run's params or output)
    step_name: str | None
    what: str
    path: str
    expected: str

    def __init__(
        self,
        message: str | None = None,
        *,
        run_id: int | None = None,
        step_name: str | None = None,
        what: str = "",
        path: str = "$",
        expected: str = "",
        value: object = None,
    ) -> None:
        super().__init__(message, value=value)
        self.run_id, self.step_name, self.what = run_id, step_name, what
        self.path, self.expected = path, expected
