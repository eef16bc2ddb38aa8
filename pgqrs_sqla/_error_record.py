"""What is stored about an error: always storable text, whatever the exception.

That is a run's or a step's ``error``, a message's ``last_error``.
"""

from __future__ import annotations

import traceback
from typing import Any

from .errors import TransientError


def storable_text(text: str) -> str:
    """``text`` made storable on every backend: NUL and lone surrogates as backslash escapes.

    PostgreSQL's text and JSONB refuse NUL; lone surrogates are not encodable as UTF-8.
    """
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _type_name(error: BaseException) -> str:
    return f"{type(error).__module__}.{type(error).__qualname__}"


def _message_of(error: BaseException) -> str:
    """``str(error)``, or a placeholder naming the type when its ``__str__`` raises."""
    try:
        return storable_text(str(error))
    except Exception as failure:
        return (
            f"<unprintable {type(error).__qualname__}: str() raised {type(failure).__qualname__}>"
        )


def _traceback_of(error: BaseException) -> str:
    try:
        return storable_text("".join(traceback.format_exception(error)))
    except Exception:  # a pathological exception: keep what can be said without it
        return f"<traceback of {_type_name(error)} could not be formatted>"


def error_record(
    error: BaseException, *, step: str | None = None, attempts: int | None = None
) -> dict[str, Any]:
    """What we store about an error: type, message, traceback text (and step, attempts).

    Always storable, whatever the error: a message whose ``str()`` raises becomes a
    placeholder naming the type, and NUL or lone surrogates are escaped. A
    :class:`~pgqrs_sqla.TransientError` raised ``from`` (or while handling) another error
    records that cause's type and message, with the ``TransientError`` under ``via``.
    """
    record: dict[str, Any] = {
        "type": _type_name(error),
        "message": _message_of(error),
        "traceback": _traceback_of(error),
    }
    cause = _cause_of(error) if isinstance(error, TransientError) else None
    if cause is not None:
        record["via"] = {"type": record["type"], "message": record["message"]}
        record["type"], record["message"] = _type_name(cause), _message_of(cause)
    if step is not None:
        record["step"] = step
    if attempts is not None:
        record["attempts"] = attempts
    return record


def _cause_of(error: BaseException) -> BaseException | None:
    if error.__cause__ is not None:
        return error.__cause__
    if error.__context__ is not None and not error.__suppress_context__:
        return error.__context__
    return None
