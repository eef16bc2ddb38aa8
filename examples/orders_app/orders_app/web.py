"""The HTTP API (Starlette). The worker runs inside the app's lifespan.

ORDERS_DATABASE_URL=sqlite:///orders.db uvicorn orders_app.web:app
"""

from __future__ import annotations

import os
import socket
from typing import Any

from sqlalchemy import exc, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import pgqrs_sqla as pgqrs
from pgqrs_sqla.contrib.asgi import worker_lifespan

from .models import Order
from .models import pgqrs as pgqrs_models
from .workflows import registry

DEFAULT_URL = "sqlite:///orders.db"


def create_app(database_url: str | None = None, *, worker_name: str | None = None) -> Starlette:
    url = pgqrs.store.normalise_url(
        database_url or os.environ.get("ORDERS_DATABASE_URL", DEFAULT_URL)
    )
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
        body = await request.json()
        async with sessions() as session, session.begin():
            order = await session.get(Order, int(request.path_params["order_id"]))
            if order is None or order.run_id is None:
                return JSONResponse({"error": "no such order"}, status_code=404)
            await session.execute(text("SELECT 1"))  # (your own writes would go here)
            await store.update_step(
                order.run_id,
                "warehouse_approval",
                pgqrs.StepStatus.SUCCESS,
                {"by": body["by"]},
                target=session,
            )
            await store.resume_run(order.run_id, target=session)
        return JSONResponse({"order_id": order.id, "approved_by": body["by"]})

    async def show(request: Request) -> JSONResponse:
        async with sessions() as session:
            order = await session.scalar(
                select(Order).where(Order.id == int(request.path_params["order_id"]))
            )
            if order is None:
                return JSONResponse({"error": "no such order"}, status_code=404)
            run = await store.get_run(order.run_id) if order.run_id else None
        body: dict[str, Any] = {
            "id": order.id,
            "sku": order.sku,
            "quantity": order.quantity,
            "status": order.status,
        }
        if run is not None:
            body["run"] = {
                "id": run.id,
                "status": run.status.value,
                "output": run.output,
                "error": run.error and run.error.get("message"),
                "steps": [
                    {"name": s.name, "status": s.status.value, "attempts": s.attempts}
                    for s in run.steps
                ],
            }
        return JSONResponse(body)

    async def health(request: Request) -> JSONResponse:
        h = request.state.pgqrs_worker.health()
        return JSONResponse(
            {"worker": h.name, "running": h.running, "in_flight": h.in_flight, "lag": h.lag}
        )

    app = Starlette(
        routes=[
            Route("/orders", place_order, methods=["POST"]),
            Route("/orders/{order_id:int}", show),
            Route("/orders/{order_id:int}/approve", approve, methods=["POST"]),
            Route("/health", health),
        ],
        lifespan=worker_lifespan(make_worker, grace=5),
    )
    return app


def app() -> Starlette:  # `uvicorn --factory orders_app.web:app`
    return create_app()
