"""What every pgqrs table mixin shares: its name, schema and constraint names from the factory.

Apart from :mod:`pgqrs_sqla.models` so that a table's mixin may live in a module of its own
(``_schedule_model.py``) without importing the factory that imports it.
"""

from __future__ import annotations

import enum
from typing import Any, ClassVar

from sqlalchemy.sql.naming import conv

DEFAULT_PREFIX = "pgqrs_"


def _in(column: str, values: type[enum.StrEnum]) -> str:
    return f"{column} IN ({', '.join(repr(v.value) for v in values)})"


class _PgqrsTable:
    """Shared plumbing: the table name and schema come from the factory."""

    __pgqrs_prefix__: ClassVar[str] = DEFAULT_PREFIX
    __pgqrs_schema__: ClassVar[str | None] = None
    __pgqrs_suffix__: ClassVar[str] = ""

    @classmethod
    def _ref(cls, suffix: str) -> str:
        schema = f"{cls.__pgqrs_schema__}." if cls.__pgqrs_schema__ else ""
        return f"{schema}{cls.__pgqrs_prefix__}{suffix}.id"

    @classmethod
    def _name(cls, short: str) -> conv:
        # conv(): an exact name, untouched by the host's naming convention.
        return conv(f"{cls.__pgqrs_prefix__}{short}")

    @classmethod
    def _args(cls, *items: Any) -> tuple[Any, ...]:
        if cls.__pgqrs_schema__:
            return (*items, {"schema": cls.__pgqrs_schema__})
        return items
