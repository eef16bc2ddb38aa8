"""What every page and action shares: settings, templates, and the checks before a handler.

The wrappers ask who is asking (``auth``), whether they may act (``operate``), and for a
POST whether it came from our own page (origin and CSRF token).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import jinja2
from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from ...errors import PgqrsError, RunNotFound
from ...store import Store
from ._security import (
    CSRF_COOKIE,
    CSRF_FIELD,
    Access,
    Refused,
    check_csrf,
    check_origin,
    csrf_token,
    mount_path,
    set_csrf_cookie,
)

#: every action is logged here at INFO, with who did it
log = logging.getLogger("pgqrs_sqla.dashboard")


def _json(value: Any) -> str:
    """A stored JSON value, pretty-printed for a ``<pre>`` (escaped by the template)."""
    if value is None:
        return ""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def _when(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def environment() -> jinja2.Environment:
    """The templates of the package, every ``{{ value }}`` HTML-escaped."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("pgqrs_sqla.contrib.dashboard", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["json"] = _json
    env.filters["when"] = _when
    env.filters["age"] = _age
    return env


@dataclass
class Dashboard:
    """One dashboard's settings, shared by its handlers."""

    store: Store
    access: Access
    title: str
    env: jinja2.Environment = field(default_factory=environment)
    app: Starlette | None = None

    def url(
        self,
        request: Request,
        route: str,
        query: Mapping[str, Any] | None = None,
        /,
        **params: Any,
    ) -> str:
        """The path of route ``route`` under wherever the dashboard is mounted."""
        assert self.app is not None
        path = str(self.app.url_path_for(route, **params))
        query = {k: v for k, v in (query or {}).items() if v not in (None, "")}
        return mount_path(request) + path + (f"?{urlencode(query)}" if query else "")

    def render(
        self,
        request: Request,
        template: str,
        context: Mapping[str, Any],
        *,
        status: int = 200,
        viewer: Any = None,
        can_operate: bool = False,
    ) -> Response:
        """``template`` rendered with ``context``, the CSRF cookie set if it is new."""
        token, new = csrf_token(request)

        def url(route: str, query: Mapping[str, Any] | None = None, /, **params: Any) -> str:
            return self.url(request, route, query, **params)

        flash, level = read_flash(request)
        html = self.env.get_template(template).render(
            {
                **context,
                "title": self.title,
                "viewer": viewer,
                "can_operate": can_operate,
                "csrf_field": CSRF_FIELD,
                "csrf_token": token,
                "flash": flash,
                "flash_level": level,
                "url": url,
                "static": lambda path: url("static", path=path),
            }
        )
        response = HTMLResponse(html, status_code=status)
        response.headers["cache-control"] = "no-store"
        if new:
            set_csrf_cookie(response, request, token)
        return response

    def refused(self, request: Request, status: int, reason: str) -> Response:
        """An error page (401, 403, 404, 400...) that says why."""
        return self.render(
            request, "error.html", {"status": status, "reason": reason}, status=status
        )


Page = Callable[[Dashboard, Request], Awaitable[tuple[str, dict[str, Any]]]]
ActionHandler = Callable[[Dashboard, Request, FormData, Any], Awaitable[tuple[str, str]]]


class BadInput(Exception):
    """A request whose parameters or form make no sense: 400 with this message."""


def page(board: Dashboard, handler: Page) -> Callable[[Request], Awaitable[Response]]:
    """``handler`` behind ``auth``: it returns a template and its context."""

    async def endpoint(request: Request) -> Response:
        try:
            viewer = await board.access.viewer(request)
            can_operate = await board.access.may_operate(viewer)
            template, context = await handler(board, request)
        except Refused as refused:
            return board.refused(request, refused.status, refused.reason)
        except BadInput as error:
            return board.refused(request, 400, str(error))
        except RunNotFound as error:
            return board.refused(request, 404, str(error))
        except PgqrsError as error:
            return board.refused(request, 400, str(error))
        return board.render(request, template, context, viewer=viewer, can_operate=can_operate)

    return endpoint


def action(
    board: Dashboard, name: str, handler: ActionHandler
) -> Callable[[Request], Awaitable[Response]]:
    """``handler`` behind the POST checks: same origin, ``auth``, ``operate``, the CSRF token.

    It returns where to go next and what to say there (Post/Redirect/Get); a refused store
    call (an illegal transition, a run that is gone) goes back with the error said instead.
    """

    async def endpoint(request: Request) -> Response:
        try:
            check_origin(request)
            viewer = await board.access.viewer(request, acting=True)
            if not await board.access.may_operate(viewer):
                raise Refused(403, "you may look but not act here (no `operate` permission)")
            form = await request.form()
            check_csrf(request, form.get(CSRF_FIELD))
        except Refused as refused:
            log.warning("dashboard %s refused (%s): %s", name, refused.status, refused.reason)
            return board.refused(request, refused.status, refused.reason)
        target = dict(request.path_params)
        try:
            back, message = await handler(board, request, form, viewer)
        except BadInput as error:
            return board.refused(request, 400, str(error))
        except PgqrsError as error:
            log.info("dashboard %s %s by %s failed: %s", name, target, viewer, error)
            return _redirect(board, request, name, target, str(error), error=True)
        log.info("dashboard %s %s by %s: %s", name, target, viewer, message)
        return RedirectResponse(_with_flash(request, back, message), status_code=303)

    return endpoint


def _flash_mac(request: Request, message: str, level: str) -> str:
    """The flash message's signature, keyed by this browser's CSRF cookie.

    Only our own redirect after an action can show a message: a link someone else made
    (``?flash=Your session expired, call ...``) shows nothing.
    """
    key = request.cookies.get(CSRF_COOKIE, "")
    if not key:
        return ""
    mac = hmac.new(key.encode(), f"{level}:{message}".encode(), hashlib.sha256)
    return mac.hexdigest()[:32]


def read_flash(request: Request) -> tuple[str, str]:
    """The flash message of the query string and its level, if our signature is on it."""
    message = request.query_params.get("flash", "")
    level = "error" if request.query_params.get("level") == "error" else "ok"
    signed = request.query_params.get("sig", "")
    expected = _flash_mac(request, message, level) if message else ""
    if not expected or not hmac.compare_digest(signed.encode(), expected.encode()):
        return "", "ok"
    return message, level


def _with_flash(request: Request, url: str, message: str, *, error: bool = False) -> str:
    message = message[:500]
    level = "error" if error else "ok"
    query = {"flash": message, "level": level, "sig": _flash_mac(request, message, level)}
    return url + ("&" if "?" in url else "?") + urlencode(query)


def _redirect(
    board: Dashboard,
    request: Request,
    name: str,
    target: dict[str, Any],
    message: str,
    *,
    error: bool,
) -> Response:
    if "run_id" in target:
        back = board.url(request, "run", run_id=target["run_id"])
    elif name.startswith("schedule"):
        back = board.url(request, "schedules")
    elif name.startswith("dead"):
        back = board.url(request, "dead_letters")
    else:
        back = board.url(request, "overview")
    return RedirectResponse(_with_flash(request, back, message, error=error), status_code=303)
