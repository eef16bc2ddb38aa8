"""Logging with the run in every record: ``run_id``, ``workflow`` and ``step``.

They come from context variables set by the worker, so every record our loggers emit while a
run executes carries them (``%(run_id)s`` in a format string, or ``record.run_id``).
"""

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
    """Adds ``run_id``, ``workflow`` and ``step`` (None outside a run) to each record.

    pgqrs's own loggers carry it; add it to a handler (``handler.addFilter(RunContextFilter())``)
    and the records of the app's loggers get them too, when logged while a run executes
    (in a handler or a step body, sync or async). A structured (JSON) formatter then reads
    them as ``record.run_id``, ``record.workflow`` and ``record.step``.
    """

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


class RunFormatter(logging.Formatter):
    """One line per record: time, level, logger, the run it belongs to, the message.

    ``2025-01-31 12:00:00,123 ERROR pgqrs_sqla [run 12 fulfil_order/charge] run 12 failed``.
    An exception is summarised on the same line (``ValueError: card declined``); its
    traceback follows only with ``tracebacks=True`` (the CLI's ``--debug``).
    """

    def __init__(self, *, tracebacks: bool = False) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(run)s %(message)s")
        self.tracebacks = tracebacks

    def format(self, record: logging.LogRecord) -> str:
        run_id, workflow, step = (getattr(record, n, None) for n in ("run_id", "workflow", "step"))
        where = f"{workflow}/{step}" if step is not None else workflow
        run = f" [run {run_id} {where}]" if run_id is not None else ""
        if self.tracebacks or not record.exc_info:
            record.run = run
            return super().format(record)
        # A copy without the exception, so another handler still gets its traceback.
        summary = logging.makeLogRecord(record.__dict__)
        summary.exc_info, summary.exc_text, summary.run = None, None, run
        error = record.exc_info[1]
        text = super().format(summary)
        if error is not None:
            detail = " ".join(str(error).split())
            text += f" ({type(error).__name__}{': ' + detail if detail else ''})"
        return text


def configure_cli_logging(*, debug: bool = False) -> logging.Handler:
    """The CLI worker's logging: every record (ours and the app's) on stderr, with the run context.

    Through :class:`RunFormatter`; INFO and up, or DEBUG with tracebacks.
    """
    handler = logging.StreamHandler()
    handler.addFilter(_FILTER)  # records of the app's own loggers get the run context too
    handler.setFormatter(RunFormatter(tracebacks=debug))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    return handler


def describe(error: BaseException) -> str:
    """``Type: message``, as warnings and health reports name an error."""
    return f"{type(error).__name__}: {error}"
