"""The HTTP API (Starlette). The worker runs inside the app's lifespan, unless
``ORDERS_EMBEDDED_WORKER=0`` (or ``create_app(embedded_worker=False)``): then a separate
``pgqrs-sqla worker orders_app.workflows:registry`` process runs the workflows.

ORDERS_DATABASE_URL=sqlite:///orders.db uvicorn --factory orders_app.web:app

With ``ORDERS_STAFF=ada:secret:operator,grace:other:viewer`` the operator's dashboard is
mounted at /jobs, behind HTTP Basic auth for those staff members (operators may act,
viewers only look); it needs the dashboard extra (``pip install 'pgqrs-sqla[dashboard]'``).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import json
import os
import socket
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import exc, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Mount, Route

import pgqrs_sqla as pgqrs
from pgqrs_sqla.contrib.asgi import running_worker

from .models import Order, pgqrs as pgqrs_models
from .workflows import registry

DEFAULT_URL = "sqlite:///orders.db"


class NotAwaitingApproval(Exception):
    """Raised in the approval's transaction, to roll it back, event included."""


def _error(message: str, status_code: int, **detail: Any) -> JSONResponse:
    return JSONResponse({"error": message, **detail}, status_code=status_code)


def _run_json(run: pgqrs.RunInfo) -> dict[str, Any]:
    return {
        "id": run.id,
        "status": run.status.value,
        "output": run.output,
        "error": run.error and run.error.get("message"),
        "steps": [
            {"name": s.name, "status": s.status.value, "attempts": s.attempts} for s in run.steps
        ],
    }


def staff_from(setting: str) -> dict[str, tuple[str, str]]:
    """``ORDERS_STAFF`` (``name:password:role,...``) as {name: (password, role)}."""
    staff = {}
    for entry in filter(None, (e.strip() for e in setting.split(","))):
        name, _, rest = entry.partition(":")
        password, _, role = rest.rpartition(":")
        if not (name and password and role in ("operator", "viewer")):
            raise ValueError(f"ORDERS_STAFF entry {entry!r} is not name:password:operator|viewer")
        staff[name] = (password, role)
    return staff


def jobs_dashboard(store: pgqrs.Store, staff: dict[str, tuple[str, str]]) -> Starlette:
    """The operator's dashboard for ``staff``, who sign in with HTTP Basic auth."""
    from pgqrs_sqla.contrib.dashboard import dashboard

    def staff_member(request: Request) -> str:
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "basic":
            try:
                name, _, password = base64.b64decode(encoded).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                name = password = ""
            known = staff.get(name)
            if known is not None and hmac.compare_digest(known[0], password):
                return name
        # the browser asks for a name and password
        raise HTTPException(401, "staff only", {"WWW-Authenticate": 'Basic realm="orders"'})

    def operator(name: str) -> bool:
        return staff[name][1] == "operator"

    return dashboard(store, auth=staff_member, operate=operator, title="orders")


def create_app(
    database_url: str | None = None,
    *,
    worker_name: str | None = None,
    embedded_worker: bool | None = None,
    grace: float = 5.0,
) -> Starlette:
    url = pgqrs.store.normalise_url(
        database_url or os.environ.get("ORDERS_DATABASE_URL", DEFAULT_URL)
    )
    if embedded_worker is None:
        embedded_worker = os.environ.get("ORDERS_EMBEDDED_WORKER", "1") != "0"
    engine: AsyncEngine = create_async_engine(url)
    store = pgqrs.Store(engine, models=pgqrs_models)
    sessions = async_sessionmaker(engine, expire_on_commit=False)

    async def make_worker() -> pgqrs.Worker:
        name = worker_name or f"web-{socket.gethostname()}-{os.getpid()}"
        return await registry.create_worker(
            store, name, own_pool=True, concurrency=4, poll_interval=0.2
        )

    async def place_order(request: Request) -> JSONResponse:
        body = await request.json()
        try:
            async with sessions() as session, session.begin():
                # The run and the order commit together, or neither does.
                run_id = (
                    await pgqrs.workflow("fulfil_order", models=pgqrs_models)
                    .trigger(
                        {
                            "customer_id": body["customer_id"],
                            "sku": body["sku"],
                            "quantity": body["quantity"],
                            "flaky_payment": body.get("flaky_payment", False),
                        }
                    )
                    .execute(session)
                )
                order = Order(
                    customer_id=body["customer_id"],
                    sku=body["sku"],
                    quantity=body["quantity"],
                    run_id=run_id,
                )
                session.add(order)
                await session.flush()
        except exc.IntegrityError as error:
            return JSONResponse(
                {"error": "invalid order", "detail": str(error.orig)}, status_code=422
            )
        return JSONResponse({"order_id": order.id, "run_id": run_id}, status_code=201)

    async def approve(request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return _error("the body is not JSON", 422)
        by = body.get("by") if isinstance(body, dict) else None
        if not isinstance(by, str) or not by:
            return _error('"by" (who approves, a string) is required', 422)
        try:
            async with sessions() as session, session.begin():
                order = await session.get(Order, int(request.path_params["order_id"]))
                if order is None or order.run_id is None:
                    return _error("no such order", 404)
                # The event and the order's new status commit together, or neither does: an
                # approval this request refuses (or fails to record) is never seen by the run.
                await store.send_event(
                    order.run_id, "warehouse_approved", {"by": by}, target=session
                )
                approved = await session.execute(
                    update(Order)
                    .where(Order.id == order.id, Order.status == "reserved")
                    .values(status="approved")
                )
                if approved.rowcount != 1:  # type: ignore[attr-defined]
                    raise NotAwaitingApproval(f"the order is {order.status}")
        except (pgqrs.IllegalTransition, NotAwaitingApproval) as error:
            # Not reserved yet, approved already, shipped, or its run is over.
            return _error("the order is not waiting for approval", 409, detail=str(error))
        return JSONResponse({"order_id": order.id, "approved_by": by})

    async def show(request: Request) -> JSONResponse:
        async with sessions() as session:
            order = await session.scalar(
                select(Order).where(Order.id == int(request.path_params["order_id"]))
            )
            if order is None:
                return JSONResponse({"error": "no such order"}, status_code=404)
            run = await store.get_run(order.run_id) if order.run_id else None
            # The payment is a child run of the order's (collect_payment).
            children = [await store.get_run(c) for c in run.children] if run else []
        body: dict[str, Any] = {
            "id": order.id,
            "sku": order.sku,
            "quantity": order.quantity,
            "status": order.status,
        }
        if run is not None:
            body["run"] = {
                **_run_json(run),
                "children": [
                    {"workflow": child.workflow, **_run_json(child)} for child in children
                ],
            }
        return JSONResponse(body)

    async def reports(request: Request) -> JSONResponse:
        """The nightly reports, newest first, and when the next one is due."""
        schedule = await store.get_schedule("nightly-report")
        runs = await store.list_runs(workflow="nightly_report", limit=30)
        return JSONResponse(
            {
                "next": schedule.next_tick_at.isoformat() if schedule.next_tick_at else None,
                "reports": [
                    {"run_id": r.id, "status": r.status.value, "output": r.output} for r in runs
                ],
            }
        )

    async def health(request: Request) -> JSONResponse:
        if request.state.pgqrs_worker is None:  # the workflows run in a worker process
            return JSONResponse({"worker": None})
        h = request.state.pgqrs_worker.health()
        return JSONResponse(
            {"worker": h.name, "running": h.running, "in_flight": h.in_flight, "lag": h.lag}
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        try:
            if not embedded_worker:
                yield {"pgqrs_worker": None}
                return
            async with running_worker(make_worker, grace=grace) as worker:
                yield {"pgqrs_worker": worker}
        finally:
            await engine.dispose()  # the app made this engine: closing it is the app's job

    routes: list[BaseRoute] = [
        Route("/orders", place_order, methods=["POST"]),
        Route("/orders/{order_id:int}", show),
        Route("/orders/{order_id:int}/approve", approve, methods=["POST"]),
        Route("/reports", reports),
        Route("/health", health),
    ]
    staff = staff_from(os.environ.get("ORDERS_STAFF", ""))
    if staff:
        routes.append(Mount("/jobs", jobs_dashboard(store, staff)))
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.engine = engine
    return app


def app() -> Starlette:  # `uvicorn --factory orders_app.web:app`
    return create_app()
