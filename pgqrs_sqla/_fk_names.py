"""Names for the foreign keys ``PgqrsModels.run_fk()`` makes, where no naming convention does.

Alembic cannot add an unnamed foreign key to an existing SQLite table, so such a key is named
``fk_<table>_<column>_<run table>`` (shortened with a hash past PostgreSQL's 63 characters).
"""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import ForeignKey, Table, event
from sqlalchemy.schema import Column
from sqlalchemy.sql.naming import conv


def _fk_name(table: str, column: str, referred: str) -> str:
    name = f"fk_{table}_{column}_{referred}"
    if len(name) <= 63:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[:54]}_{digest}"


def _name_fk_on_table_attach(referred: str) -> Any:
    """Name ``fk``'s constraint once its column joins a table, where no convention names it.

    The ForeignKey makes its constraint in its own listener on the same event, registered
    before this one (when the ForeignKey attached to the column). Both listeners propagate, so
    the copies declarative makes of a mixin's column are named too.
    """

    def on_column(foreign_key: ForeignKey, column: Column[Any]) -> None:
        def on_table(column: Column[Any], table: Table) -> None:
            constraint = foreign_key.constraint
            if constraint is None or constraint.name is not None:
                return
            if "fk" in table.metadata.naming_convention:
                return  # the host's convention names it, as it names every other key
            constraint.name = conv(_fk_name(table.name, column.name, referred))

        event.listen(column, "after_parent_attach", on_table, propagate=True)

    return on_column
