"""JSON encoding with clear errors.

Payloads, inputs and step results are stored as JSON. We check them *before* any
statement runs, so a bad value never leaves a half-written transaction behind.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import PayloadError

#: Default upper bound on one encoded payload (bytes of UTF-8 JSON).
DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024


def check_json(value: Any, *, what: str, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> Any:
    """Return ``value`` unchanged if it encodes as strict JSON within ``max_bytes``.

    Raises :class:`PayloadError` naming ``what`` (e.g. ``"payload"``, ``"result of step
    'fetch'"``) otherwise. NaN and infinities are refused: PostgreSQL's JSONB rejects them.
    """
    try:
        text = json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise PayloadError(
            f"{what} is not JSON-serialisable: {exc}; pass JSON values only (dict with str keys, "
            "list, str, finite int/float, bool, None): convert datetimes, sets, Decimals, ... "
            "first",
            what=what,
            reason="not_json",
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
    return value
