"""``workflow(name).trigger(params).execute(target)``: start a run, in the caller's transaction.

That is, when ``target`` is the app's session or connection.

The run row and its queue message are written together: on PostgreSQL in one statement
(a data-modifying CTE that also issues ``NOTIFY``), on SQLite as two statements in the same
transaction. Either both appear when the transaction commits, or neither does.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Float,
    Select,
    String,
    bindparam,
    case,
    exc,
    false,
    func,
    literal,
    null,
    select,
    true,
)
from sqlalchemy.engine import Connection
from sqlalchemy.sql.dml import ReturningInsert

from . import _observe
from ._catalog_write import define_workflow
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
from ._typed_hooks import handler_types
from .codec import DEFAULT_MAX_PAYLOAD_BYTES, JsonDefault, check_json, check_text
from .dialects import Dialect, JSONType, dialect_for, insert_for, utcnow, utcnow_plus
from .errors import (
    IdempotencyKeyNotVisible,
    PayloadError,
    WorkflowNotFound,
    WorkflowNotVisible,
    duration_seconds,
)
from .models import PgqrsModels, RunStatus, Tables
from .queue import (
    NOTIFY_CHANNEL,
    check_priority,
    delete_message_stmt,
    seconds,
    validate_name,
    workflow_message_insert_stmt,
)
from .retry import RetryPolicy
from .runs import WORKFLOW_MAX_DELIVERIES
from .typed import decode, encode

if TYPE_CHECKING:
    from ._trigger_many import TriggerMany
    from .store import Store

T = TypeVar("T")
#: a workflow's params and result types (``workflow(name, handler)``; Any when not given)
P = TypeVar("P")
R = TypeVar("R")
#: ``trigger()``'s default params (None), typed so that it fits any P
_NO_PARAMS: Any = None

_RUN_COLS = [
    "workflow_id",
    "message_id",
    "status",
    "input",
    "idempotency_key",
    "cancel_requested",
    "created_at",
    "updated_at",
    "deadline_at",
    "concurrency_key",
    "trace_context",
]


# Statements are built once per set of tables and bound per call (p_wf, p_delay,
# p_priority, p_params, p_key, p_message_id): building and cache-keying a statement tree
# costs more than the round trip it makes.


def _run_values(t: Tables, message_id: ColumnElement[Any]) -> Select[Any]:
    w = t.workflows
    return select(
        w.c.id,
        message_id,
        literal(RunStatus.QUEUED.value),
        bindparam("p_params", type_=JSONType),
        bindparam("p_key", type_=String),
        false(),
        utcnow(),
        utcnow(),
        _deadline(func.coalesce(bindparam("p_timeout", type_=Float), w.c.timeout)),
        bindparam("p_ckey", type_=String),
        bindparam("p_trace", type_=String),
    ).where(w.c.workflow_name == bindparam("p_wf", type_=String))


def _deadline(timeout: ColumnElement[float]) -> ColumnElement[Any]:
    """``now + timeout`` (the run's ``deadline_at``), NULL for a NULL timeout on every backend."""
    return case((timeout.is_(None), null()), else_=utcnow_plus(timeout))


def _run_insert(t: Tables, dialect: str, source: Select[Any]) -> ReturningInsert[Any]:
    r = t.runs
    return (
        insert_for(dialect, r)
        .from_select(_RUN_COLS, source)
        .on_conflict_do_nothing(index_elements=[r.c.workflow_id, r.c.idempotency_key])
        .returning(r.c.id)
    )


@functools.cache
def pg_trigger_stmt(t: Tables, dialect: Dialect) -> Select[Any]:
    """Message, run and NOTIFY in one statement; no row for an unknown workflow.

    For a backend with data-modifying CTEs and NOTIFY: PostgreSQL.
    """
    m = t.messages
    msg = workflow_message_insert_stmt(t).returning(m.c.queue_id).cte("m")
    source = _run_values(t, msg.c.id).where(t.workflows.c.queue_id == msg.c.queue_id)
    run = _run_insert(t, dialect.name, source).cte("r")
    notify = dialect.notify(NOTIFY_CHANNEL, bindparam("p_wf", type_=String))
    assert notify is not None
    return select(msg.c.id, run.c.id, notify).select_from(msg.outerjoin(run, true()))


@functools.cache
def run_insert_stmt(t: Tables, dialect: str) -> ReturningInsert[Any]:
    """The run row's INSERT, its message id bound as ``p_message_id`` (two-statement trigger)."""
    return _run_insert(t, dialect, _run_values(t, bindparam("p_message_id", type_=BigInteger)))


def _existing(conn: Connection, t: Tables, name: str, key: str) -> int | None:
    r, w = t.runs, t.workflows
    found: int | None = conn.execute(
        select(r.c.id)
        .join(w, w.c.id == r.c.workflow_id)
        .where(w.c.workflow_name == name, r.c.idempotency_key == key)
    ).scalar()
    return found


def trigger_logic(
    conn: Connection,
    t: Tables,
    name: str,
    params: Any,
    key: str | None,
    delay: float,
    priority: int,
    *,
    guarded: bool = False,
    timeout: float | None = None,
    concurrency_key: str | None = None,
) -> int:
    """Write the run and its message on ``conn``; returns the run id.

    ``timeout``: the run's deadline is that many seconds from now (else the workflow's
    default ``timeout``, else none). ``concurrency_key``: its key (run and message).

    ``guarded`` (the caller's transaction): on PostgreSQL, at REPEATABLE READ or
    SERIALIZABLE, a trigger with an idempotency key runs in a savepoint. At those levels a
    run with the same key that another transaction committed after this one's snapshot
    cannot be seen, so it cannot be returned: PostgreSQL refuses the insert with a
    serialization failure. The savepoint takes that failure back, so the caller's
    transaction stays usable, and :class:`IdempotencyKeyNotVisible` says what happened and
    what to do. At READ COMMITTED (where every statement sees what is committed) no
    savepoint is needed, and none is paid for.
    """
    args = (conn, t, name, params, key, delay, priority, guarded, timeout, concurrency_key)
    if (observer := _observe.observer) is None:
        return _guarded(*args)
    with observer.trigger(name) as seen:  # its trace context is stored with the run
        run_id = _guarded(*args, seen.carrier())
        seen.wrote(run_id)
    return run_id


def _guarded(
    conn: Connection,
    t: Tables,
    name: str,
    params: Any,
    key: str | None,
    delay: float,
    priority: int,
    guarded: bool,
    timeout: float | None,
    concurrency_key: str | None,
    trace: str | None = None,
) -> int:
    options = (delay, priority, timeout, concurrency_key, trace)
    if not (guarded and key is not None and dialect_for(conn).snapshot_conflicts):
        return _trigger(conn, t, name, params, key, *options)
    if not snapshot_may_hide_runs(conn):
        try:
            return _trigger(conn, t, name, params, key, *options)
        except exc.DBAPIError as error:
            if sqlstate(error) != SERIALIZATION_FAILURE:
                raise
            # The level was raised behind SQLAlchemy's back (a raw SET TRANSACTION):
            # without the savepoint the caller's transaction is aborted; say so.
            raise not_visible(name, key, "REPEATABLE READ or SERIALIZABLE", aborted=True) from error

    def refusal() -> IdempotencyKeyNotVisible:
        level = str(conn.exec_driver_sql("SHOW transaction_isolation").scalar()).upper()
        return not_visible(name, key, level, aborted=False)

    with savepoint(conn, refusal):
        run_id = _trigger(conn, t, name, params, key, *options)
    return run_id


def _trigger(
    conn: Connection,
    t: Tables,
    name: str,
    params: Any,
    key: str | None,
    delay: float,
    priority: int,
    timeout: float | None,
    concurrency_key: str | None,
    trace: str | None,
) -> int:
    dialect = conn.dialect.name
    params = {
        "p_ckey": concurrency_key,
        "p_trace": trace,
        "p_wf": name,
        "p_delay": delay,
        "p_priority": priority,
        "p_params": params,
        "p_key": key,
        "p_timeout": timeout,
    }
    if (d := dialect_for(dialect)).writable_ctes:
        row = _defining(conn, t, name, lambda: conn.execute(pg_trigger_stmt(t, d), params).first())
        message_id, run_id = row[0], row[1]
    else:
        if key is not None and (found := _existing(conn, t, name, key)) is not None:
            return found
        message_id = _defining(
            conn, t, name, lambda: conn.execute(workflow_message_insert_stmt(t), params).scalar()
        )
        run_id = conn.execute(
            run_insert_stmt(t, dialect), {**params, "p_message_id": message_id}
        ).scalar()
    if run_id is None:
        # Lost an idempotency race: the other trigger's run stands; drop our message.
        conn.execute(delete_message_stmt(t, message_id))
        assert key is not None
        found = _existing(conn, t, name, key)
        assert found is not None
        return found
    return int(run_id)


def _defining(conn: Connection, t: Tables, name: str, write: Callable[[], T | None]) -> T:
    """``write()``'s row, defining workflow ``name`` first where it has no definition row yet.

    Where ``write()`` writes nothing, :func:`_define` makes the definition and it runs again.
    """
    row = write()
    if row is None:  # no definition row yet: make it with the defaults, then again
        _define(conn, t, name)
        row = write()
    if row is None:
        raise not_found(name)
    return row


def not_found(name: str) -> WorkflowNotFound:
    """The error of a trigger whose workflow is not there, even after defining it."""
    return WorkflowNotFound(
        f"no workflow named {name!r}: create it with "
        f"`await store.create_workflow({name!r})` (a worker made with "
        "WorkflowRegistry.create_worker creates its workflows); if it exists, check the "
        "name, and that workflow() has the models= (prefix, schema) of the store",
        workflow=name,
    )


def _define(conn: Connection, t: Tables, name: str) -> None:
    """Create workflow ``name`` and its queue with default options, in the trigger's transaction.

    So a rollback takes them back too; a worker's ``create_workflow`` later sets its options, and
    its registration marks the workflow served.

    On PostgreSQL in a savepoint: at REPEATABLE READ or SERIALIZABLE a definition another
    transaction committed after this one's snapshot refuses the insert with a serialization
    failure, which must not abort the caller's transaction.
    """
    autocommit = conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT"
    if autocommit or not dialect_for(conn).snapshot_conflicts:
        # (In autocommit, a Store's own trigger: each insert commits on its own, there is no
        # caller's transaction to keep usable, and no transaction a savepoint could live in.)
        define_workflow(conn, t, name, WORKFLOW_MAX_DELIVERIES, RetryPolicy())
        return
    refusal = functools.partial(
        WorkflowNotVisible,
        f"workflow {name!r} was created by another transaction after this transaction "
        "took its snapshot (REPEATABLE READ or SERIALIZABLE), so this one cannot use it; "
        "nothing was written and your transaction is still usable: retry it",
        workflow=name,
    )
    with savepoint(conn, refusal):
        define_workflow(conn, t, name, WORKFLOW_MAX_DELIVERIES, RetryPolicy())


@dataclass(frozen=True)
class Trigger(Generic[P]):
    """A prepared trigger; ``execute`` it against a Store or the caller's transaction."""

    workflow: WorkflowRef[P, Any]
    params: Any
    idempotency_key: str | None
    delay: float
    priority: int
    #: params of a type only a Store's ``json_default`` may encode: refused unless it does
    unencoded: PayloadError | None = None
    #: seconds from the trigger to the run's deadline (None: the workflow's default)
    timeout: float | None = None
    #: the run's key for its workflow's ``key_concurrency``
    concurrency_key: str | None = None

    def _encoded(self, store: Store | None) -> Trigger[P]:
        """This trigger with its params encoded by ``store``'s ``json_default``, or the refusal.

        A session target has no store to ask.
        """
        if self.unencoded is None:
            return self
        if store is None or store.json_default is None:
            raise self.unencoded
        params = check_json(
            self.params,
            what=self.unencoded.what,
            max_bytes=self.workflow.max_payload_bytes,
            default=store.json_default,
        )
        return replace(self, params=params, unencoded=None)

    def _logic(self, tables: Tables, *, guarded: bool = True) -> Callable[[Connection], int]:
        return lambda conn: trigger_logic(
            conn,
            tables,
            self.workflow.name,
            self.params,
            self.idempotency_key,
            self.delay,
            self.priority,
            guarded=guarded,
            timeout=self.timeout,
            concurrency_key=self.concurrency_key,
        )

    async def execute(self, target: Store | AsyncTarget) -> int:
        """Start the run; returns its id.

        ``target`` is a :class:`~pgqrs_sqla.Store` (its own transaction, committed here) or
        the app's ``AsyncSession`` / ``AsyncConnection`` (the run appears only if the
        caller's transaction commits; a rollback leaves nothing).
        """
        from .store import Store

        if isinstance(target, Store):
            ready = self._encoded(target)
            # Our own statement in autocommit: each sees every committed run, unguarded.
            logic = ready._logic(target.tables, guarded=False)
            run_id: int = await target._in_transaction(logic, single_statement=True)
            target._wake(self.workflow.name)
            return run_id
        ready = self._encoded(None)
        run_id = await run_async(target, ready._logic(self.workflow.tables()))
        wake_after_commit(target, target_db_key(target), self.workflow.name)
        return run_id

    def execute_sync(self, target: SyncTarget) -> int:
        """Start the run in a sync ``Session``/``Connection``'s transaction; returns its id."""
        run_id: int = run_sync(target, self._encoded(None)._logic(self.workflow.tables()))
        wake_after_commit(target, target_db_key(target), self.workflow.name)
        return run_id


@dataclass(frozen=True)
class WorkflowRef(Generic[P, R]):
    """``workflow(name)``: a reference used to trigger runs.

    Generic in the workflow's params and result types when ``workflow()`` was given the
    handler or its types (``WorkflowRef[Any, Any]`` otherwise).
    """

    name: str
    models: PgqrsModels | None = None
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    json_default: JsonDefault | None = None
    #: the annotations params are encoded and the output decoded by (None: untyped)
    params_type: Any = field(default=None, compare=False)
    result_type: Any = field(default=None, compare=False)

    def tables(self) -> Tables:
        """The tables this workflow's runs are written to: ``models``', else the default ones."""
        if self.models is not None:
            return self.models.tables
        from ._core import _default

        return _default().tables

    def trigger(
        self,
        params: P = _NO_PARAMS,
        *,
        idempotency_key: str | None = None,
        delay: float | timedelta | None = None,
        priority: int = 0,
        timeout: float | timedelta | None = None,
        concurrency_key: str | None = None,
    ) -> Trigger[P]:
        """Prepare a run with ``params`` (JSON) as its input; every argument is checked here.

        A dataclass or pydantic model is encoded (see :mod:`pgqrs_sqla.typed`). A value only a
        Store's ``json_default`` can encode is checked at ``execute``. ``timeout`` (seconds or
        a ``timedelta``, from the trigger) is the run's deadline: a run still unfinished then
        ends ``CANCELLED``, with the reason as its error, at its next step or wait (and
        anything waiting on it is woken). Without it the workflow's default applies
        (``create_workflow(name, timeout=...)``), if it has one. ``concurrency_key``
        (a non-empty str of at most 255 characters) is the key its workflow's
        ``key_concurrency`` counts it by; runs without one count only towards
        ``concurrency``.
        """
        params = encode(params, self.params_type)  # models, typed values: pgqrs_sqla.typed
        unencoded: PayloadError | None = None
        try:
            params = check_json(
                params,
                what=f"params of workflow {self.name!r}",
                max_bytes=self.max_payload_bytes,
                default=self.json_default,
            )
        except PayloadError as error:
            if self.json_default is not None or error.reason != "unsupported_type":
                raise
            unencoded = error
        for option, text in (
            ("idempotency_key", idempotency_key),
            ("concurrency_key", concurrency_key),
        ):
            if text is not None:
                check_text(text, what=option)
        limit = None if timeout is None else duration_seconds(timeout, "timeout", positive=True)
        return Trigger(
            self,
            params,
            idempotency_key,
            seconds(delay),
            check_priority(priority),
            unencoded,
            limit,
            concurrency_key,
        )

    def trigger_many(
        self,
        params: Sequence[P],
        *,
        idempotency_keys: Sequence[str | None] | None = None,
        concurrency_keys: Sequence[str | None] | None = None,
        delay: float | timedelta | None = None,
        priority: int = 0,
        timeout: float | timedelta | None = None,
    ) -> TriggerMany[P]:
        """Prepare one run per item of ``params``, written together by one ``execute``.

        ``idempotency_keys`` and ``concurrency_keys`` give one key (or None) per item, in
        order; ``delay``, ``priority`` and ``timeout`` apply to every run, as in
        :meth:`trigger`. ``execute`` returns the run ids in the order of ``params``; an item
        whose key an existing run has gets that run's id. Raises :class:`ValidationError`
        when a key list's length is not the number of items, and
        :class:`DuplicateIdempotencyKey` when two items share a key.
        """
        from ._trigger_many import prepare

        return prepare(
            self,
            params,
            idempotency_keys=idempotency_keys,
            concurrency_keys=concurrency_keys,
            delay=delay,
            priority=priority,
            timeout=timeout,
        )

    async def wait_for_run(self, store: Store, run_id: int, *, timeout: float | None = None) -> R:
        """``store.wait_for_run(run_id)``, its output decoded by the workflow's result type."""
        output = await store.wait_for_run(run_id, timeout=timeout)
        what = f"output of workflow {self.name!r}"
        result: R = decode(output, self.result_type, what=what, run_id=run_id)
        return result


@overload
def workflow(
    name: str,
    handler: Callable[[Any, P], Awaitable[R]],
    *,
    models: PgqrsModels | None = None,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    json_default: JsonDefault | None = None,
) -> WorkflowRef[P, R]: ...


@overload
def workflow(
    name: str,
    *,
    params_type: type[P],
    result_type: type[R],
    models: PgqrsModels | None = None,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    json_default: JsonDefault | None = None,
) -> WorkflowRef[P, R]: ...


@overload
def workflow(
    name: str,
    *,
    params_type: type[P],
    models: PgqrsModels | None = None,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    json_default: JsonDefault | None = None,
) -> WorkflowRef[P, Any]: ...


@overload
def workflow(
    name: str,
    *,
    models: PgqrsModels | None = None,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    json_default: JsonDefault | None = None,
) -> WorkflowRef[Any, Any]: ...


def workflow(
    name: str,
    handler: Callable[[Any, Any], Awaitable[Any]] | None = None,
    *,
    params_type: Any = None,
    result_type: Any = None,
    models: PgqrsModels | None = None,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    json_default: JsonDefault | None = None,
) -> WorkflowRef[Any, Any]:
    """Refer to workflow ``name`` to trigger it: ``workflow("x").trigger(params).execute(t)``.

    ``models`` is needed only when the app made its pgqrs models with a custom prefix or
    schema (``pgqrs_models(Base, prefix=..., schema=...)``). ``json_default`` encodes params
    JSON cannot (see :func:`pgqrs_sqla.json_default`); executed on a Store, the store's
    ``json_default`` applies too.

    Given the ``handler`` (or ``params_type=`` and ``result_type=``), the reference is typed:
    a type checker checks ``trigger(params)`` against the handler's params annotation, and
    :meth:`WorkflowRef.wait_for_run` returns its result type (see :mod:`pgqrs_sqla.typed`).
    """
    if handler is not None:
        params_type, result_type = handler_types(handler)
    return WorkflowRef(
        validate_name(name, "workflow"),
        models,
        max_payload_bytes,
        json_default,
        params_type,
        result_type,
    )
