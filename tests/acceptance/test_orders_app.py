"""examples/orders_app over real HTTP (uvicorn in a subprocess), on PostgreSQL and SQLite."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import create_engine, inspect, select, text, update
from sqlalchemy.engine import make_url

import pgqrs_sqla as pgqrs
from pgqrs_sqla.dialects import aware
from tests._wait import alive, eventually_sync
from tests.conftest import _free_port as free_port

APP = Path(__file__).resolve().parents[2] / "examples" / "orders_app"


def sync_url(url: str) -> str:
    parsed = make_url(url)
    driver = "postgresql+psycopg" if parsed.get_backend_name() == "postgresql" else "sqlite"
    return parsed.set(drivername=driver).render_as_string(hide_password=False)


def sql(url: str, statement: str) -> list[Any]:
    engine = create_engine(sync_url(url))
    try:
        with engine.begin() as conn:
            result = conn.execute(text(statement))
            return list(result.all()) if result.returns_rows else []
    finally:
        engine.dispose()


class Server:
    def __init__(self, url: str) -> None:
        self.url = url
        self.proc: subprocess.Popen[bytes] | None = None
        self.base = ""
        self.name = ""

    def start(self, name: str, *args: str, **env: str) -> None:
        self.name = name
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        env = {**os.environ, "ORDERS_DATABASE_URL": self.url, "PYTHONPATH": str(APP), **env}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "orders_app", "--port", str(port), "--worker-name", name, *args],
            cwd=APP,
            env=env,
        )
        proc = self.proc

        def answers() -> bool:
            alive(proc)
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{self.base}/health", timeout=1).status_code == 200
            return False

        eventually_sync(answers, what="the app answers /health")

    def stop(self, sig: int = signal.SIGTERM) -> bool:
        """Stop the app; True if it shut down gracefully (its worker deregistered)."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        code = self.proc.wait(30)
        # uvicorn re-raises the signal after its graceful shutdown, hence -SIGTERM
        assert code in (0, -signal.SIGTERM, -signal.SIGKILL)
        status = sql(
            self.url, f"SELECT status FROM pgqrs_workers WHERE worker_name = '{self.name}'"
        )
        return code != -signal.SIGKILL and status == [("stopped",)]

    def get(self, path: str) -> Any:
        return httpx.get(self.base + path, timeout=10).json()

    def post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return httpx.post(self.base + path, json=body, timeout=10)

    def until(self, path: str, check: Callable[[Any], bool], timeout: float = 30) -> Any:
        last: list[Any] = []

        def checked() -> Any:
            last[:] = [self.get(path)]
            return last[0] if check(last[0]) else None

        return eventually_sync(checked, timeout=timeout, what=f"{path} passes {check.__name__}")


@pytest.fixture
def server(empty_db_url: str) -> Iterator[Server]:
    env = {**os.environ, "ORDERS_DATABASE_URL": empty_db_url}
    subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"], cwd=APP, env=env, check=True
    )
    sql(empty_db_url, "INSERT INTO customers (id, name) VALUES (1, 'Ada')")
    sql(empty_db_url, "INSERT INTO stock (sku, quantity) VALUES ('book', 10)")
    s = Server(empty_db_url)
    yield s
    if s.proc is not None and s.proc.poll() is None:
        s.stop(signal.SIGKILL)


def paused(order: Any) -> bool:
    """The order's run waits for the warehouse's approval (not for its payment child)."""
    run = order.get("run", {})
    waits = [s for s in run.get("steps", []) if s["name"].startswith("warehouse_approved")]
    return run.get("status") == "PAUSED" and bool(waits) and waits[-1]["status"] == "PAUSED"


def shipped(order: Any) -> bool:
    return order["status"] == "shipped" and order["run"]["status"] == "SUCCESS"


def payment_child(server: Server, order: Any) -> Any:
    """The order's one child run, a SUCCESS collect_payment run whose parent is the order's
    run (checked in the database and in the order's JSON); that child's JSON."""
    run_id = order["run"]["id"]
    others = sql(
        server.url,
        "SELECT r.id, w.workflow_name, r.status, r.parent_run_id FROM pgqrs_workflow_runs r "
        f"JOIN pgqrs_workflows w ON w.id = r.workflow_id WHERE r.id <> {run_id}",
    )
    assert len(others) == 1, others  # one payment child, whatever the replays and restarts
    child_id, workflow, status, parent = others[0]
    assert (workflow, status, parent) == ("collect_payment", "SUCCESS", run_id)
    (child,) = order["run"]["children"]
    assert (child["id"], child["workflow"], child["status"]) == (child_id, workflow, status)
    assert order["run"]["output"]["payment"] == child["output"]["reference"] == f"pay-{run_id}"
    return child


def test_order_is_fulfilled_with_a_retried_payment_and_an_approval(server: Server) -> None:
    server.start("web-1")
    created = server.post(
        "/orders", {"customer_id": 1, "sku": "book", "quantity": 3, "flaky_payment": True}
    )
    assert created.status_code == 201
    order_id = created.json()["order_id"]
    order = server.until(f"/orders/{order_id}", paused)
    assert order["status"] == "reserved"
    steps = {s["name"]: (s["status"], s["attempts"]) for s in order["run"]["steps"]}
    assert steps["reserve_stock"] == ("SUCCESS", 1)
    assert steps["charge_payment"] == ("SUCCESS", 1)  # the payment child, started once
    assert steps["charge_payment:result"] == ("SUCCESS", 1)  # and its result, waited for
    assert steps["warehouse_approved"] == ("PAUSED", 1)  # waiting for the event
    (child,) = order["run"]["children"]
    # one transient failure of the gateway, retried by the child's retry policy
    assert child["steps"] == [{"name": "charge", "status": "SUCCESS", "attempts": 2}]

    approved = server.post(f"/orders/{order_id}/approve", {"by": "warehouse-7"})
    assert approved.status_code == 200
    order = server.until(f"/orders/{order_id}", shipped)
    assert order["run"]["output"]["approved_by"] == "warehouse-7"
    assert order["run"]["output"]["reminders"] == 0
    payment_child(server, order)
    assert sql(server.url, "SELECT quantity FROM stock") == [(7,)]
    assert events(server.url) == [("warehouse_approved", "warehouse_approved")]  # consumed
    assert server.stop()


def events(url: str) -> list[Any]:
    """The events sent to runs: (name, the wait that consumed it, or None)."""
    return sql(url, "SELECT event_name, consumed_by FROM pgqrs_workflow_events ORDER BY id")


def test_an_approval_rolled_back_with_its_request_is_never_seen(server: Server) -> None:
    """The webhook sends the approval event, then marks the order approved, in the request's
    transaction. An order whose stock is not reserved yet is refused there (409) after the
    event was written: the event rolls back with the request, so the run, once it gets to
    its wait, waits on, and only the approval that committed ships the order."""
    server.start("web-1", "--no-worker")  # nothing runs the workflow: the order stays placed
    order_id = server.post("/orders", {"customer_id": 1, "sku": "book", "quantity": 1}).json()[
        "order_id"
    ]
    early = server.post(f"/orders/{order_id}/approve", {"by": "too-early"})
    assert early.status_code == 409
    assert early.json()["error"] == "the order is not waiting for approval"
    assert events(server.url) == []
    server.stop()

    server.start("web-1")  # now with its worker
    order = server.until(f"/orders/{order_id}", paused)
    steps = {s["name"]: s["status"] for s in order["run"]["steps"]}
    assert steps["warehouse_approved"] == "PAUSED"  # no event was there to take
    assert order["status"] == "reserved"
    assert server.post(f"/orders/{order_id}/approve", {"by": "day-shift"}).status_code == 200
    order = server.until(f"/orders/{order_id}", shipped)
    assert order["run"]["output"]["approved_by"] == "day-shift"
    assert events(server.url) == [("warehouse_approved", "warehouse_approved")]
    assert server.stop()


def test_the_warehouse_is_reminded_while_the_order_waits(server: Server) -> None:
    """Each ORDERS_REMINDER_AFTER without an approval, the wait times out (EventTimeout),
    a reminder is recorded as a step, and the run waits again; the approval still ships."""
    server.start("web-1", ORDERS_REMINDER_AFTER="0.3")
    order_id = server.post("/orders", {"customer_id": 1, "sku": "book", "quantity": 1}).json()[
        "order_id"
    ]

    def reminded_twice(order: Any) -> bool:
        names = {s["name"] for s in order.get("run", {}).get("steps", [])}
        return "remind_warehouse_2" in names

    server.until(f"/orders/{order_id}", reminded_twice)
    assert server.post(f"/orders/{order_id}/approve", {"by": "late-shift"}).status_code == 200
    order = server.until(f"/orders/{order_id}", shipped)
    output = order["run"]["output"]
    assert output["approved_by"] == "late-shift" and output["reminders"] >= 2
    steps = {s["name"]: (s["status"], s["attempts"]) for s in order["run"]["steps"]}
    reminders = {name: done for name, done in steps.items() if name.startswith("remind_")}
    # One recorded reminder per timed-out wait, each sent once.
    assert reminders == {
        f"remind_warehouse_{n}": ("SUCCESS", 1) for n in range(1, output["reminders"] + 1)
    }
    waits = [name for name in steps if name.startswith("warehouse_approved")]
    assert len(waits) == output["reminders"] + 1  # the timed-out waits, and the approved one
    assert {steps[name][0] for name in waits} == {"SUCCESS"}
    assert events(server.url) == [("warehouse_approved", waits[-1])]
    assert server.stop()


def test_a_failing_insert_after_the_trigger_rolls_back_both(server: Server) -> None:
    server.start("web-1")
    bad = server.post(
        "/orders", {"customer_id": 1, "sku": "book", "quantity": 0}
    )  # CHECK quantity > 0
    assert bad.status_code == 422
    unknown = server.post(
        "/orders", {"customer_id": 99, "sku": "book", "quantity": 1}
    )  # no such customer
    assert unknown.status_code == 422
    for table in ("orders", "pgqrs_workflow_runs", "pgqrs_messages"):
        assert sql(server.url, f"SELECT count(*) FROM {table}") == [(0,)]
    assert server.stop()


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_the_app_stops_mid_workflow_and_a_restart_finishes_the_order(
    server: Server, how: int
) -> None:
    server.start("web-1")
    order_id = server.post("/orders", {"customer_id": 1, "sku": "book", "quantity": 2}).json()[
        "order_id"
    ]
    server.until(f"/orders/{order_id}", paused)
    server.stop(how)

    # The same name again: after a crash too, the restarted app takes its worker name back
    # at once (same host, and the old process is gone), as after a clean stop.
    server.start("web-1")
    assert server.post(f"/orders/{order_id}/approve", {"by": "night-shift"}).status_code == 200
    order = server.until(f"/orders/{order_id}", shipped)
    assert [s["attempts"] for s in order["run"]["steps"] if s["name"] == "reserve_stock"] == [1]
    assert sql(server.url, "SELECT quantity FROM stock") == [(8,)]  # reserved exactly once
    payment_child(server, order)
    assert server.stop()


def _move_nightly_report_back(url: str, days: int) -> datetime:
    """The app was down ``days`` nights: its schedule's next tick moved that far back (as a
    worker that last ran then would have left it); returns the tick it held."""
    schedules = pgqrs.pgqrs_models().tables.schedules  # the app's table, by its name
    engine = create_engine(sync_url(url))
    try:
        with engine.begin() as conn:
            where = schedules.c.schedule_name == "nightly-report"
            held = conn.scalar(select(schedules.c.next_tick_at).where(where))
            assert held is not None
            conn.execute(
                update(schedules).where(where).values(next_tick_at=held - timedelta(days=days))
            )
    finally:
        engine.dispose()
    return aware(held)


def test_the_nightly_report_missed_while_the_app_was_down_runs_once_when_it_returns(
    server: Server,
) -> None:
    server.start("web-1")
    order_id = server.post("/orders", {"customer_id": 1, "sku": "book", "quantity": 2}).json()[
        "order_id"
    ]
    server.until(f"/orders/{order_id}", paused)
    # Declared in code, reconciled when the app's worker started: next due at 02:00 Berlin.
    first = server.get("/reports")
    assert first["reports"] == []
    due = datetime.fromisoformat(first["next"]).astimezone(ZoneInfo("Europe/Berlin"))
    assert (due.hour, due.minute) == (2, 0) and due > datetime.now(UTC)
    assert server.stop()

    held = _move_nightly_report_back(server.url, days=2)
    server.start("web-1")  # catch_up="latest": the two missed nights give one report

    def reported(body: Any) -> bool:
        return any(r["status"] == "SUCCESS" for r in body["reports"])

    body = server.until("/reports", reported)
    [report] = body["reports"]
    assert report["output"] == {
        "for": (held - timedelta(days=1)).isoformat(),  # the latest missed night
        "orders": {"reserved": 1},
    }
    assert datetime.fromisoformat(body["next"]) == held  # tonight's, as before
    assert server.stop()


def test_the_apps_alembic_history_builds_what_its_models_describe(empty_db_url: str) -> None:
    """``alembic upgrade head`` (0001 the app, 0002 the pgqrs tables, 0003 the workers'
    pid and heartbeat interval, 0004 the workflows' served_at, the workers' queues and the
    steps' next_delivery, 0005 pgqrs_workflow_events and the steps' kind, wake_at and
    wait_for, 0006 the runs' parent_run_id, awaited_by and deadline_at and the workflows'
    timeout, 0007 the workflows' and queues' retentions, 0009 the runs' finished_at index) leaves nothing for autogenerate: models and history agree. The history
    downgrades to nothing and builds again."""
    env = {**os.environ, "ORDERS_DATABASE_URL": empty_db_url}

    def alembic(*args: str) -> None:
        subprocess.run([sys.executable, "-m", "alembic", *args], cwd=APP, env=env, check=True)

    alembic("upgrade", "head")
    check = subprocess.run(
        [sys.executable, "-m", "alembic", "check"],
        cwd=APP,
        env=env,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    alembic("downgrade", "base")
    engine = create_engine(sync_url(empty_db_url))
    try:
        assert inspect(engine).get_table_names() == ["alembic_version"]
    finally:
        engine.dispose()
    alembic("upgrade", "head")
    alembic("check")


def test_the_webhook_answers_bad_approvals_with_json_errors(server: Server) -> None:
    server.start("web-1")
    order_id = server.post("/orders", {"customer_id": 1, "sku": "book", "quantity": 1}).json()[
        "order_id"
    ]
    # not yet waiting for approval, or waiting: either way a body without "by" is refused
    no_by = server.post(f"/orders/{order_id}/approve", {})
    assert no_by.status_code == 422
    assert no_by.json()["error"] == '"by" (who approves, a string) is required'
    not_json = httpx.post(f"{server.base}/orders/{order_id}/approve", content=b"{", timeout=10)
    assert (not_json.status_code, not_json.json()["error"]) == (422, "the body is not JSON")
    assert server.post("/orders/999/approve", {"by": "x"}).status_code == 404
    server.until(f"/orders/{order_id}", paused)
    assert server.post(f"/orders/{order_id}/approve", {"by": "day-shift"}).status_code == 200
    server.until(f"/orders/{order_id}", shipped)
    again = server.post(f"/orders/{order_id}/approve", {"by": "night-shift"})
    assert again.status_code == 409
    assert again.json()["error"] == "the order is not waiting for approval"
    order = server.get(f"/orders/{order_id}")
    assert order["run"]["output"]["approved_by"] == "day-shift"  # unchanged
    assert server.stop()


def test_sigterm_while_a_step_runs_then_a_restart_finishes_the_order(
    server: Server, tmp_path: Path
) -> None:
    """The app gets SIGTERM while the payment child's ``charge`` is in flight (a gateway the
    test holds, never answering): after the grace period the worker releases the child run,
    and the restarted app takes it at once (well before the 30 s lease) and charges; the
    order's run, waiting for its child meanwhile, finishes. The gateway answers one call, and
    gets no other: the order is charged exactly once; each transactional step ran once."""
    gate_path = os.path.join(tempfile.mkdtemp(prefix="gate-"), "s")
    with socket.socket(socket.AF_UNIX) as gate:
        gate.bind(gate_path)
        gate.listen()
        gate.settimeout(30)
        server.start("web-1", "--grace", "0.5", ORDERS_PAYMENT_GATE=gate_path)
        order_id = server.post("/orders", {"customer_id": 1, "sku": "book", "quantity": 2}).json()[
            "order_id"
        ]
        held, _ = gate.accept()  # the payment child's charge is running, and waits on us
        with held:

            def waits_for_its_child(order: Any) -> bool:
                steps = [(s["name"], s["status"]) for s in order["run"]["steps"]]
                return steps == [
                    ("reserve_stock", "SUCCESS"),
                    ("charge_payment", "SUCCESS"),  # the child started
                    ("charge_payment:result", "PAUSED"),  # the order's run waits for it
                ]

            order = server.until(f"/orders/{order_id}", waits_for_its_child)
            assert order["run"]["status"] == "PAUSED"  # holding no worker
            (child,) = order["run"]["children"]
            # the child's charge is not recorded: it is in flight
            assert (child["workflow"], child["status"], child["steps"]) == (
                "collect_payment",
                "RUNNING",
                [],
            )
            assert server.stop()  # graceful: the in-flight child run was released, not abandoned
        started = time.monotonic()
        server.start("web-1", ORDERS_PAYMENT_GATE=gate_path)
        gate.settimeout(20)
        answered, _ = gate.accept()  # the child's charge again, in the restarted app
        assert time.monotonic() - started < 20  # released: not waiting out the 30 s lease
        with answered:
            answered.sendall(b"y")  # the gateway answers: the order is charged
        server.until(f"/orders/{order_id}", paused, timeout=20)
        assert server.post(f"/orders/{order_id}/approve", {"by": "night-shift"}).status_code == 200
        order = server.until(f"/orders/{order_id}", shipped)
        gate.setblocking(False)
        with pytest.raises(BlockingIOError):
            gate.accept()  # no other call reached the gateway
    attempts = {s["name"]: s["attempts"] for s in order["run"]["steps"]}
    assert attempts["reserve_stock"] == 1 and attempts["ship"] == 1
    assert sql(server.url, "SELECT quantity FROM stock") == [(8,)]  # reserved exactly once
    child = payment_child(server, order)  # one child: the parent's replay started no other
    assert [(s["name"], s["status"]) for s in child["steps"]] == [("charge", "SUCCESS")]
    assert server.stop()


def test_the_workflows_run_in_a_separate_worker_process(server: Server) -> None:
    server.start("web-1", "--no-worker")
    assert server.get("/health") == {"worker": None}
    worker = subprocess.Popen(
        [sys.executable, "-m", "pgqrs_sqla", "--database-url", server.url,
         "worker", "orders_app.workflows:registry", "--name", "proc-1", "--poll-interval", "0.1"],
        cwd=APP,
        env={**os.environ, "PYTHONPATH": str(APP)},
    )  # fmt: skip
    try:
        eventually_sync(
            lambda: (
                alive(worker)
                or sql(server.url, "SELECT status FROM pgqrs_workers") == [("polling",)]
            ),
            what="the worker process polls",
        )
        order_id = server.post("/orders", {"customer_id": 1, "sku": "book", "quantity": 4}).json()[
            "order_id"
        ]
        server.until(f"/orders/{order_id}", paused)
        assert server.post(f"/orders/{order_id}/approve", {"by": "proc"}).status_code == 200
        order = server.until(f"/orders/{order_id}", shipped)
        assert order["run"]["output"]["approved_by"] == "proc"
        payment_child(server, order)  # the worker process served collect_payment too
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
    assert sql(server.url, "SELECT quantity FROM stock") == [(6,)]
    assert sql(server.url, "SELECT worker_name, status FROM pgqrs_workers") == [
        ("proc-1", "stopped")
    ]
    server.stop()


async def test_the_lifespan_disposes_the_apps_engine(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(APP))
    from orders_app.web import create_app

    for embedded in (True, False):
        app = create_app(server.url, worker_name="in-process", embedded_worker=embedded)
        async with app.router.lifespan_context(app):
            pool = app.state.engine.sync_engine.pool
            async with app.state.engine.connect():  # the app uses a connection
                pass
            assert pool.checkedin() >= 1
        assert app.state.engine.sync_engine.pool is not pool  # disposed: a fresh pool
        assert pool.checkedin() == 0  # and the old one's connections are closed


def test_one_customers_payments_run_one_at_a_time_while_others_proceed(server: Server) -> None:
    """``collect_payment`` has ``key_concurrency=1`` over the customer: with the gateway held
    (a socket the test answers), a customer's second payment waits for the first, while a
    payment of another customer, ordered after it, is charged meanwhile."""
    sql(server.url, "INSERT INTO customers (id, name) VALUES (2, 'Grace')")
    sql(server.url, "UPDATE stock SET quantity = 100")
    gate_path = os.path.join(tempfile.mkdtemp(prefix="gate-"), "s")

    def payments() -> list[tuple[str, str]]:
        return sorted(
            sql(
                server.url,
                "SELECT r.concurrency_key, r.status FROM pgqrs_workflow_runs r JOIN "
                "pgqrs_workflows w ON w.id = r.workflow_id "
                "WHERE w.workflow_name = 'collect_payment'",
            )
        )

    with socket.socket(socket.AF_UNIX) as gate:
        gate.bind(gate_path)
        gate.listen()
        gate.settimeout(30)
        server.start("web-1", ORDERS_PAYMENT_GATE=gate_path)
        for customer in (1, 1, 2):  # Ada twice, then Grace
            order = {"customer_id": customer, "sku": "book", "quantity": 1}
            assert server.post("/orders", order).status_code == 201
        first, _ = gate.accept()
        second, _ = gate.accept()  # two charges in flight: Ada's and Grace's, never Ada's two
        with first, second:
            assert payments() == [
                ("customer-1", "QUEUED"),
                ("customer-1", "RUNNING"),
                ("customer-2", "RUNNING"),
            ]
            first.sendall(b"x")
            second.sendall(b"x")
            third, _ = gate.accept()  # Ada's slot freed: her second payment is charged
            with third:
                third.sendall(b"x")

                def all_paid() -> bool:
                    return [status for _, status in payments()] == ["SUCCESS"] * 3

                eventually_sync(all_paid, what="the three payments SUCCESS")
    assert server.stop()


def test_staff_watch_and_act_in_the_dashboard_at_jobs(server: Server) -> None:
    """ORDERS_STAFF mounts the dashboard at /jobs behind HTTP Basic: a stranger is asked to
    sign in, a viewer sees the order's run without its buttons, an operator sends the
    warehouse's approval from the run's page and the order ships."""
    server.start("web-staff", ORDERS_STAFF="ada:opensesame:operator,grace:look:viewer")
    created = server.post("/orders", {"customer_id": 1, "sku": "book", "quantity": 1})
    order_id = created.json()["order_id"]
    order = server.until(f"/orders/{order_id}", paused)
    run_page = f"{server.base}/jobs/runs/{order['run']['id']}"

    stranger = httpx.get(run_page, timeout=10)
    assert stranger.status_code == 401
    assert stranger.headers["www-authenticate"].startswith("Basic")
    assert httpx.get(run_page, auth=("ada", "wrong"), timeout=10).status_code == 401
    viewer = httpx.get(run_page, auth=("grace", "look"), timeout=10)
    assert viewer.status_code == 200 and "warehouse_approved" in viewer.text
    assert "Send event" not in viewer.text and "read-only" in viewer.text

    with httpx.Client(base_url=server.base, auth=("ada", "opensesame"), timeout=10) as ada:
        page = ada.get(run_page)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert token is not None, "an operator sees the forms"
        sent = ada.post(
            f"/jobs/runs/{order['run']['id']}/event",
            data={"csrf_token": token[1], "name": "warehouse_approved", "payload": '{"by": "ada"}'},
        )
        assert sent.status_code == 303
    order = server.until(f"/orders/{order_id}", shipped)
    assert order["run"]["output"]["approved_by"] == "ada"
    assert server.stop()
