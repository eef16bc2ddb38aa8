"""``workflow(name).trigger_many([params, ...]).execute(target)``: many runs at once.

Layered like :mod:`pgqrs_sqla.trigger`: N runs and their N messages are written in the
caller's transaction (or the store's own), on PostgreSQL in one statement (a data-modifying
CTE that also issues one ``NOTIFY``), on SQLite in as few as it allows (a look-up of the
idempotency keys already used, when any key is given, then one multi-row insert of the
messages and one of the runs). The caller's rollback takes back every run and message.

Idempotency keys are honoured per item, as :meth:`~pgqrs_sqla.trigger.WorkflowRef.trigger`
does: an item whose key a run of the workflow already has returns that run's id and writes
nothing. Two items of one call may not share a key (:class:`DuplicateIdempotencyKey`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from sqlalchemy import (
    CTE,
    Select,
    String,
    bindparam,
    column,
    exc,
    false,
    func,
    literal,
    literal_column,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection
from sqlalchemy.sql.dml import ReturningInsert

from . import _observe
from ._db import (
    SERIALIZATION_FAILURE,
    AsyncTarget,
    SyncTarget,
    run_async,
    run_sync,
    sqlstate,
    target_db_key,
    wake_after_commit,
)
from ._isolation import not_visible, savepoint, snapshot_may_hide_runs
from .codec import check_json, check_text
from .dialects import dialect_for, insert_for, utcnow
from .errors import DuplicateIdempotencyKey, PayloadError, ValidationError, duration_seconds
from .models import RunStatus, Tables
from .queue import (
    NOTIFY_CHANNEL,
    check_priority,
    delete_message_stmt,
    seconds,
    workflow_messages_insert_stmt,
)
from .trigger import _RUN_COLS, _deadline, _define, not_found
from .typed import encode

if TYPE_CHECKING:
    from .store import Store
    from .trigger import WorkflowRef

P = TypeVar("P")

#: items per statement: PostgreSQL binds at most 32,767 parameters (4 per item here), and
#: SQLite 32,766; a larger call is written in chunks of this many, in the same transaction
CHUNK = 1000


@dataclass(frozen=True)
class Item:
    """One run of a bulk trigger, as bound: its params (JSON) and its keys."""

    params: Any
    idempotency_key: str | None
    concurrency_key: str | None


def _per_item(name: str, given: Sequence[str | None] | None, count: int) -> list[str | None]:
    """``given`` (one key, or None, per item) checked against the number of items."""
    if given is None:
        return [None] * count
    if isinstance(given, str) or not isinstance(given, Sequence):
        raise ValidationError(
            f"{name} must be a list with one key (or None) per item, got {given!r}",
            option=name,
            value=given,
        )
    if len(given) != count:
        raise ValidationError(
            f"{name} has {len(given)} entries for {count} params: give one key (or None) per "
            "item, in the same order",
            option=name,
            value=given,
        )
    keys = list(given)
    for key in keys:
        if key is not None:
            check_text(key, what=name)
    return keys


def _no_duplicates(name: str, keys: Sequence[str | None]) -> None:
    seen: dict[str, int] = {}
    for index, key in enumerate(keys):
        if key is None:
            continue
        if key in seen:
            raise DuplicateIdempotencyKey(
                f"idempotency key {key!r} is given to items #{seen[key]} and #{index} of one "
                f"trigger_many of workflow {name!r}: one call cannot start two runs with one "
                "key; drop the repeat (its run would be the first item's)",
                key=key,
                positions=(seen[key], index),
            )
        seen[key] = index


def prepare(
    ref: WorkflowRef[P, Any],
    params: Sequence[P],
    *,
    idempotency_keys: Sequence[str | None] | None,
    concurrency_keys: Sequence[str | None] | None,
    delay: float | timedelta | None,
    priority: int,
    timeout: float | timedelta | None,
) -> TriggerMany[P]:
    """Check every argument of ``trigger_many`` and encode the params (see ``WorkflowRef``)."""
    if isinstance(params, (str, bytes, dict)) or not isinstance(params, Sequence):
        raise ValidationError(
            f"trigger_many takes a list of params (one per run), got {type(params).__name__}",
            option="params",
            value=params,
        )
    count = len(params)
    keys = _per_item("idempotency_keys", idempotency_keys, count)
    ckeys = _per_item("concurrency_keys", concurrency_keys, count)
    _no_duplicates(ref.name, keys)
    encoded: list[Any] = []
    unencoded: PayloadError | None = None
    for index, one in enumerate(params):
        value = encode(one, ref.params_type)
        try:
            value = check_json(
                value,
                what=f"params #{index} of workflow {ref.name!r}",
                max_bytes=ref.max_payload_bytes,
                default=ref.json_default,
            )
        except PayloadError as error:
            if ref.json_default is not None or error.reason != "unsupported_type":
                raise
            unencoded = unencoded or error
        encoded.append(value)
    limit = None if timeout is None else duration_seconds(timeout, "timeout", positive=True)
    items = tuple(Item(p, k, c) for p, k, c in zip(encoded, keys, ckeys, strict=True))
    return TriggerMany(ref, items, seconds(delay), check_priority(priority), limit, unencoded)


# ---------------------------------------------------------------- statements


def _run_source(t: Tables, rows: Any, message_id: Any) -> Select[Any]:
    w = t.workflows
    return select(
        w.c.id,
        message_id,
        literal(RunStatus.QUEUED.value),
        rows.c.params,
        rows.c.key,
        false(),
        utcnow(),
        utcnow(),
        _deadline(func.coalesce(bindparam("p_timeout"), w.c.timeout)),
        rows.c.ckey,
        bindparam("p_trace", type_=String),
    ).select_from(rows.join(w, w.c.workflow_name == bindparam("p_wf", type_=String)))


def _run_insert(t: Tables, dialect: str, source: Select[Any]) -> ReturningInsert[Any]:
    r = t.runs
    return (
        insert_for(dialect, r)
        .from_select(_RUN_COLS, source)
        .on_conflict_do_nothing(index_elements=[r.c.workflow_id, r.c.idempotency_key])
        .returning(r.c.id, r.c.message_id)
    )


def _pg_rows() -> CTE:
    """PostgreSQL: the items bound as one JSONB array ``p_items`` of ``{"p", "k", "c"}``.

    Read back as ``v(ord, params, key, ckey)`` by ``jsonb_array_elements ... WITH
    ORDINALITY``: one parameter whatever the number of items, so the statement is the same
    for every call, compiled once and prepared once (a VALUES list of N rows would be
    compiled again on every call: most of a call's time).
    """
    e = (
        func.jsonb_array_elements(bindparam("p_items", type_=JSONB))
        .table_valued(column("value", JSONB), with_ordinality="ord")
        .render_derived(name="e")
    )
    value = e.c.value
    params = value.op("->", return_type=JSONB)(literal_column("'p'"))
    return select(
        e.c.ord.label("ord"),
        func.nullif(params, literal_column("'null'::jsonb")).label("params"),
        value["k"].astext.label("key"),
        value["c"].astext.label("ckey"),
    ).cte("v")


def pg_items(items: Sequence[Item]) -> list[dict[str, Any]]:
    """The value of ``p_items``: one object per item."""
    return [{"p": it.params, "k": it.idempotency_key, "c": it.concurrency_key} for it in items]


@functools.cache
def pg_many_stmt(t: Tables) -> Select[Any]:
    """PostgreSQL: every message, run and one NOTIFY in one statement.

    One row per item, in order: ``run_id`` (the new run's, or the run its key already names),
    ``message_id`` (None where nothing was written) and ``wf`` (None: no workflow ``p_wf``).
    New messages get increasing ids in item order (one INSERT ... SELECT ... ORDER BY), which
    pairs them with their items by rank.
    """
    w, r = t.workflows, t.runs
    v = _pg_rows()
    wf = select(w.c.id).where(w.c.workflow_name == bindparam("p_wf", type_=String))
    # The keyed items' runs already there: one index probe each, (workflow_id, key).
    old = (
        select(v.c.ord.label("ord"), r.c.id.label("id"))
        .join_from(
            v,
            r,
            (r.c.workflow_id == wf.scalar_subquery()) & (r.c.idempotency_key == v.c.key),
        )
        .where(v.c.key.is_not(None))
        .cte("old")
    )
    fresh = (
        select(
            v.c.ord,
            v.c.params,
            v.c.key,
            v.c.ckey,
            func.row_number().over(order_by=v.c.ord).label("rn"),
        )
        .select_from(v.outerjoin(old, old.c.ord == v.c.ord))
        .where(old.c.ord.is_(None))
        .cte("fresh")
    )
    msg = workflow_messages_insert_stmt(t, fresh).cte("m")
    ranked = select(msg.c.id, func.row_number().over(order_by=msg.c.id).label("rn")).cte("mo")
    paired = (
        select(fresh.c.ord, fresh.c.params, fresh.c.key, fresh.c.ckey, ranked.c.id.label("mid"))
        .join_from(fresh, ranked, ranked.c.rn == fresh.c.rn)
        .subquery("paired")
    )
    run = _run_insert(t, "postgresql", _run_source(t, paired, paired.c.mid)).cte("r")
    notify = dialect_for("postgresql").notify(NOTIFY_CHANNEL, bindparam("p_wf", type_=String))
    assert notify is not None
    notified = select(notify.label("notified")).subquery("notified")
    return (
        select(
            func.coalesce(old.c.id, run.c.id).label("run_id"),
            ranked.c.id.label("message_id"),
            wf.scalar_subquery().label("wf"),
        )
        .select_from(v)
        .outerjoin(old, old.c.ord == v.c.ord)
        .outerjoin(fresh, fresh.c.ord == v.c.ord)
        .outerjoin(ranked, ranked.c.rn == fresh.c.rn)
        .outerjoin(run, run.c.message_id == ranked.c.id)
        .join(notified, true())
        .order_by(v.c.ord)
    )


def _json_rows() -> Any:
    """SQLite: the items bound as one JSON text ``p_items``, ``[{"c", "k", "p", "m"}, ...]``.

    Read back by ``json_each`` as ``(ord, ckey, key, params, mid)``: one parameter whatever
    the number of items, so each statement is compiled once (a VALUES list of N rows is
    compiled on every call). ``p`` is the params' JSON text, stored as it is.
    """
    j = func.json_each(bindparam("p_items", type_=String)).table_valued("key", "value")

    def field(name: str) -> Any:
        return func.json_extract(j.c.value, literal_column(f"'$.{name}'"))

    return select(
        j.c.key.label("ord"),
        field("c").label("ckey"),
        field("k").label("key"),
        field("p").label("params"),
        field("m").label("mid"),
    ).subquery("v")


@functools.cache
def sqlite_messages_stmt(t: Tables) -> ReturningInsert[Any]:
    """SQLite: a message for each item of ``p_items``, in order."""
    return workflow_messages_insert_stmt(t, _json_rows())


@functools.cache
def sqlite_runs_stmt(t: Tables, dialect: str) -> ReturningInsert[Any]:
    """SQLite: the run of each item of ``p_items`` (with its message id ``m``)."""
    rows = _json_rows()
    return _run_insert(t, dialect, _run_source(t, rows, rows.c.mid))


@functools.cache
def _existing_stmt(t: Tables) -> Select[Any]:
    """The ``(key, run id)`` of workflow ``p_wf``'s runs with any of the keys ``p_keys``."""
    r, w = t.runs, t.workflows
    return (
        select(r.c.idempotency_key, r.c.id)
        .join(w, w.c.id == r.c.workflow_id)
        .where(
            w.c.workflow_name == bindparam("p_wf", type_=String),
            r.c.idempotency_key.in_(bindparam("p_keys", expanding=True)),
        )
    )


def _existing(conn: Connection, t: Tables, name: str, keys: Sequence[str]) -> dict[str, int]:
    if not keys:
        return {}
    rows = conn.execute(_existing_stmt(t), {"p_wf": name, "p_keys": list(keys)})
    return {key: int(run_id) for key, run_id in rows}


# ---------------------------------------------------------------- writing


def _write_pg(
    conn: Connection, t: Tables, name: str, items: Sequence[Item], params: dict[str, Any]
) -> tuple[list[int | None], list[int | None]] | None:
    rows = conn.execute(pg_many_stmt(t), {**params, "p_items": pg_items(items)}).all()
    if rows and rows[0].wf is None:
        return None
    return [r.run_id for r in rows], [r.message_id for r in rows]


def _write_sqlite(
    conn: Connection, t: Tables, name: str, items: Sequence[Item], params: dict[str, Any]
) -> tuple[list[int | None], list[int | None]] | None:
    keyed = [it.idempotency_key for it in items if it.idempotency_key is not None]
    found = _existing(conn, t, name, keyed)
    run_ids: list[int | None] = [
        found.get(it.idempotency_key) if it.idempotency_key is not None else None for it in items
    ]
    fresh = [i for i, run_id in enumerate(run_ids) if run_id is None]
    message_ids: list[int | None] = [None] * len(items)
    if not fresh:
        return run_ids, message_ids
    dumps = getattr(conn.dialect, "_json_serializer", None) or json.dumps
    rows = [
        {
            "c": items[i].concurrency_key,
            "k": items[i].idempotency_key,
            "p": None if items[i].params is None else dumps(items[i].params),
        }
        for i in fresh
    ]
    bound = {**params, "p_items": json.dumps(rows)}
    new = sorted(conn.execute(sqlite_messages_stmt(t), bound).scalars())
    if not new:
        return None  # no workflow p_wf
    for row, mid in zip(rows, new, strict=True):
        row["m"] = mid
    bound["p_items"] = json.dumps(rows)
    stmt = sqlite_runs_stmt(t, conn.dialect.name)
    by_message = {int(mid): int(rid) for rid, mid in conn.execute(stmt, bound)}
    for i, mid in zip(fresh, new, strict=True):
        message_ids[i] = mid
        run_ids[i] = by_message.get(mid)
    return run_ids, message_ids


def _write(
    conn: Connection, t: Tables, name: str, items: Sequence[Item], params: dict[str, Any]
) -> list[int]:
    write = _write_pg if dialect_for(conn).writable_ctes else _write_sqlite
    got = write(conn, t, name, items, params)
    if got is None:  # no definition row yet: make it with the defaults, then again
        _define(conn, t, name)
        got = write(conn, t, name, items, params)
    if got is None:
        raise not_found(name)
    run_ids, message_ids = got
    lost = [i for i, run_id in enumerate(run_ids) if run_id is None]
    if lost:
        # Lost an idempotency race (another transaction committed a run with the key after
        # this statement's snapshot): its run stands; drop our messages, return its ids.
        for i in lost:
            message_id = message_ids[i]
            assert message_id is not None
            conn.execute(delete_message_stmt(t, message_id))
        keys = [items[i].idempotency_key for i in lost]
        found = _existing(conn, t, name, [k for k in keys if k is not None])
        for i, key in zip(lost, keys, strict=True):
            assert key is not None
            run_ids[i] = found[key]
    return [int(run_id) for run_id in run_ids if run_id is not None]


def many_logic(
    conn: Connection,
    t: Tables,
    trigger: TriggerMany[Any],
    *,
    guarded: bool,
) -> list[int]:
    """Write ``trigger``'s runs and messages on ``conn``; returns the run ids in order.

    ``guarded``: as :func:`pgqrs_sqla.trigger.trigger_logic` (a savepoint at REPEATABLE READ
    or SERIALIZABLE, where a keyed run committed after the snapshot cannot be returned).
    """
    name = trigger.workflow.name
    if (observer := _observe.observer) is None:
        return _guarded(conn, t, trigger, guarded, None)
    with observer.trigger(name) as seen:  # one observation for the call, its context on every run
        run_ids = _guarded(conn, t, trigger, guarded, seen.carrier())
        for run_id in run_ids:
            seen.wrote(run_id)
    return run_ids


def _guarded(
    conn: Connection, t: Tables, trigger: TriggerMany[Any], guarded: bool, trace: str | None
) -> list[int]:
    name = trigger.workflow.name
    keys = [it.idempotency_key for it in trigger.items if it.idempotency_key is not None]
    first = keys[0] if keys else ""

    def write() -> list[int]:
        params = {
            "p_wf": name,
            "p_delay": trigger.delay,
            "p_priority": trigger.priority,
            "p_timeout": trigger.timeout,
            "p_trace": trace,
        }
        ids: list[int] = []
        for start in range(0, len(trigger.items), CHUNK):
            ids += _write(conn, t, name, trigger.items[start : start + CHUNK], params)
        return ids

    if not (guarded and keys and dialect_for(conn).snapshot_conflicts):
        return write()
    if not snapshot_may_hide_runs(conn):
        try:
            return write()
        except exc.DBAPIError as error:
            if sqlstate(error) != SERIALIZATION_FAILURE:
                raise
            raise not_visible(
                name, first, "REPEATABLE READ or SERIALIZABLE", aborted=True
            ) from error

    def refusal() -> Exception:
        level = str(conn.exec_driver_sql("SHOW transaction_isolation").scalar()).upper()
        # PostgreSQL does not say which key's run it could not see: name the call's first.
        return not_visible(name, first, level, aborted=False)

    with savepoint(conn, refusal):
        ids = write()
    return ids


@dataclass(frozen=True)
class TriggerMany(Generic[P]):
    """A prepared bulk trigger; ``execute`` it against a Store or the caller's transaction."""

    workflow: WorkflowRef[P, Any]
    items: tuple[Item, ...]
    delay: float
    priority: int
    #: seconds from the trigger to each run's deadline (None: the workflow's default)
    timeout: float | None = None
    #: params of a type only a Store's ``json_default`` may encode: refused unless it does
    unencoded: PayloadError | None = None

    def _encoded(self, store: Store | None) -> TriggerMany[P]:
        if self.unencoded is None:
            return self
        if store is None or store.json_default is None:
            raise self.unencoded
        default = store.json_default
        items = tuple(
            replace(
                it,
                params=check_json(
                    it.params,
                    what=f"params #{i} of workflow {self.workflow.name!r}",
                    max_bytes=self.workflow.max_payload_bytes,
                    default=default,
                ),
            )
            for i, it in enumerate(self.items)
        )
        return replace(self, items=items, unencoded=None)

    async def execute(self, target: Store | AsyncTarget) -> list[int]:
        """Start the runs; returns their ids, in the order of the params.

        ``target`` is a :class:`~pgqrs_sqla.Store` (its own transaction, committed here) or
        the app's ``AsyncSession`` / ``AsyncConnection`` (the runs appear only if the
        caller's transaction commits; a rollback leaves none of them).
        """
        from .store import Store

        if not self.items:
            return []
        if isinstance(target, Store):
            ready = self._encoded(target)
            tables = target.tables
            single = len(ready.items) <= CHUNK and target.dialect.writable_ctes
            run_ids: list[int] = await target._in_transaction(
                lambda conn: many_logic(conn, tables, ready, guarded=False),
                single_statement=single,
            )
            target._wake(self.workflow.name)
            return run_ids
        ready = self._encoded(None)
        tables = self.workflow.tables()
        run_ids = await run_async(
            target, lambda conn: many_logic(conn, tables, ready, guarded=True)
        )
        wake_after_commit(target, target_db_key(target), self.workflow.name)
        return run_ids

    def execute_sync(self, target: SyncTarget) -> list[int]:
        """Start the runs in a sync ``Session``/``Connection``'s transaction; returns their ids."""
        if not self.items:
            return []
        ready = self._encoded(None)
        tables = self.workflow.tables()
        run_ids = run_sync(target, lambda conn: many_logic(conn, tables, ready, guarded=True))
        wake_after_commit(target, target_db_key(target), self.workflow.name)
        return run_ids
