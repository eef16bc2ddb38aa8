"""JSON encoding with clear errors.

Payloads, inputs and step results are stored as JSON. We check them *before* any
statement runs, so a bad value never leaves a half-written transaction behind — and we
check them the same way on every backend: what PostgreSQL's JSONB would refuse (NUL
characters, lone surrogates, NaN) is refused on SQLite too.

:func:`check_json` returns the value *as it will be read back*: a tuple comes back a list,
a value the store's ``json_default`` hook encoded comes back in its encoded form. So the
live call of a step returns exactly what a replay after a crash returns.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import math
import re
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from .errors import PayloadError, ValidationError

#: Default upper bound on one encoded payload (bytes of UTF-8 JSON).
DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024

#: How deeply arrays and objects may nest in a stored JSON value. Deeper values are refused:
#: decoding them hits Python's recursion limit (and PostgreSQL's stack depth) long before
#: any real document needs it.
MAX_JSON_DEPTH = 200

#: A hook called for values ``json`` cannot encode, returning a JSON-encodable replacement
#: (or raising ``TypeError``), as ``json.dumps(default=...)``.
JsonDefault = Callable[[Any], Any]

#: Characters no stored text may hold: NUL (PostgreSQL's text and JSONB cannot store it) and
#: lone surrogates (not Unicode: not encodable as UTF-8, refused by JSONB).
_BAD_CHARS = re.compile("[\x00\ud800-\udfff]")


def json_default(value: Any) -> Any:
    """A ready ``json_default`` hook: ``connect(url, json_default=pgqrs_sqla.json_default)``.

    Encodes ``UUID`` as its string, ``datetime``/``date``/``time`` as ISO 8601 text,
    ``Decimal`` as its string (no precision lost), an ``Enum`` member as its value, and a
    ``set``/``frozenset`` as a list (sorted when its items sort). They come back as those
    strings and lists: convert them back where you read them.
    """
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, set | frozenset):
        try:
            return sorted(value)
        except TypeError:
            return list(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def bad_text(text: str) -> str | None:
    """What is wrong with ``text`` for storage (NUL, a lone surrogate), or None."""
    found = _BAD_CHARS.search(text)
    if found is None:
        return None
    char = found.group()
    kind = "a NUL character" if char == "\x00" else f"a lone surrogate {char!r}"
    return f"{kind} at index {found.start()}"


def check_text(value: Any, *, what: str, max_len: int = 255, option: str | None = None) -> str:
    """``value`` if it is a storable non-empty ``str`` of at most ``max_len`` characters.

    Storable: no NUL, no lone surrogate. Otherwise a :class:`ValidationError` naming ``what``.
    """
    if not isinstance(value, str) or not 0 < len(value) <= max_len:
        raise ValidationError(
            f"{what} must be a non-empty str of at most {max_len} characters, got {value!r}",
            option=option or what,
            value=value,
        )
    problem = bad_text(value)
    if problem is not None:
        raise ValidationError(
            f"{what} {value!r} has {problem}: it cannot be stored; remove it",
            option=option or what,
            value=value,
        )
    return value


#: Where a value sits inside the checked one, built only when something is refused: the
#: parent's location and this value's key or index (``None`` at the top).
_Where = tuple[Any, str | int] | None


class _Shown(str):
    """A location step written as it is (a key that is not a str: ``[1]``, ``[None]``)."""


def _path(where: _Where) -> str:
    """``$.data[1]`` for the location ``where``."""
    parts: list[str] = []
    while where is not None:
        where, step = where
        if isinstance(step, _Shown | int):
            parts.append(f"[{step}]")
        elif step.isidentifier():
            parts.append(f".{step}")
        else:
            parts.append(f"[{step!r}]")
    return "$" + "".join(reversed(parts))


def _refuse(what: str, where: _Where, reason: str, detail: str) -> PayloadError:
    path = _path(where)
    shown = path if len(path) <= 80 else f"{path[:60]}...{path[-16:]}"
    return PayloadError(
        f"{what} cannot be stored: at {shown}, {detail}", what=what, reason=reason, path=path
    )


def _walk(value: Any, what: str, where: _Where, depth: int, default: JsonDefault | None) -> bool:
    """Check ``value`` for what JSON would lose or a backend refuse; True if it round-trips exactly.

    It does not when a tuple, a subclass or a ``default``-encoded value is inside.
    """
    kind = type(value)
    if kind is str:
        if _BAD_CHARS.search(value) is not None:
            raise _refuse(what, where, "bad_text", str(bad_text(value)))
        return True
    if kind is int or kind is bool or value is None:
        return True
    if kind is float:
        if not math.isfinite(value):
            raise _refuse(
                what,
                where,
                "not_json",
                f"{value!r}, which is not JSON-serialisable (JSON has no NaN or infinity)",
            )
        return True
    if kind is dict or kind is list or isinstance(value, dict | list | tuple):
        if depth >= MAX_JSON_DEPTH:
            raise _refuse(what, where, "too_deep", f"nesting deeper than {MAX_JSON_DEPTH} levels")
        exact = kind is dict or kind is list
        depth += 1
        if isinstance(value, dict):
            for key, item in value.items():
                if type(key) is not str:
                    if not isinstance(key, str):
                        raise _refuse(
                            what,
                            (where, _Shown(repr(key))),
                            "key_not_str",
                            f"an object key that is not a str ({type(key).__name__} {key!r}; "
                            "JSON would turn it into a string, so a replay would differ)",
                        )
                    exact = False
                if _BAD_CHARS.search(key) is not None:
                    raise _refuse(what, (where, key), "bad_text", f"a key with {bad_text(key)}")
                if not _walk(item, what, (where, key), depth, default):
                    exact = False
        else:
            for index, item in enumerate(value):
                if not _walk(item, what, (where, index), depth, default):
                    exact = False
        return exact
    if isinstance(value, str):  # a subclass (a str enum...): stored as its characters
        if _BAD_CHARS.search(value) is not None:
            raise _refuse(what, where, "bad_text", str(bad_text(value)))
        return False
    if isinstance(value, float) and not math.isfinite(value):
        raise _refuse(
            what,
            where,
            "not_json",
            f"{value!r}, which is not JSON-serialisable (JSON has no NaN or infinity)",
        )
    if isinstance(value, int | float):  # a subclass (an IntEnum...): stored as its number
        return False
    if default is not None:
        try:
            replaced = default(value)
        except (TypeError, ValueError) as exc:
            raise _refuse(what, where, "not_json", str(exc)) from exc
        _walk(replaced, what, where, depth, default)
        return False
    raise _refuse(
        what,
        where,
        "unsupported_type",
        f"a {kind.__name__}, which is not JSON-serialisable (convert it, or pass "
        "json_default=pgqrs_sqla.json_default to connect()/Store()/workflow())",
    )


def check_json(
    value: Any,
    *,
    what: str,
    max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    default: JsonDefault | None = None,
) -> Any:
    """Return ``value`` as it will be read back from the database, if it can be stored.

    Raises :class:`PayloadError` naming ``what`` (e.g. ``"payload"``, ``"result of step
    'fetch'"``) and the ``path`` inside the value (``$.data[1]``) otherwise: NaN and
    infinities, NUL characters and lone surrogates (PostgreSQL's JSONB refuses them),
    object keys that are not ``str`` (JSON would turn ``1`` into ``"1"``), nesting deeper
    than :data:`MAX_JSON_DEPTH`, and values over ``max_bytes`` of encoded JSON. ``default``
    encodes other types (see :func:`json_default`); the checks apply to its output.

    The value returned is the stored one: the same object when JSON gives it back
    unchanged, else its decoded copy (a tuple becomes a list, a UUID its string...).
    """
    exact = _walk(value, what, None, 0, default)
    try:
        text = json.dumps(value, allow_nan=False, separators=(",", ":"), default=default)
    except (TypeError, ValueError, RecursionError) as exc:  # pragma: no cover - _walk said
        raise PayloadError(
            f"{what} is not JSON-serialisable: {exc}; pass JSON values only (dict with str keys, "
            "list, str, finite int/float, bool, None), or pass json_default= to connect()",
            what=what,
            reason="not_json",
            path="$",
        ) from exc
    size = len(text.encode())
    if size > max_bytes:
        raise PayloadError(
            f"{what} is {size} bytes of JSON, over the limit of {max_bytes} bytes: store large "
            "data in a table of yours and pass its id, or raise max_payload_bytes= (connect(), "
            "workflow())",
            what=what,
            reason="too_large",
            size=size,
            limit=max_bytes,
        )
    return value if exact else json.loads(text)
