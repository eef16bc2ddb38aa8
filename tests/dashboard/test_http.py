"""The dashboard over HTTP (httpx's ASGI transport), on a real database, both backends.

Refusals (auth, operate, CSRF, origin, bad JSON) change nothing in the database; each action
changes it as the Store method the CLI calls would.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Mount

import pgqrs_sqla as pgqrs
from pgqrs_sqla.contrib.dashboard import CSP, NO_AUTH, dashboard
from pgqrs_sqla.models import RunStatus
from tests.dashboard._seed import SCRIPT, Seeded

USERS = {"alice-token": "alice", "bob-token": "bob"}


def by_header(request: Request) -> str | None:
    """The test's auth: a bearer token naming alice (who may act) or bob (who may look)."""
    return USERS.get(request.headers.get("x-token", ""))


async def alice_operates(identity: Any) -> bool:
    return identity == "alice"


def mounted(store: pgqrs.Store, **options: Any) -> Starlette:
    """The host app: the dashboard under /jobs."""
    options.setdefault("auth", by_header)
    return Starlette(routes=[Mount("/jobs", dashboard(store, **options))])


@pytest.fixture
async def client(store: pgqrs.Store) -> AsyncIterator[httpx.AsyncClient]:
    app = mounted(store, operate=alice_operates)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://testserver",
        headers={"x-token": "alice-token"},
    ) as c:
        yield c


async def csrf(client: httpx.AsyncClient, page: str = "/jobs/") -> str:
    """Load a page (which sets the CSRF cookie) and return the form's token."""
    response = await client.get(page)
    assert response.status_code == 200, response.text
    found = re.search(r'name="csrf_token" value="([^"]+)"', response.text)
    token = found.group(1) if found else client.cookies["pgqrs_csrf"]
    assert token == client.cookies["pgqrs_csrf"]
    return token


async def status(store: pgqrs.Store, run_id: int) -> RunStatus:
    return (await store.get_run(run_id)).status


async def test_without_auth_dashboard_raises(store: pgqrs.Store) -> None:
    with pytest.raises(pgqrs.ConfigurationError, match=r"needs auth=.*NO_AUTH"):
        dashboard(store)  # type: ignore[call-arg]
    with pytest.raises(pgqrs.ConfigurationError, match="must be callable"):
        dashboard(store, auth="yes")  # type: ignore[arg-type]


def test_import_without_the_extra_names_the_install_command() -> None:
    code = (
        "import sys; sys.modules['jinja2'] = None\n"
        "try:\n    import pgqrs_sqla.contrib.dashboard\n"
        "except ImportError as e:\n    print(e)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'pgqrs-sqla[dashboard]'" in done.stdout
    assert "jinja2" in done.stdout


async def test_every_page_serves_the_seeded_runs_with_security_headers(
    store: pgqrs.Store, seeded: Seeded, client: httpx.AsyncClient
) -> None:
    pages = ["/jobs/", "/jobs/runs", "/jobs/workers", "/jobs/dead-letters", "/jobs/schedules"]
    pages += [f"/jobs/runs/{run_id}" for run_id in seeded.runs.values()]
    for page in pages:
        response = await client.get(page)
        assert response.status_code == 200, (page, response.text)
        assert response.headers["content-security-policy"] == CSP
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "same-origin"
        assert "<script>" not in response.text.replace('<script src="/jobs/static/', "")
        # links and assets are under the mount path
        assert 'href="/jobs/static/dashboard.css"' in response.text
        assert not re.search(r'(?:href|action|src)="/(?!jobs/)', response.text), page
    css = await client.get("/jobs/static/dashboard.css")
    assert css.status_code == 200
    assert css.headers["content-security-policy"] == CSP
    overview = (await client.get("/jobs/")).text
    for name in ("ok", "boom", "approval", "idle", "mail"):
        assert f">{name}<" in overview
    workers = (await client.get("/jobs/workers")).text
    assert f"/jobs/runs/{seeded.runs['running']}" in workers  # its in-flight run
    dead = (await client.get("/jobs/dead-letters")).text
    assert "smtp down &lt;script&gt;" in dead
    assert "nightly" in (await client.get("/jobs/schedules")).text


async def test_database_values_render_as_text(seeded: Seeded, client: httpx.AsyncClient) -> None:
    escaped = "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;"
    error_page = (await client.get(f"/jobs/runs/{seeded.runs['error']}")).text
    assert f"card declined {escaped}" in error_page
    assert "Traceback" in error_page  # the stored traceback is shown
    assert SCRIPT not in error_page
    success_page = (await client.get(f"/jobs/runs/{seeded.runs['success']}")).text
    assert escaped in success_page
    assert SCRIPT not in success_page
    listed = (await client.get("/jobs/runs", params={"q": "declined"})).text
    assert escaped in listed and SCRIPT not in listed


async def test_run_detail_shows_the_timeline_waits_and_family(
    store: pgqrs.Store, seeded: Seeded, client: httpx.AsyncClient
) -> None:
    page = (await client.get(f"/jobs/runs/{seeded.runs['waiting_event']}")).text
    assert '<svg class="timeline"' in page
    assert "prepare" in page and "[event]" in page
    assert 'value="approved"' in page  # the event it waits for, offered in the form
    sleeping = (await client.get(f"/jobs/runs/{seeded.runs['sleeping']}")).text
    assert "cool_off [sleep]" in sleeping and "until" in sleeping
    parent = await store.get_run(seeded.runs["parent"])
    [child] = parent.children
    page = (await client.get(f"/jobs/runs/{seeded.runs['parent']}")).text
    assert f'href="/jobs/runs/{child}"' in page and "[child]" in page
    child_page = (await client.get(f"/jobs/runs/{child}")).text
    assert f'href="/jobs/runs/{seeded.runs["parent"]}"' in child_page
    missing = await client.get("/jobs/runs/999999")
    assert missing.status_code == 404


async def test_auth_refusals(store: pgqrs.Store, seeded: Seeded) -> None:
    app = mounted(store, operate=alice_operates)
    transport = httpx.ASGITransport(app=app)
    run_id = seeded.runs["queued"]
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as anonymous:
        for page in ("/jobs/", "/jobs/runs", f"/jobs/runs/{run_id}"):
            response = await anonymous.get(page)
            assert response.status_code == 401
            assert response.headers["content-security-policy"] == CSP
        response = await anonymous.post(f"/jobs/runs/{run_id}/cancel", data={"csrf_token": "x"})
        assert response.status_code == 403
    async with httpx.AsyncClient(
        transport=transport, base_url="http://t", headers={"x-token": "bob-token"}
    ) as bob:
        page = await bob.get(f"/jobs/runs/{run_id}")
        assert page.status_code == 200
        assert "Cancel run" not in page.text  # bob may look, not act
        token = await csrf(bob)
        refused = await bob.post(f"/jobs/runs/{run_id}/cancel", data={"csrf_token": token})
        assert refused.status_code == 403
    assert await status(store, run_id) is RunStatus.QUEUED


async def test_read_only_by_default(store: pgqrs.Store, seeded: Seeded) -> None:
    app = mounted(store)  # no operate=: nobody may act
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://t",
        headers={"x-token": "alice-token"},
    ) as alice:
        run_id = seeded.runs["queued"]
        page = await alice.get(f"/jobs/runs/{run_id}")
        assert "Cancel run" not in page.text and "read-only" in page.text
        token = alice.cookies["pgqrs_csrf"]
        response = await alice.post(f"/jobs/runs/{run_id}/cancel", data={"csrf_token": token})
        assert response.status_code == 403
    assert await status(store, run_id) is RunStatus.QUEUED


async def test_no_auth_serves_loopback_clients_only(store: pgqrs.Store, seeded: Seeded) -> None:
    app = mounted(store, auth=NO_AUTH)
    for host, expected in (("127.0.0.1", 200), ("::1", 200), ("10.1.2.3", 403), ("8.8.8.8", 403)):
        transport = httpx.ASGITransport(app=app, client=(host, 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            response = await c.get("/jobs/runs")
            assert response.status_code == expected, host
            if expected == 403:
                assert "own machine only" in response.text


async def test_csrf_refusals_change_nothing(
    store: pgqrs.Store, seeded: Seeded, client: httpx.AsyncClient
) -> None:
    run_id = seeded.runs["queued"]
    token = await csrf(client)
    url = f"/jobs/runs/{run_id}/cancel"
    assert (await client.post(url)).status_code == 403  # no token
    assert (await client.post(url, data={"csrf_token": "w" * 43})).status_code == 403  # wrong
    # the right token from another site's page: refused on its Origin
    evil = await client.post(url, data={"csrf_token": token}, headers={"origin": "http://evil"})
    assert evil.status_code == 403
    # the right field but no cookie (a forged form elsewhere cannot read or send it)
    client.cookies.clear()
    assert (await client.post(url, data={"csrf_token": token})).status_code == 403
    assert await status(store, run_id) is RunStatus.QUEUED


async def test_csrf_cookie_is_strict_httponly_and_scoped_to_the_mount(
    seeded: Seeded, client: httpx.AsyncClient
) -> None:
    response = await client.get("/jobs/")
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/jobs" in cookie


async def test_cancel_retry_and_resume(
    store: pgqrs.Store,
    seeded: Seeded,
    client: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
    wait_until: Any,
) -> None:
    token = await csrf(client)
    queued = seeded.runs["queued"]
    with caplog.at_level(logging.INFO, logger="pgqrs_sqla.dashboard"):
        response = await client.post(f"/jobs/runs/{queued}/cancel", data={"csrf_token": token})
    assert response.status_code == 303
    assert response.headers["location"].startswith(f"/jobs/runs/{queued}?flash=")
    assert await status(store, queued) is RunStatus.CANCELLED
    assert any("run_cancel" in r.message and "alice" in r.message for r in caplog.records)
    shown = await client.get(response.headers["location"])
    assert "CANCELLED" in shown.text and 'class="flash ok"' in shown.text

    failed = seeded.runs["error"]
    first = await store.get_run(failed)
    assert first.finished_at is not None
    response = await client.post(f"/jobs/runs/{failed}/retry", data={"csrf_token": token})
    assert response.status_code == 303

    async def failed_again() -> bool:
        run = await store.get_run(failed)  # its worker ran it again: it fails each time
        return run.status is RunStatus.ERROR and run.finished_at > first.finished_at  # type: ignore[operator]

    await wait_until(failed_again)

    # an illegal transition is said, not raised: cancelling an ended run
    again = await client.post(f"/jobs/runs/{queued}/cancel", data={"csrf_token": token})
    assert again.status_code == 303 and "level=error" in again.headers["location"]
    assert await status(store, queued) is RunStatus.CANCELLED

    sleeping = seeded.runs["sleeping"]
    deliveries = await read_ct(store, sleeping)
    response = await client.post(f"/jobs/runs/{sleeping}/resume", data={"csrf_token": token})
    assert response.status_code == 303
    # resumed: a worker takes it again now, replays the sleep (not over) and parks it again
    await wait_until(lambda: _delivered_again(store, sleeping, deliveries))
    await store.wait_for_status(sleeping, RunStatus.PAUSED, timeout=30)


async def read_ct(store: pgqrs.Store, run_id: int) -> int:
    """How many times the run's message has been delivered."""
    from sqlalchemy import select

    m, r = store.tables.messages, store.tables.runs
    stmt = select(m.c.read_ct).join(r, r.c.message_id == m.c.id).where(r.c.id == run_id)
    async with store._read() as conn:
        return int((await conn.execute(stmt)).scalar_one())


async def _delivered_again(store: pgqrs.Store, run_id: int, before: int) -> bool:
    return await read_ct(store, run_id) > before


async def test_retry_requeues_the_run(
    store: pgqrs.Store, seeded: Seeded, client: httpx.AsyncClient
) -> None:
    token = await csrf(client)
    cancelled = seeded.runs["cancelled"]  # no worker serves "idle": it stays QUEUED
    response = await client.post(f"/jobs/runs/{cancelled}/retry", data={"csrf_token": token})
    assert response.status_code == 303
    assert await status(store, cancelled) is RunStatus.QUEUED


async def test_send_event_and_record_step(
    store: pgqrs.Store, seeded: Seeded, client: httpx.AsyncClient
) -> None:
    token = await csrf(client)
    waiting = seeded.runs["waiting_event"]
    response = await client.post(
        f"/jobs/runs/{waiting}/event",
        data={"csrf_token": token, "name": "approved", "payload": '{"by": "ops"}'},
    )
    assert response.status_code == 303
    run = await store.wait_for_status(waiting, RunStatus.SUCCESS, timeout=30)
    assert run.output == {"approved": {"by": "ops"}}

    paused = seeded.runs["paused_step"]
    response = await client.post(
        f"/jobs/runs/{paused}/step",
        data={"csrf_token": token, "step": "human", "value": '"yes"'},
    )
    assert response.status_code == 303
    run = await store.wait_for_status(paused, RunStatus.SUCCESS, timeout=30)
    assert run.output == {"answer": "yes"}


async def test_bad_json_is_400_and_changes_nothing(
    store: pgqrs.Store, seeded: Seeded, client: httpx.AsyncClient
) -> None:
    token = await csrf(client)
    waiting = seeded.runs["waiting_event"]
    response = await client.post(
        f"/jobs/runs/{waiting}/event",
        data={"csrf_token": token, "name": "approved", "payload": '{"by": '},
    )
    assert response.status_code == 400
    assert "not valid JSON" in response.text and "line 1 column 8" in response.text
    paused = seeded.runs["paused_step"]
    response = await client.post(
        f"/jobs/runs/{paused}/step", data={"csrf_token": token, "step": "human", "value": "{x"}
    )
    assert response.status_code == 400
    e = store.tables.events
    async with store._read() as conn:
        from sqlalchemy import func, select

        assert (await conn.execute(select(func.count()).select_from(e))).scalar_one() == 0
    assert await status(store, waiting) is RunStatus.PAUSED
    steps = {s.name: s.status for s in (await store.get_run(paused)).steps}
    assert steps["human"] == pgqrs.StepStatus.PAUSED


async def test_replay_dead_letters(
    store: pgqrs.Store, seeded: Seeded, client: httpx.AsyncClient
) -> None:
    token = await csrf(client, "/jobs/dead-letters")
    assert seeded.dead_message is not None
    response = await client.post(
        "/jobs/dead-letters/mail/replay",
        data={"csrf_token": token, "message_id": str(seeded.dead_message)},
    )
    assert response.status_code == 303
    assert response.headers["location"].startswith("/jobs/dead-letters?flash=")
    assert await store.dead_letters("mail") == []


async def test_pause_and_resume_a_schedule(
    store: pgqrs.Store, seeded: Seeded, client: httpx.AsyncClient
) -> None:
    token = await csrf(client, "/jobs/schedules")
    response = await client.post("/jobs/schedules/nightly/pause", data={"csrf_token": token})
    assert response.status_code == 303
    assert (await store.get_schedule("nightly")).paused
    assert "Resume" in (await client.get("/jobs/schedules")).text
    response = await client.post("/jobs/schedules/nightly/resume", data={"csrf_token": token})
    assert response.status_code == 303
    assert not (await store.get_schedule("nightly")).paused


async def test_keyset_pages_follow_each_other(
    store: pgqrs.Store, client: httpx.AsyncClient
) -> None:
    await store.create_workflow("many")
    made = [await pgqrs.workflow("many").trigger({"i": i}).execute(store) for i in range(23)]
    seen: list[int] = []
    url: str | None = "/jobs/runs?workflow=many&limit=10"
    pages = 0
    while url is not None:
        page = (await client.get(url)).text
        pages += 1
        seen += [int(i) for i in re.findall(r'<td class="n"><a href="/jobs/runs/(\d+)">', page)]
        found = re.search(r'rel="next" href="([^"]+)"', page)
        url = found.group(1).replace("&amp;", "&") if found else None
    assert pages == 3
    assert seen == sorted(made, reverse=True)  # no gap, no overlap, newest first


async def test_run_filters(store: pgqrs.Store, seeded: Seeded, client: httpx.AsyncClient) -> None:
    async def ids(**params: str) -> set[int]:
        response = await client.get("/jobs/runs", params=params)
        assert response.status_code == 200, response.text
        return {int(i) for i in re.findall(r'href="/jobs/runs/(\d+)"', response.text)}

    assert await ids(status="ERROR") == {seeded.runs["error"]}
    assert await ids(workflow="idle") == {seeded.runs["queued"], seeded.runs["cancelled"]}
    assert await ids(key="order-42") == {seeded.runs["queued"]}
    assert await ids(q="DECLINED") == {seeded.runs["error"]}
    assert await ids(q="50%_off") == set()
    assert seeded.runs["error"] in await ids(**{"from": "2000-01-01T00:00"})
    assert await ids(to="2000-01-01T00:00") == set()
    bad = await client.get("/jobs/runs", params={"status": "LOST"})
    assert bad.status_code == 400 and "unknown status" in bad.text
    bad = await client.get("/jobs/runs", params={"from": "yesterday"})
    assert bad.status_code == 400


async def test_overview_chart_counts_the_last_hour(
    seeded: Seeded, client: httpx.AsyncClient
) -> None:
    page = (await client.get("/jobs/")).text
    # success, the child, the parent, the error, the cancelled: at least these ended now
    ended = int(re.search(r"Last hour: (\d+) run\(s\) ended, (\d+) failed", page).group(1))  # type: ignore[union-attr]
    assert ended >= 5
    assert '<rect class="ok"' in page and '<rect class="err"' in page


async def test_only_our_redirect_can_show_a_message(
    store: pgqrs.Store, client: httpx.AsyncClient
) -> None:
    await csrf(client)
    forged = await client.get("/jobs/", params={"flash": "Session expired: call 555-0100"})
    assert "555-0100" not in forged.text
    await store.create_workflow("idle")
    run_id = await pgqrs.workflow("idle").trigger({}).execute(store)
    done = await client.post(
        f"/jobs/runs/{run_id}/cancel", data={"csrf_token": client.cookies["pgqrs_csrf"]}
    )
    shown = await client.get(done.headers["location"])
    assert f"run {run_id}: CANCELLED" in shown.text
    tampered = done.headers["location"].replace("CANCELLED", "SUCCESS")
    assert "SUCCESS" not in (await client.get(tampered)).text.split("<main>")[1]


async def test_auth_may_answer_with_its_own_http_exception(store: pgqrs.Store) -> None:
    """HTTP Basic: ``auth`` raises a 401 that asks the browser for a name and password."""
    from starlette.exceptions import HTTPException

    def basic(request: Request) -> str:
        if request.headers.get("authorization") == "Basic YWRhOnB3":  # ada:pw
            return "ada"
        raise HTTPException(401, "who?", {"WWW-Authenticate": 'Basic realm="jobs"'})

    app = mounted(store, auth=basic)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        refused = await c.get("/jobs/runs")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == 'Basic realm="jobs"'
        assert refused.headers["content-security-policy"] == CSP
        assert (await c.get("/jobs/runs", auth=("ada", "pw"))).status_code == 200
