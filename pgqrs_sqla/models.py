"""Declarative models, and how they join a host app's declarative base.

A host app calls :func:`pgqrs_models` once with its own ``Base``::

    class Base(DeclarativeBase):
        metadata = MetaData(naming_convention={...})

    pgqrs = pgqrs_models(Base)          # tables now live in Base.metadata

    class Order(Base):
        __tablename__ = "orders"
        id: Mapped[int] = mapped_column(primary_key=True)
        run_id: Mapped[int | None] = mapped_column(ForeignKey("pgqrs_workflow_runs.id"))
        run: Mapped[pgqrs.WorkflowRun | None] = relationship(pgqrs.WorkflowRun)

Columns are declared statically on mixins so type checkers see them; the factory composes
the mixins with the host base. Reads are free; writes through the ORM are refused (use the
Store's API, which goes through the state machine).

A SQLModel app passes ``SQLModel`` itself: the classes are then built on a plain
``DeclarativeBase`` sharing ``SQLModel.metadata`` and SQLModel's registry (pydantic cannot
validate ``Mapped[...]`` columns), so a SQLModel table's ``Field(foreign_key=...)`` and
``Relationship()`` reach the run class by table or class name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    event,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, declared_attr, mapped_column, registry

from ._fk_names import _name_fk_on_table_attach
from ._model_base import DEFAULT_PREFIX as DEFAULT_PREFIX, _in, _PgqrsTable
from ._schedule_model import ScheduleMixin
from ._status import (
    ArchiveReason as ArchiveReason,
    RunStatus as RunStatus,
    StepStatus as StepStatus,
    WorkerStatus as WorkerStatus,
)
from .dialects import BigIntKey, JSONType, utcnow
from .errors import ConfigurationError, ReadOnlyModel

_PREFIX_RE = re.compile(r"^[a-z][a-z0-9_]{0,19}$")

#: Naming convention used when the library creates its own MetaData.
DEFAULT_NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class QueueMixin(_PgqrsTable):
    """A named stream of messages."""

    __pgqrs_suffix__ = "queues"

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True)
    queue_name: Mapped[str] = mapped_column(String(128), unique=True)
    max_deliveries: Mapped[int] = mapped_column(Integer, default=5)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow())
    #: how long an archived message is kept (seconds; ``create_queue(retention=)``); NULL:
    #: the store's default (see ``Store.prune``)
    retention: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: flow control (``create_queue``/``create_workflow``: ``concurrency``, ``key_concurrency``,
    #: ``rate_limit`` of ``rate_period`` seconds); NULL: no limit. See ``_limited_claim``.
    concurrency: Mapped[int | None] = mapped_column(Integer, nullable=True)
    key_concurrency: Mapped[int | None] = mapped_column(Integer, nullable=True)
    rate_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    rate_period: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: the rate limit's current window: when it opened and how many claims it has had
    rate_window_start: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    rate_window_count: Mapped[int | None] = mapped_column(Integer, nullable=True)

    @declared_attr.directive
    @classmethod
    def __table_args__(cls) -> tuple[Any, ...]:
        return cls._args(CheckConstraint("max_deliveries > 0", name=cls._name("queues_maxdel_ck")))


class MessageMixin(_PgqrsTable):
    """One unit of queued work. Ready, leased and archived messages share this table."""

    __pgqrs_suffix__ = "messages"

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True)

    @declared_attr
    @classmethod
    def queue_id(cls) -> Mapped[int]:
        """The message's queue (deleting the queue deletes its messages)."""
        return mapped_column(BigIntKey, ForeignKey(cls._ref("queues"), ondelete="CASCADE"))

    payload: Mapped[Any] = mapped_column(JSONType, nullable=True)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    enqueued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow())
    #: visibility time: the message is claimable when ``vt <= now`` and it is not archived.
    vt: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow())
    #: delivery count; also the lease token that fences out a former owner.
    read_ct: Mapped[int] = mapped_column(Integer, default=0)
    #: failed deliveries (expired leases and explicit failures), compared to max_deliveries.
    failed_ct: Mapped[int] = mapped_column(Integer, default=0)

    #: The worker that claimed the message; cleared when the message is given back. Not a
    #: foreign key: no index serves this column (one would deny every claim PostgreSQL's HOT
    #: update), so a key would make each pruned worker row a scan of the whole table. An
    #: archived message keeps the id of the worker that handled it, whose row may be gone.
    consumer_worker_id: Mapped[int | None] = mapped_column(BigIntKey, nullable=True)

    dequeued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    archived_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    archive_reason: Mapped[str | None] = mapped_column(String(16), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: the run's or message's key for ``key_concurrency`` (``trigger(concurrency_key=)``)
    concurrency_key: Mapped[str | None] = mapped_column(String(255), nullable=True)

    @declared_attr.directive
    @classmethod
    def __table_args__(cls) -> tuple[Any, ...]:
        return cls._args(
            CheckConstraint(
                f"archive_reason IS NULL OR {_in('archive_reason', ArchiveReason)}",
                name=cls._name("messages_reason_ck"),
            ),
            # Live messages in claim order within a priority: a claim reads the first rows
            # of the top priority instead of sorting the queue's whole backlog. `vt` is
            # deliberately in no index: it changes on every claim, lease extension and
            # release, and an indexed column would deny those updates PostgreSQL's HOT path
            # (an index write each). The claim filters `vt <= now` on the rows it reads.
            Index(
                cls._name("messages_ready_ix"),
                "queue_id",
                "priority",
                "id",
                postgresql_where=text("archived_at IS NULL"),
                sqlite_where=text("archived_at IS NULL"),
            ),
            Index(cls._name("messages_archived_ix"), "queue_id", "archived_at"),
        )


class WorkerMixin(_PgqrsTable):
    """A registered process or task that claims messages; it heartbeats."""

    __pgqrs_suffix__ = "workers"

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True)
    worker_name: Mapped[str] = mapped_column(String(128), unique=True)
    hostname: Mapped[str] = mapped_column(String(255))
    port: Mapped[int | None] = mapped_column(Integer, nullable=True)

    @declared_attr
    @classmethod
    def queue_id(cls) -> Mapped[int | None]:
        """The queue the worker serves (NULL if that queue was deleted)."""
        return mapped_column(
            BigIntKey, ForeignKey(cls._ref("queues"), ondelete="SET NULL"), nullable=True
        )

    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow())
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow())
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    #: the registering process's id: a restart on the same host takes over the name at once
    #: when that process is gone, instead of waiting for its heartbeat to go stale
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: the worker's own heartbeat interval (seconds): its row is stale after three of them,
    #: whatever interval the worker asking for the name uses
    heartbeat_interval: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: every queue the worker serves (a JSON list of names, in its ``consumer()`` order);
    #: NULL for rows written before pgqrs_0003, which record only ``queue_id``
    queues: Mapped[Any] = mapped_column(JSONType, nullable=True)

    @declared_attr.directive
    @classmethod
    def __table_args__(cls) -> tuple[Any, ...]:
        return cls._args(
            CheckConstraint(_in("status", WorkerStatus), name=cls._name("workers_status_ck")),
        )


class WorkflowMixin(_PgqrsTable):
    """A named workflow definition; it has its own queue of the same name."""

    __pgqrs_suffix__ = "workflows"

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True)
    workflow_name: Mapped[str] = mapped_column(String(128), unique=True)

    @declared_attr
    @classmethod
    def queue_id(cls) -> Mapped[int]:
        """The queue the workflow's runs travel on (deleting the queue deletes the workflow)."""
        return mapped_column(BigIntKey, ForeignKey(cls._ref("queues"), ondelete="CASCADE"))

    max_attempts: Mapped[int] = mapped_column(Integer, default=5)
    backoff_base: Mapped[float] = mapped_column(Float, default=1.0)
    backoff_cap: Mapped[float] = mapped_column(Float, default=300.0)
    #: ``RetryPolicy.jitter``; NULL (rows written before pgqrs_0002) means on, the default
    backoff_jitter: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow())
    #: when a worker first registered for this workflow; NULL: none has yet (a row a trigger
    #: created, or one written before pgqrs_0003) — ``Store.unserved_workflows()`` lists them
    served_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    #: a run's default time limit in seconds (``create_workflow(timeout=)``); NULL: none
    timeout: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: how long a run ended SUCCESS or CANCELLED is kept (seconds), and one ended ERROR
    #: (``create_workflow(retention=, error_retention=)``); NULL: the store's defaults
    retention: Mapped[float | None] = mapped_column(Float, nullable=True)
    error_retention: Mapped[float | None] = mapped_column(Float, nullable=True)


class WorkflowRunMixin(_PgqrsTable):
    """One execution of a workflow."""

    __pgqrs_suffix__ = "workflow_runs"

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True)

    @declared_attr
    @classmethod
    def workflow_id(cls) -> Mapped[int]:
        """The run's workflow (deleting the workflow deletes its runs)."""
        return mapped_column(BigIntKey, ForeignKey(cls._ref("workflows"), ondelete="CASCADE"))

    @declared_attr
    @classmethod
    def message_id(cls) -> Mapped[int | None]:
        """The queue message carrying the run, one per run (NULL once the message is gone)."""
        return mapped_column(
            BigIntKey,
            ForeignKey(cls._ref("messages"), ondelete="SET NULL"),
            nullable=True,
            unique=True,
        )

    status: Mapped[str] = mapped_column(String(16))
    input: Mapped[Any] = mapped_column(JSONType, nullable=True)
    output: Mapped[Any] = mapped_column(JSONType, nullable=True)
    error: Mapped[Any] = mapped_column(JSONType, nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    #: the run that started this one with ``ctx.start_child``; NULL: a top-level run
    parent_run_id: Mapped[int | None] = mapped_column(BigIntKey, nullable=True)
    #: the run parked in ``ctx.wait_for_run(s)`` on this one, to wake when it ends
    awaited_by: Mapped[int | None] = mapped_column(BigIntKey, nullable=True)
    #: when the run is cancelled if still unfinished (``trigger(timeout=)``); NULL: never
    deadline_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    #: ``trigger(concurrency_key=)``, shown in ``RunInfo`` (its message carries it for claims)
    concurrency_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    #: the trigger's trace context (W3C ``traceparent``), written only while an observer is
    #: installed (``pgqrs_sqla.contrib.otel``): the worker's spans join the trigger's trace
    trace_context: Mapped[str | None] = mapped_column(String(512), nullable=True)

    @declared_attr.directive
    @classmethod
    def __table_args__(cls) -> tuple[Any, ...]:
        return cls._args(
            UniqueConstraint("workflow_id", "idempotency_key"),
            Index(cls._name("runs_parent_ix"), "parent_run_id"),
            Index(cls._name("runs_awaited_by_ix"), "awaited_by"),
            CheckConstraint(_in("status", RunStatus), name=cls._name("runs_status_ck")),
            Index(cls._name("runs_wf_status_ix"), "workflow_id", "status"),
            # Finished runs, oldest end first: retention reads the expired ones without
            # walking every run it keeps (pgqrs_0009).
            Index(
                cls._name("runs_finished_ix"),
                "finished_at",
                postgresql_where=text("finished_at IS NOT NULL"),
                sqlite_where=text("finished_at IS NOT NULL"),
            ),
        )


class WorkflowStepMixin(_PgqrsTable):
    """One named, recorded unit inside a run."""

    __pgqrs_suffix__ = "workflow_steps"

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True)

    @declared_attr
    @classmethod
    def run_id(cls) -> Mapped[int]:
        """The step's run (deleting the run deletes its steps)."""
        return mapped_column(BigIntKey, ForeignKey(cls._ref("workflow_runs"), ondelete="CASCADE"))

    step_name: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))
    output: Mapped[Any] = mapped_column(JSONType, nullable=True)
    error: Mapped[Any] = mapped_column(JSONType, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    #: the first delivery of the run's message (its ``read_ct``) that may run the steps
    #: after this record: the delivery that wrote a success, the next one after a pause or
    #: an error. ``attempts`` of later records is counted from it (see ``StepInfo``). NULL:
    #: recorded by ``update_step``, or before pgqrs_0003
    next_delivery: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: what the record is: NULL for a step; ``sleep``, ``event`` or ``run`` for a durable
    #: wait (its status PAUSED while it waits, SUCCESS once it returned). See ``_waits``.
    kind: Mapped[str | None] = mapped_column(String(16), nullable=True)
    #: a wait's deadline (the timer's end, or the wait's timeout); NULL: none
    wake_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    #: what a waiting record waits for: the event's name (``kind`` ``event``); NULL otherwise
    wait_for: Mapped[str | None] = mapped_column(String(255), nullable=True)

    @declared_attr.directive
    @classmethod
    def __table_args__(cls) -> tuple[Any, ...]:
        return cls._args(
            UniqueConstraint("run_id", "step_name"),
            CheckConstraint(_in("status", StepStatus), name=cls._name("steps_status_ck")),
        )


class WorkflowEventMixin(_PgqrsTable):
    """An event sent to a run (``send_event``): kept until a ``wait_for_event`` consumes it."""

    __pgqrs_suffix__ = "workflow_events"

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True)

    @declared_attr
    @classmethod
    def run_id(cls) -> Mapped[int]:
        """The run the event is for (deleting the run deletes its events)."""
        return mapped_column(BigIntKey, ForeignKey(cls._ref("workflow_runs"), ondelete="CASCADE"))

    event_name: Mapped[str] = mapped_column(String(128))
    payload: Mapped[Any] = mapped_column(JSONType, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow())
    #: when a wait consumed it, and which (the wait's step name); NULL: not consumed yet
    consumed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    consumed_by: Mapped[str | None] = mapped_column(String(255), nullable=True)

    @declared_attr.directive
    @classmethod
    def __table_args__(cls) -> tuple[Any, ...]:
        return cls._args(Index(cls._name("events_run_name_ix"), "run_id", "event_name", "id"))


#: The name of every pgqrs table after its prefix (``pgqrs_`` + suffix), from the mixins.
TABLE_SUFFIXES: tuple[str, ...] = tuple(
    mixin.__pgqrs_suffix__
    for mixin in (
        QueueMixin,
        MessageMixin,
        WorkerMixin,
        WorkflowMixin,
        WorkflowRunMixin,
        WorkflowStepMixin,
        WorkflowEventMixin,
        ScheduleMixin,
    )
)


@dataclass(frozen=True)
class Tables:
    """The pgqrs ``Table`` objects; statement builders take this."""

    queues: Table
    messages: Table
    workers: Table
    workflows: Table
    runs: Table
    steps: Table
    events: Table
    schedules: Table


@dataclass(frozen=True)
class PgqrsModels:
    """The model classes created on one declarative base, returned by :func:`pgqrs_models`."""

    Queue: type[QueueMixin]
    Message: type[MessageMixin]
    Worker: type[WorkerMixin]
    Workflow: type[WorkflowMixin]
    WorkflowRun: type[WorkflowRunMixin]
    WorkflowStep: type[WorkflowStepMixin]
    WorkflowEvent: type[WorkflowEventMixin]
    Schedule: type[ScheduleMixin]
    metadata: MetaData
    prefix: str
    schema: str | None

    @property
    def tables(self) -> Tables:
        """The eight tables as :class:`~sqlalchemy.Table` objects, for Core statements."""

        def t(cls: type[Any]) -> Table:
            table: Table = cls.__table__
            return table

        return Tables(
            queues=t(self.Queue),
            messages=t(self.Message),
            workers=t(self.Worker),
            workflows=t(self.Workflow),
            runs=t(self.WorkflowRun),
            steps=t(self.WorkflowStep),
            events=t(self.WorkflowEvent),
            schedules=t(self.Schedule),
        )

    def run_fk(self, name: str | None = None, *, ondelete: str | None = "SET NULL") -> ForeignKey:
        """A ``ForeignKey`` to the run table's ``id`` that always has a name, for a column of yours.

        Use it as ``mapped_column(models.run_fk(), nullable=True)``,
        ``Column(..., models.run_fk())`` or, in SQLModel,
        ``Field(default=None, sa_column_args=[models.run_fk()])``.

        Alembic cannot add an unnamed foreign key to an existing SQLite table (batch mode
        fails with ``ValueError: Constraint must have a name``, after the revision's earlier
        steps already ran). Without ``name`` the key is named by your ``MetaData``'s ``fk``
        naming convention if it has one, else ``fk_<table>_<column>_<run table>`` (shortened
        with a hash past 63 characters, PostgreSQL's limit). ``ondelete`` defaults to
        ``SET NULL``: deleting old runs (``store.prune``) leaves your rows in place.
        """
        runs = self.tables.runs
        target = f"{runs.schema}.{runs.name}.id" if runs.schema else f"{runs.name}.id"
        fk = ForeignKey(target, name=name, ondelete=ondelete)
        if name is None:
            event.listen(
                fk, "after_parent_attach", _name_fk_on_table_attach(runs.name), propagate=True
            )
        return fk

    def include_object(
        self, obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
    ) -> bool:
        """Alembic ``include_object`` hook that *excludes* the pgqrs tables.

        Use it in a host's ``env.py`` when the host takes the shipped ``pgqrs`` migration
        branch, so its own autogenerate does not re-create (or drop) our tables.
        """
        return not self.owns(obj, name, type_)

    def owns(self, obj: Any, name: str | None, type_: str) -> bool:
        """True if ``obj`` (a table, or something on one) belongs to pgqrs."""
        names = {t.name for t in self.metadata.sorted_tables if t.name.startswith(self.prefix)}
        names &= {self.prefix + suffix for suffix in TABLE_SUFFIXES}
        if type_ == "table":
            return name in names
        table = getattr(obj, "table", None)
        return table is not None and getattr(table, "name", None) in names


def _host_base(base: Any) -> type[DeclarativeBase]:
    """The declarative base to build our classes on, for what the host passed.

    A SQLAlchemy declarative base is used as it is. A SQLModel base (``SQLModel`` itself, or
    a subclass that is not a table) is not one pydantic lets us put ``Mapped[...]`` columns
    on: our classes get a plain ``DeclarativeBase`` sharing its ``MetaData`` and registry, so
    Alembic sees one metadata and relationships resolve by class or table name.
    """
    if (
        isinstance(base, type)
        and isinstance(getattr(base, "registry", None), registry)
        and isinstance(getattr(base, "metadata", None), MetaData)
    ):
        declarative: type[DeclarativeBase] = base
        return declarative
    sa_registry = getattr(base, "_sa_registry", None)
    if isinstance(base, type) and isinstance(sa_registry, registry):
        shared: type[DeclarativeBase] = type(
            f"PgqrsOn{base.__name__}",
            (DeclarativeBase,),
            {"registry": sa_registry, "metadata": sa_registry.metadata, "__module__": __name__},
        )
        return shared
    raise ConfigurationError(
        f"pgqrs_models() needs your declarative base (a DeclarativeBase subclass, a "
        f"declarative_base() result, or SQLModel), got {base!r}; call pgqrs_models(Base) with "
        "the class your models inherit from, or pgqrs_models() for a base of pgqrs's own"
    )


def _refuse(what: str) -> Any:
    def listener(mapper: Any, connection: Any, target: Any) -> None:
        raise ReadOnlyModel(
            f"{type(target).__name__} rows are read-only through the ORM ({what} refused); "
            "use the Store API (create_queue, trigger, update_step, resume_run, ...) instead"
        )

    return listener


def pgqrs_models(
    base: type[DeclarativeBase] | type[Any] | None = None,
    *,
    prefix: str = DEFAULT_PREFIX,
    schema: str | None = None,
) -> PgqrsModels:
    """Create the pgqrs model classes on ``base`` (the host's declarative base).

    The tables join ``base.metadata`` (and so the host's Alembic autogenerate), named with
    ``prefix`` (default ``pgqrs_``) in ``schema`` (default: the connection's default). The
    host's naming convention names keys, uniques and foreign keys. Without ``base``, a new
    base with its own ``MetaData`` (and :data:`DEFAULT_NAMING_CONVENTION`) is made.
    ``base`` may also be ``SQLModel`` (or a SQLModel base class): the tables join
    ``SQLModel.metadata`` and SQLModel's registry. For a foreign key of yours to runs, use
    :meth:`PgqrsModels.run_fk` (it is named even without a naming convention).

    Call it once per base; a second call on the same base raises ``ConfigurationError``.
    """
    if not _PREFIX_RE.match(prefix):
        raise ConfigurationError(
            f"invalid table prefix {prefix!r}: use lowercase letters, digits and '_' "
            "(start with a letter, at most 20 characters)"
        )
    if base is None:

        class _OwnBase(DeclarativeBase):
            metadata = MetaData(naming_convention=DEFAULT_NAMING_CONVENTION)

        base = _OwnBase
    else:
        base = _host_base(base)
    if (f"{schema}.{prefix}queues" if schema else f"{prefix}queues") in base.metadata.tables:
        raise ConfigurationError(
            f"pgqrs models with prefix {prefix!r} are already on {base.__name__}.metadata; "
            "call pgqrs_models() once and share the result"
        )

    def make(mixin: type[_PgqrsTable], class_name: str) -> Any:
        attrs: dict[str, Any] = {
            "__tablename__": prefix + mixin.__pgqrs_suffix__,
            "__pgqrs_prefix__": prefix,
            "__pgqrs_schema__": schema,
            "__module__": __name__,
        }
        if "__table_args__" not in mixin.__dict__ and schema:
            attrs["__table_args__"] = {"schema": schema}
        cls = type(class_name, (mixin, base), attrs)
        for action in ("insert", "update", "delete"):
            event.listen(cls, f"before_{action}", _refuse(action))
        return cls

    tag = "" if prefix == DEFAULT_PREFIX else prefix.title().replace("_", "")
    return PgqrsModels(
        Queue=make(QueueMixin, f"{tag}PgqrsQueue"),
        Message=make(MessageMixin, f"{tag}PgqrsMessage"),
        Worker=make(WorkerMixin, f"{tag}PgqrsWorker"),
        Workflow=make(WorkflowMixin, f"{tag}PgqrsWorkflow"),
        WorkflowRun=make(WorkflowRunMixin, f"{tag}PgqrsWorkflowRun"),
        WorkflowStep=make(WorkflowStepMixin, f"{tag}PgqrsWorkflowStep"),
        WorkflowEvent=make(WorkflowEventMixin, f"{tag}PgqrsWorkflowEvent"),
        Schedule=make(ScheduleMixin, f"{tag}PgqrsSchedule"),
        metadata=base.metadata,
        prefix=prefix,
        schema=schema,
    )
