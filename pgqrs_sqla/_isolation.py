"""A trigger's guard in the caller's transaction: its savepoint, and what its refusal says.

At REPEATABLE READ or SERIALIZABLE a row another transaction committed after this one's
snapshot cannot be seen, and PostgreSQL refuses to write past it with a serialization
failure: these helpers keep the caller's transaction usable and say what happened.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from sqlalchemy import exc
from sqlalchemy.engine import Connection

from ._db import SERIALIZATION_FAILURE, sqlstate
from .errors import IdempotencyKeyNotVisible


@contextlib.contextmanager
def savepoint(conn: Connection, refusal: Callable[[], Exception]) -> Iterator[None]:
    """Run the block in a savepoint of ``conn``'s transaction, released if it succeeds.

    Anything it raises rolls the savepoint back, so the caller's transaction stays usable;
    a serialization failure (a row committed after this transaction's snapshot) is raised as
    ``refusal()``, made after the rollback, from it.
    """
    savepoint = conn.begin_nested()
    try:
        yield
    except exc.DBAPIError as error:
        savepoint.rollback()
        if sqlstate(error) != SERIALIZATION_FAILURE:
            raise
        raise refusal() from error
    except BaseException:
        savepoint.rollback()
        raise
    savepoint.commit()


def snapshot_may_hide_runs(conn: Connection) -> bool:
    """Whether ``conn``'s transaction keeps one snapshot (REPEATABLE READ, SERIALIZABLE).

    Judged by the level SQLAlchemy set on it (``isolation_level=`` on the engine, connection or
    session's bind), or else the database's default, read when the connection was made.
    """
    level = conn.get_execution_options().get("isolation_level") or conn.default_isolation_level
    return str(level).upper() not in ("READ COMMITTED", "READ UNCOMMITTED", "AUTOCOMMIT")


def not_visible(name: str, key: str, level: str, *, aborted: bool) -> IdempotencyKeyNotVisible:
    state = (
        "PostgreSQL aborted your transaction: pgqrs guards a keyed trigger with a savepoint "
        "only when it knows the level, so set it with SQLAlchemy's isolation_level= rather "
        "than a SET TRANSACTION statement"
        if aborted
        else "Nothing was written and your transaction is still usable"
    )
    return IdempotencyKeyNotVisible(
        f"a run of workflow {name!r} with idempotency_key {key!r} was committed by another "
        f"transaction after {level if level == 'this' else f'this {level}'} transaction took its snapshot, so it cannot see the run "
        f"to return it. {state}. Retry the whole transaction (its new snapshot sees the "
        "run, and the trigger returns its id), or trigger at READ COMMITTED",
        workflow=name,
        idempotency_key=key,
        isolation_level=None if aborted else level,
        transaction_aborted=aborted,
    )
