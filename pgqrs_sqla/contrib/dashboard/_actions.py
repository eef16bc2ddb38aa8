"""The actions (POST): each one a Store method the CLI also calls, nothing written here.

Each handler reads its form, calls the Store, and returns where to go next and what to say
there; ``_render.action`` has already checked the origin, ``auth``, ``operate`` and the CSRF
token, and logs the action with who did it.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request

from ...models import StepStatus
from ._render import BadInput, Dashboard

#: a JSON textarea's size limit (the Store checks payloads against its own limit too)
MAX_JSON_CHARS = 1_000_000


def _run_id(request: Request) -> int:
    return int(request.path_params["run_id"])


def _text(form: FormData, name: str, what: str) -> str:
    value = form.get(name)
    if not isinstance(value, str) or not value.strip():
        raise BadInput(f"{what} is missing: fill in the {name!r} field")
    return value.strip()


def parse_json(form: FormData, name: str) -> Any:
    """The JSON value of textarea ``name`` (empty: null); :class:`BadInput` naming the error."""
    raw = form.get(name)
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    if not isinstance(raw, str) or len(raw) > MAX_JSON_CHARS:
        raise BadInput(f"{name} must be JSON text of at most {MAX_JSON_CHARS} characters")
    try:
        return json.loads(raw)
    except json.JSONDecodeError as error:
        raise BadInput(
            f"{name} is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}; "
            "nothing was changed"
        ) from None


async def cancel(
    board: Dashboard, request: Request, form: FormData, viewer: Any
) -> tuple[str, str]:
    """``store.cancel_run``: a queued or paused run ends now, a running one at its next step."""
    run_id = _run_id(request)
    info = await board.store.cancel_run(run_id)
    later = " (it stops at its next step)" if not info.status.terminal else ""
    return board.url(request, "run", run_id=run_id), f"run {run_id}: {info.status.value}{later}"


async def retry(board: Dashboard, request: Request, form: FormData, viewer: Any) -> tuple[str, str]:
    """``store.retry_run``: an ERROR or CANCELLED run goes back on its queue."""
    run_id = _run_id(request)
    await board.store.retry_run(run_id)
    return board.url(request, "run", run_id=run_id), f"run {run_id} queued again"


async def resume(
    board: Dashboard, request: Request, form: FormData, viewer: Any
) -> tuple[str, str]:
    """``store.resume_run``: a paused run's message is visible now."""
    run_id = _run_id(request)
    await board.store.resume_run(run_id)
    return board.url(request, "run", run_id=run_id), f"run {run_id} resumed"


async def send_event(
    board: Dashboard, request: Request, form: FormData, viewer: Any
) -> tuple[str, str]:
    """``store.send_event`` with the form's name and JSON payload."""
    run_id = _run_id(request)
    name = _text(form, "name", "the event's name")
    payload = parse_json(form, "payload")
    await board.store.send_event(run_id, name, payload)
    return board.url(request, "run", run_id=run_id), f"event {name!r} sent to run {run_id}"


async def record_step(
    board: Dashboard, request: Request, form: FormData, viewer: Any
) -> tuple[str, str]:
    """``store.update_step`` (SUCCESS with the form's JSON value), then ``store.resume_run``.

    What ``pgqrs-sqla``'s users do for a step that paused for a person's answer.
    """
    run_id = _run_id(request)
    step = _text(form, "step", "the step's name")
    value = parse_json(form, "value")
    await board.store.update_step(run_id, step, StepStatus.SUCCESS, value)
    await board.store.resume_run(run_id)
    return (
        board.url(request, "run", run_id=run_id),
        f"step {step!r} of run {run_id} recorded, run resumed",
    )


async def replay(
    board: Dashboard, request: Request, form: FormData, viewer: Any
) -> tuple[str, str]:
    """``store.replay_dead_letters``: all of a queue's dead letters, or the one in the form."""
    queue = str(request.path_params["queue"])
    raw = form.get("message_id")
    ids = None
    if isinstance(raw, str) and raw.strip():
        try:
            ids = [int(raw)]
        except ValueError:
            raise BadInput(f"message_id must be a whole number, got {raw!r}") from None
    done = await board.store.replay_dead_letters(queue, ids)
    return (
        board.url(request, "dead_letters"),
        f"{len(done)} dead letter(s) of {queue!r} replayed",
    )


async def pause_schedule(
    board: Dashboard, request: Request, form: FormData, viewer: Any
) -> tuple[str, str]:
    """``store.pause_schedule``."""
    name = str(request.path_params["name"])
    await board.store.pause_schedule(name)
    return board.url(request, "schedules"), f"schedule {name!r} paused"


async def resume_schedule(
    board: Dashboard, request: Request, form: FormData, viewer: Any
) -> tuple[str, str]:
    """``store.resume_schedule``."""
    name = str(request.path_params["name"])
    await board.store.resume_schedule(name)
    return board.url(request, "schedules"), f"schedule {name!r} resumed"
