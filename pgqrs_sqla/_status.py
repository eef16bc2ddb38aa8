"""The statuses of runs, steps, workers and archived messages (re-exported by ``models``)."""

from __future__ import annotations

import enum


class RunStatus(enum.StrEnum):
    """States of a workflow run (see docs/concepts.md)."""

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    SUCCESS = "SUCCESS"
    ERROR = "ERROR"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        """True for the statuses a run ends in: SUCCESS, ERROR and CANCELLED."""
        return self in (RunStatus.SUCCESS, RunStatus.ERROR, RunStatus.CANCELLED)


class StepStatus(enum.StrEnum):
    """States of a workflow step."""

    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    ERROR = "ERROR"
    PAUSED = "PAUSED"


class WorkerStatus(enum.StrEnum):
    """States of a registered worker."""

    READY = "ready"
    POLLING = "polling"
    SUSPENDED = "suspended"
    STOPPED = "stopped"


class ArchiveReason(enum.StrEnum):
    """Why a message left the queue."""

    DONE = "done"
    DEAD = "dead"
