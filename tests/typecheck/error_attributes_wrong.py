"""The attribute mistakes mypy must catch (tests/unit/test_error_types.py): each line marked
``# error: <code>`` is reported, with that code, and nothing else is."""

from __future__ import annotations

import pgqrs_sqla as pgqrs


def bad(error: pgqrs.RunNotFound) -> str:
    return error.run_id  # error: return-value


def worse(error: pgqrs.QueueNotFound) -> object:
    return error.run_id  # error: attr-defined
