"""Logging with the run in every record: ``run_id``, ``workflow`` and ``step`` come from
context variables set by the worker, so every record our loggers emit while a run executes
carries them (``%(run_id)s`` in a format string, or ``record.run_id``)."""

from __future__ import annotations

import contextvars
import logging

run_id_var: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "pgqrs_run_id", default=None
)
workflow_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "pgqrs_workflow", default=None
)
step_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("pgqrs_step", default=None)


class RunContextFilter(logging.Filter):
    """Adds ``run_id``, ``workflow`` and ``step`` (None outside a run) to each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in (("run_id", run_id_var), ("workflow", workflow_var), ("step", step_var)):
            if not hasattr(record, name):
                setattr(record, name, var.get())
        return True


_FILTER = RunContextFilter()


def get_logger(name: str) -> logging.Logger:
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger
