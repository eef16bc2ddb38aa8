"""``dashboard(store, auth=...)``: the ASGI app, its routes and its static files."""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ...errors import ConfigurationError
from ...store import Store
from . import _actions as act, _pages as pages
from ._render import ActionHandler, Dashboard, action, page
from ._security import Access, AuthCheck, OperateCheck, SecurityHeaders, _NoAuth

STATIC = Path(__file__).resolve().parent / "static"


def dashboard(
    store: Store,
    *,
    auth: AuthCheck | _NoAuth | None = None,
    operate: OperateCheck | None = None,
    title: str = "pgqrs",
) -> Starlette:
    """The operator's dashboard for ``store``: an ASGI app to mount in your web app.

    ``app.mount("/jobs", dashboard(store, auth=check))``. Its links work under any mount path.

    Args:
        store: the Store whose runs, queues, workers and schedules it shows (and acts on).
        auth: ``auth(request)``, sync or async, returns the viewer's identity (any object:
            your user) or None to refuse: a page answers 401, an action 403. Required; pass
            :data:`NO_AUTH` to serve without a login, and then only clients on this machine
            (127.0.0.0/8, ::1) are served.
        operate: ``operate(identity)``, sync or async, True if that viewer may act (cancel,
            retry, resume, send an event, replay dead letters, pause a schedule). Default:
            nobody, the dashboard is read-only.
        title: the name in the page header.

    Raises:
        ConfigurationError: no ``auth`` was given, or it is not callable.
    """
    if auth is None:
        raise ConfigurationError(
            "dashboard() needs auth=: a function of the request returning the viewer (your "
            "user) or None to refuse, e.g. auth=lambda request: request.session.get('user'); "
            "pass auth=NO_AUTH (from pgqrs_sqla.contrib.dashboard) to serve clients on this "
            "machine only, without a login"
        )
    if not isinstance(auth, _NoAuth) and not callable(auth):
        raise ConfigurationError(f"dashboard(auth=) must be callable or NO_AUTH, got {auth!r}")
    if operate is not None and not callable(operate):
        raise ConfigurationError(f"dashboard(operate=) must be callable, got {operate!r}")
    if not isinstance(store, Store):
        raise ConfigurationError(f"dashboard() needs a pgqrs_sqla Store, got {store!r}")
    board = Dashboard(store, Access(auth, operate), title)

    def post(path: str, name: str, handler: ActionHandler) -> Route:
        return Route(path, action(board, name, handler), methods=["POST"], name=name)

    routes = [
        Route("/", page(board, pages.overview), name="overview"),
        Route("/runs", page(board, pages.runs), name="runs"),
        Route("/runs/{run_id:int}", page(board, pages.run), name="run"),
        Route("/workers", page(board, pages.workers), name="workers"),
        Route("/dead-letters", page(board, pages.dead_letters), name="dead_letters"),
        Route("/schedules", page(board, pages.schedules), name="schedules"),
        post("/runs/{run_id:int}/cancel", "run_cancel", act.cancel),
        post("/runs/{run_id:int}/retry", "run_retry", act.retry),
        post("/runs/{run_id:int}/resume", "run_resume", act.resume),
        post("/runs/{run_id:int}/event", "run_event", act.send_event),
        post("/runs/{run_id:int}/step", "run_step", act.record_step),
        post("/dead-letters/{queue}/replay", "dead_replay", act.replay),
        post("/schedules/{name}/pause", "schedule_pause", act.pause_schedule),
        post("/schedules/{name}/resume", "schedule_resume", act.resume_schedule),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(SecurityHeaders)])
    board.app = app
    return app
