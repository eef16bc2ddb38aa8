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

from ._signals import Pause as Pause
from ._signals import Step as Step
from .codec import json_default as json_default
from .context import RunContext as RunContext
from .errors import (
    AuthenticationFailed as AuthenticationFailed,
)
from .errors import (
    ConfigurationError as ConfigurationError,
)
from .errors import (
    Conflict as Conflict,
)
from .errors import (
    DatabaseBusy as DatabaseBusy,
)
from .errors import (
    DatabaseError as DatabaseError,
)
from .errors import (
    DatabaseUnavailable as DatabaseUnavailable,
)
from .errors import (
    DeadLetterNotFound as DeadLetterNotFound,
)
from .errors import (
    DurationError as DurationError,
)
from .errors import (
    HandlerError as HandlerError,
)
from .errors import (
    IdempotencyKeyNotVisible as IdempotencyKeyNotVisible,
)
from .errors import (
    IllegalTransition as IllegalTransition,
)
from .errors import (
    InvalidName as InvalidName,
)
from .errors import (
    LeaseLost as LeaseLost,
)
from .errors import (
    LockConflict as LockConflict,
)
from .errors import (
    LockTimeout as LockTimeout,
)
from .errors import (
    NotFound as NotFound,
)
from .errors import (
    PayloadError as PayloadError,
)
from .errors import (
    PgqrsError as PgqrsError,
)
from .errors import (
    PoolerError as PoolerError,
)
from .errors import (
    QueryCancelled as QueryCancelled,
)
from .errors import (
    QueueBusy as QueueBusy,
)
from .errors import (
    QueueNotFound as QueueNotFound,
)
from .errors import (
    ReadOnlyDatabase as ReadOnlyDatabase,
)
from .errors import (
    ReadOnlyModel as ReadOnlyModel,
)
from .errors import (
    RunCancelled as RunCancelled,
)
from .errors import (
    RunFailed as RunFailed,
)
from .errors import (
    RunNotFound as RunNotFound,
)
from .errors import (
    SchemaMissing as SchemaMissing,
)
from .errors import (
    StatementTimeout as StatementTimeout,
)
from .errors import (
    StepNameReused as StepNameReused,
)
from .errors import (
    StepNotFound as StepNotFound,
)
from .errors import (
    TransientError as TransientError,
)
from .errors import (
    ValidationError as ValidationError,
)
from .errors import (
    WaitTimeout as WaitTimeout,
)
from .errors import (
    WorkerNameInUse as WorkerNameInUse,
)
from .errors import (
    WorkerNotFound as WorkerNotFound,
)
from .errors import (
    WorkflowNotFound as WorkflowNotFound,
)
from .models import (
    DEFAULT_NAMING_CONVENTION as DEFAULT_NAMING_CONVENTION,
)
from .models import (
    PgqrsModels as PgqrsModels,
)
from .models import (
    RunStatus as RunStatus,
)
from .models import (
    StepStatus as StepStatus,
)
from .models import (
    WorkerStatus as WorkerStatus,
)
from .models import (
    pgqrs_models as pgqrs_models,
)
from .queue import Message as Message
from .registry import WorkflowRegistry as WorkflowRegistry
from .retry import RetryPolicy as RetryPolicy
from .runs import (
    RunInfo as RunInfo,
)
from .runs import (
    StepInfo as StepInfo,
)
from .runs import (
    WorkflowInfo as WorkflowInfo,
)
from .store import (
    Queue as Queue,
)
from .store import (
    QueueInfo as QueueInfo,
)
from .store import (
    QueueStats as QueueStats,
)
from .store import (
    Store as Store,
)
from .store import (
    WorkerInfo as WorkerInfo,
)
from .store import (
    connect as connect,
)
from .trigger import Trigger as Trigger
from .trigger import WorkflowRef as WorkflowRef
from .trigger import workflow as workflow
from .worker import (
    ConsumerBuilder as ConsumerBuilder,
)
from .worker import (
    Worker as Worker,
)
from .worker import (
    WorkerHealth as WorkerHealth,
)
from .worker import (
    consumer as consumer,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_NAMING_CONVENTION",
    "AuthenticationFailed",
    "ConfigurationError",
    "Conflict",
    "ConsumerBuilder",
    "DatabaseBusy",
    "DatabaseError",
    "DatabaseUnavailable",
    "DeadLetterNotFound",
    "DurationError",
    "HandlerError",
    "IdempotencyKeyNotVisible",
    "IllegalTransition",
    "InvalidName",
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
    "QueryCancelled",
    "Queue",
    "QueueBusy",
    "QueueInfo",
    "QueueNotFound",
    "QueueStats",
    "ReadOnlyDatabase",
    "ReadOnlyModel",
    "RetryPolicy",
    "RunCancelled",
    "RunContext",
    "RunFailed",
    "RunInfo",
    "RunNotFound",
    "RunStatus",
    "SchemaMissing",
    "StatementTimeout",
    "Step",
    "StepInfo",
    "StepNameReused",
    "StepNotFound",
    "StepStatus",
    "Store",
    "TransientError",
    "Trigger",
    "ValidationError",
    "WaitTimeout",
    "Worker",
    "WorkerHealth",
    "WorkerInfo",
    "WorkerNameInUse",
    "WorkerNotFound",
    "WorkerStatus",
    "WorkflowInfo",
    "WorkflowNotFound",
    "WorkflowRef",
    "WorkflowRegistry",
    "connect",
    "consumer",
    "json_default",
    "pgqrs_models",
    "workflow",
]
