"""pgqrs_sqla: durable workflows and a job queue inside your SQLAlchemy app.

Quick tour::

    import pgqrs_sqla as pgqrs

    store = await pgqrs.connect("sqlite:///app.db")        # or postgresql://...
    await store.install()                                  # or Alembic
    await store.create_workflow("data_pipeline")

    async def handler(ctx, params):
        data = await ctx.step("fetch", fetch)
        return {"n": len(data)}

    worker = await pgqrs.consumer("worker-1", 8080, "data_pipeline").handler(handler).create(store)
    run_id = await pgqrs.workflow("data_pipeline").trigger({"url": "..."}).execute(session)
"""

from ._limits import UNLIMITED as UNLIMITED, Unlimited as Unlimited
from ._logging import RunContextFilter as RunContextFilter
from ._signals import Pause as Pause, Step as Step
from ._trigger_many import TriggerMany as TriggerMany
from .codec import json_default as json_default
from .consumer import ConsumerBuilder as ConsumerBuilder, consumer as consumer
from .context import RunContext as RunContext
from .errors import (
    AuthenticationFailed as AuthenticationFailed,
    ConfigurationError as ConfigurationError,
    Conflict as Conflict,
    DatabaseBusy as DatabaseBusy,
    DatabaseError as DatabaseError,
    DatabaseUnavailable as DatabaseUnavailable,
    DeadLetterNotFound as DeadLetterNotFound,
    DecodeError as DecodeError,
    DuplicateIdempotencyKey as DuplicateIdempotencyKey,
    DurationError as DurationError,
    EventTimeout as EventTimeout,
    HandlerError as HandlerError,
    IdempotencyKeyNotVisible as IdempotencyKeyNotVisible,
    IllegalTransition as IllegalTransition,
    InvalidLimit as InvalidLimit,
    InvalidName as InvalidName,
    InvalidSchedule as InvalidSchedule,
    LeaseLost as LeaseLost,
    LockConflict as LockConflict,
    LockTimeout as LockTimeout,
    NotFound as NotFound,
    PayloadError as PayloadError,
    PgqrsError as PgqrsError,
    PoolerError as PoolerError,
    QueryCancelled as QueryCancelled,
    QueueBusy as QueueBusy,
    QueueNotFound as QueueNotFound,
    ReadOnlyDatabase as ReadOnlyDatabase,
    ReadOnlyModel as ReadOnlyModel,
    ReplayMismatch as ReplayMismatch,
    RetentionTooShort as RetentionTooShort,
    RunCancelled as RunCancelled,
    RunFailed as RunFailed,
    RunNotFound as RunNotFound,
    ScheduleNotFound as ScheduleNotFound,
    SchemaMissing as SchemaMissing,
    StatementTimeout as StatementTimeout,
    StepNameReused as StepNameReused,
    TransientError as TransientError,
    ValidationError as ValidationError,
    WaitTimeout as WaitTimeout,
    WorkerNameInUse as WorkerNameInUse,
    WorkflowNotFound as WorkflowNotFound,
    WorkflowNotVisible as WorkflowNotVisible,
)
from .models import (
    DEFAULT_NAMING_CONVENTION as DEFAULT_NAMING_CONVENTION,
    PgqrsModels as PgqrsModels,
    RunStatus as RunStatus,
    StepStatus as StepStatus,
    WorkerStatus as WorkerStatus,
    pgqrs_models as pgqrs_models,
)
from .queue import Message as Message
from .registry import WorkflowRegistry as WorkflowRegistry
from .retry import RetryPolicy as RetryPolicy
from .runs import (
    RunInfo as RunInfo,
    StepInfo as StepInfo,
    WorkflowInfo as WorkflowInfo,
)
from .store import (
    PruneResult as PruneResult,
    Queue as Queue,
    QueueInfo as QueueInfo,
    QueueStats as QueueStats,
    ScheduleInfo as ScheduleInfo,
    Store as Store,
    WorkerInfo as WorkerInfo,
    connect as connect,
)
from .trigger import Trigger as Trigger, WorkflowRef as WorkflowRef, workflow as workflow
from .typed import decode as decode, encode as encode
from .worker import Worker as Worker, WorkerHealth as WorkerHealth

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_NAMING_CONVENTION",
    "UNLIMITED",
    "AuthenticationFailed",
    "ConfigurationError",
    "Conflict",
    "ConsumerBuilder",
    "DatabaseBusy",
    "DatabaseError",
    "DatabaseUnavailable",
    "DeadLetterNotFound",
    "DecodeError",
    "DuplicateIdempotencyKey",
    "DurationError",
    "EventTimeout",
    "HandlerError",
    "IdempotencyKeyNotVisible",
    "IllegalTransition",
    "InvalidLimit",
    "InvalidName",
    "InvalidSchedule",
    "LeaseLost",
    "LockConflict",
    "LockTimeout",
    "Message",
    "NotFound",
    "Pause",
    "PayloadError",
    "PgqrsError",
    "PgqrsModels",
    "PoolerError",
    "PruneResult",
    "QueryCancelled",
    "Queue",
    "QueueBusy",
    "QueueInfo",
    "QueueNotFound",
    "QueueStats",
    "ReadOnlyDatabase",
    "ReadOnlyModel",
    "ReplayMismatch",
    "RetentionTooShort",
    "RetryPolicy",
    "RunCancelled",
    "RunContext",
    "RunContextFilter",
    "RunFailed",
    "RunInfo",
    "RunNotFound",
    "RunStatus",
    "ScheduleInfo",
    "ScheduleNotFound",
    "SchemaMissing",
    "StatementTimeout",
    "Step",
    "StepInfo",
    "StepNameReused",
    "StepStatus",
    "Store",
    "TransientError",
    "Trigger",
    "TriggerMany",
    "Unlimited",
    "ValidationError",
    "WaitTimeout",
    "Worker",
    "WorkerHealth",
    "WorkerInfo",
    "WorkerNameInUse",
    "WorkerStatus",
    "WorkflowInfo",
    "WorkflowNotFound",
    "WorkflowNotVisible",
    "WorkflowRef",
    "WorkflowRegistry",
    "connect",
    "consumer",
    "decode",
    "encode",
    "json_default",
    "pgqrs_models",
    "workflow",
]
