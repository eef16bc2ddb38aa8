"""The dashboard in a real browser: Debian's Chromium driven by Playwright (no download).

One browser for the module; per backend, one database seeded with runs in every state and
one uvicorn server (in a thread of this process, with a Store of its own) serving the
dashboard at /jobs. The pages load without a CSP violation, a cancel and a retry clicked
through change the database, a forged CSRF token and a missing login are refused, and a
``<script>`` stored in a run shows as text and never runs. Screenshots go to
``$PGQRS_SCREENSHOTS_DIR`` (the docs' docs/img/) or a temporary folder.

No Chromium: the tests skip, saying so; under CI=true they fail instead.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import create_engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Mount

import pgqrs_sqla as pgqrs
from pgqrs_sqla.contrib.dashboard import dashboard
from pgqrs_sqla.models import RunStatus
from tests.conftest import BACKENDS, PgServer, pg_or_skip
from tests.dashboard._seed import SCRIPT, Seeded, seed

pytestmark = [pytest.mark.xdist_group("browser"), pytest.mark.asyncio(loop_scope="module")]

playwright_api = pytest.importorskip("playwright.async_api")
uvicorn = pytest.importorskip("uvicorn")

USERS = {"alice-token": "alice", "bob-token": "bob"}


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    message = (
        "NO CHROMIUM: the dashboard's browser tests did not run. Install Debian's "
        "(`apt-get install chromium`; .ci/run does) to run them"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def chromium() -> str:
    return _chromium()


@pytest.fixture(scope="module", params=BACKENDS)
def browser_db(
    request: pytest.FixtureRequest,
    pg_server: PgServer | None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, str]]:
    """(backend, URL) of a fresh database with the pgqrs tables, for the module."""
    backend = str(request.param)
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('browser')}/pgqrs.db"
        engine = create_engine(url)
        try:
            pgqrs.pgqrs_models().metadata.create_all(engine)
        finally:
            engine.dispose()
        yield backend, url
        return
    server = pg_or_skip(pg_server)
    name = server.create_database(server.template)
    try:
        yield backend, server.async_url(name)
    finally:
        server.drop_database(name)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def seeded(browser_db: tuple[str, str]) -> AsyncIterator[tuple[pgqrs.Store, Seeded]]:
    """The test's own Store on the database, and the runs seeded by its workers."""
    store = await pgqrs.connect(browser_db[1])
    workers: list[pgqrs.Worker] = []

    async def start(workflow: str, handler: Any, **options: Any) -> pgqrs.Worker:
        await store.create_workflow(workflow, retry=options.pop("retry", None))
        worker = (
            await pgqrs.consumer(f"w{len(workers)}", None, workflow)
            .handler(handler)
            .create(store, poll_interval=0.05)
        )
        worker.start()
        workers.append(worker)
        return worker

    made = await seed(store, start)
    try:
        yield store, made
    finally:
        made.release.set()
        for worker in workers:
            await worker.stop(grace=5)
        await store.close()


def _user(request: Request) -> str | None:
    return USERS.get(request.headers.get("x-token", ""))


class _Server(uvicorn.Server):  # type: ignore[misc,name-defined]
    """uvicorn's server, saying when it listens."""

    def __init__(self, config: Any, ready: threading.Event) -> None:
        super().__init__(config)
        self.ready = ready

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        self.ready.set()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def base_url(
    browser_db: tuple[str, str], seeded: tuple[pgqrs.Store, Seeded]
) -> AsyncIterator[str]:
    """The host app (the dashboard at /jobs) served by uvicorn in a thread; its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ready = threading.Event()
    holder: dict[str, Any] = {}

    async def serve() -> None:
        store = await pgqrs.connect(browser_db[1])  # the server's own, in its own loop
        try:
            board = dashboard(store, auth=_user, operate=lambda who: who == "alice")
            app = Starlette(routes=[Mount("/jobs", board)])
            config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
            holder["server"] = server = _Server(config, ready)
            await server.serve()
        finally:
            await store.close()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert await asyncio.to_thread(ready.wait, 30), "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}/jobs"
    finally:
        holder["server"].should_exit = True
        await asyncio.to_thread(thread.join, 30)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser(chromium: str) -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as p:
        launched = await p.chromium.launch(executable_path=chromium, headless=True)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go: $PGQRS_SCREENSHOTS_DIR (docs/img) or a temporary folder."""
    wanted = os.environ.get("PGQRS_SCREENSHOTS_DIR")
    if wanted:
        Path(wanted).mkdir(parents=True, exist_ok=True)
        return Path(wanted)
    return tmp_path_factory.mktemp("screenshots")


async def _page(browser: Any, token: str | None = "alice-token") -> tuple[Any, Any, list[str]]:
    """A new context and page (logged in as ``token``'s user) and the page's problems."""
    context = await browser.new_context(
        viewport={"width": 1280, "height": 800},
        extra_http_headers={"x-token": token} if token else {},
    )
    page = await context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("dialog", lambda d: problems.append(f"dialog: {d.message}"))
    return context, page, problems


async def test_every_page_loads_without_a_csp_violation(
    browser: Any,
    base_url: str,
    seeded: tuple[pgqrs.Store, Seeded],
    browser_db: tuple[str, str],
    shots: Path,
) -> None:
    _, made = seeded
    context, page, problems = await _page(browser)
    pages = {
        "overview": "/",
        "runs": "/runs",
        "run": f"/runs/{made.runs['error']}",
        "run-waiting": f"/runs/{made.runs['waiting_event']}",
        "run-parent": f"/runs/{made.runs['parent']}",
        "workers": "/workers",
        "dead-letters": "/dead-letters",
        "schedules": "/schedules",
    }
    for name, path in pages.items():
        response = await page.goto(base_url + path)
        assert response is not None and response.status == 200, (name, response)
        assert await page.locator("h1").first.is_visible()
        # the stylesheet applied (served by the app, allowed by the CSP)
        header = await page.eval_on_selector("header", "e => getComputedStyle(e).display")
        assert header == "flex"
        if browser_db[0] == "postgresql" or not os.environ.get("PGQRS_SCREENSHOTS_DIR"):
            await page.screenshot(path=str(shots / f"dashboard-{name}.png"), full_page=True)
    for state in ("queued", "running", "cancelled", "sleeping", "paused_step", "success"):
        response = await page.goto(f"{base_url}/runs/{made.runs[state]}")
        assert response is not None and response.status == 200
    assert problems == []
    await context.close()


async def test_a_script_stored_in_a_run_shows_as_text(
    browser: Any, base_url: str, seeded: tuple[pgqrs.Store, Seeded]
) -> None:
    _, made = seeded
    context, page, problems = await _page(browser)
    await page.goto(f"{base_url}/runs/{made.runs['error']}")
    error = page.locator("#run-error")
    assert await error.inner_text() == f"builtins.RuntimeError: card declined {SCRIPT}"
    await page.goto(f"{base_url}/runs/{made.runs['success']}")
    assert SCRIPT in await page.locator("#run-input").inner_text()
    await page.goto(f"{base_url}/runs?q=declined")
    assert SCRIPT in await page.locator("td.err-cell").first.inner_text()
    assert not any(p.startswith("dialog") for p in problems), problems  # no alert() ran
    assert problems == []
    await context.close()


async def test_cancel_and_retry_clicked_through(
    browser: Any, base_url: str, seeded: tuple[pgqrs.Store, Seeded]
) -> None:
    store, made = seeded
    context, page, problems = await _page(browser)
    run_id = made.runs["queued"]
    await page.goto(f"{base_url}/runs/{run_id}")
    await page.get_by_role("button", name="Cancel run").click()
    await page.wait_for_url(f"**/runs/{run_id}?flash=*")
    assert "CANCELLED" in await page.locator(".flash").inner_text()
    assert (await store.get_run(run_id)).status is RunStatus.CANCELLED
    await page.get_by_role("button", name="Retry run").click()
    await page.wait_for_url(f"**/runs/{run_id}?flash=*")
    assert "queued again" in await page.locator(".flash").inner_text()
    assert (await store.get_run(run_id)).status is RunStatus.QUEUED  # no worker serves "idle"
    assert problems == []
    await context.close()


async def test_the_json_editor_checks_as_you_type_and_sends_the_event(
    browser: Any, base_url: str, seeded: tuple[pgqrs.Store, Seeded]
) -> None:
    store, made = seeded
    context, page, problems = await _page(browser)
    run_id = made.runs["waiting_event"]
    await page.goto(f"{base_url}/runs/{run_id}")
    form = page.locator("form.json-form").first
    await form.locator("textarea").fill('{"by": ')
    assert "not JSON" in await form.locator(".json-state").inner_text()
    assert await form.get_by_role("button", name="Send event").is_disabled()
    await form.locator("textarea").fill('{"by": "ops"}')
    assert await form.locator(".json-state").inner_text() == "valid JSON"
    await form.get_by_role("button", name="Send event").click()
    await page.wait_for_url(f"**/runs/{run_id}?flash=*")
    run = await store.wait_for_status(run_id, RunStatus.SUCCESS, timeout=30)
    assert run.output == {"approved": {"by": "ops"}}
    assert problems == []
    await context.close()


async def test_a_forged_csrf_token_is_refused(
    browser: Any, base_url: str, seeded: tuple[pgqrs.Store, Seeded]
) -> None:
    store, made = seeded
    context, page, _ = await _page(browser)
    run_id = made.runs["sleeping"]
    await page.goto(f"{base_url}/runs/{run_id}")
    form = page.locator("form", has=page.get_by_role("button", name="Cancel run"))
    await form.locator("input[name=csrf_token]").evaluate("e => { e.value = 'forged' }")
    async with page.expect_response(lambda r: r.request.method == "POST") as posted:
        await page.get_by_role("button", name="Cancel run").click()
    assert (await posted.value).status == 403
    assert "CSRF token is missing or wrong" in await page.locator(".error-reason").inner_text()
    assert (await store.get_run(run_id)).status is RunStatus.PAUSED
    await context.close()


async def test_auth_refusal_and_read_only_viewers(
    browser: Any, base_url: str, seeded: tuple[pgqrs.Store, Seeded], shots: Path
) -> None:
    _, made = seeded
    context, page, _ = await _page(browser, token=None)
    response = await page.goto(f"{base_url}/runs/{made.runs['sleeping']}")
    assert response is not None and response.status == 401
    assert "not signed in" in await page.locator(".error-reason").inner_text()
    await context.close()
    context, page, problems = await _page(browser, token="bob-token")
    response = await page.goto(f"{base_url}/runs/{made.runs['sleeping']}")
    assert response is not None and response.status == 200
    assert await page.get_by_role("button", name="Cancel run").count() == 0
    assert "read-only" in await page.locator(".viewer").inner_text()
    assert problems == []
    await context.close()
