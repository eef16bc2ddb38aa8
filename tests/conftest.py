"""Test harness: every storage test runs on SQLite and on a real PostgreSQL server.

PostgreSQL is found in this order:
1. ``PGQRS_TEST_DATABASE_URL`` (a server URL whose user may CREATE DATABASE);
2. testcontainers, when a Docker daemon answers;
3. a throwaway cluster started from local PostgreSQL binaries (``initdb`` / ``pg_ctl``;
   as the ``postgres`` OS user when running as root).
If none is found, PostgreSQL tests are skipped with one loud line — unless ``CI=true`` or
``PGQRS_REQUIRE_POSTGRES=1``, where that is a failure.

Isolation: each PostgreSQL test gets its own database (``CREATE DATABASE ... TEMPLATE`` of
a template built once per session); each SQLite test its own WAL file in ``tmp_path``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

import pgqrs_sqla as pgqrs

BACKENDS = ("sqlite", "postgresql")


def _require_postgres() -> bool:
    return (
        os.environ.get("CI", "").lower() == "true"
        or os.environ.get("PGQRS_REQUIRE_POSTGRES") == "1"
    )


@dataclass
class PgServer:
    """A PostgreSQL server we may create databases on."""

    url: str  # admin URL (database "postgres"), sync psycopg driver
    how: str
    template: str | None = None

    def sync_url(self, database: str) -> str:
        return make_url(self.url).set(database=database).render_as_string(hide_password=False)

    def async_url(self, database: str) -> str:
        return (
            make_url(self.url)
            .set(drivername="postgresql", database=database)
            .render_as_string(hide_password=False)
        )

    def admin(self, *statements: str) -> None:
        engine = create_engine(self.url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                for statement in statements:
                    conn.execute(text(statement))
        finally:
            engine.dispose()

    def create_database(self, template: str | None = None) -> str:
        name = f"pgqrs_t_{uuid.uuid4().hex[:12]}"
        suffix = f" TEMPLATE {template}" if template else ""
        self.admin(f"CREATE DATABASE {name}{suffix}")
        return name

    def drop_database(self, name: str) -> None:
        with contextlib.suppress(Exception):
            self.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _psycopg(url: str) -> str:
    return make_url(url).set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def _answers(url: str) -> bool:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False
    finally:
        engine.dispose()


def _from_env() -> PgServer | None:
    url = os.environ.get("PGQRS_TEST_DATABASE_URL")
    if not url:
        return None
    url = _psycopg(url)
    if not _answers(url):
        pytest.exit(
            f"PGQRS_TEST_DATABASE_URL={make_url(url).render_as_string()} does not answer", 2
        )
    return PgServer(url, "PGQRS_TEST_DATABASE_URL")


@contextlib.contextmanager
def _from_docker() -> Iterator[PgServer | None]:
    if not (os.environ.get("DOCKER_HOST") or os.path.exists("/var/run/docker.sock")):
        yield None
        return
    try:
        import gc
        import warnings

        import docker  # type: ignore[import-untyped]

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            try:
                client = docker.from_env(timeout=3)
                try:
                    client.ping()
                finally:
                    client.close()
            finally:
                gc.collect()
    except Exception:
        yield None
        return
    from testcontainers.postgres import PostgresContainer

    with PostgresContainer("postgres:16-alpine", driver="psycopg") as container:
        yield PgServer(_psycopg(container.get_connection_url()), "testcontainers")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _from_binaries() -> Iterator[PgServer | None]:
    bindir = None
    with contextlib.suppress(Exception):
        bindir = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, check=True
        ).stdout.strip()
    candidates = [bindir] if bindir else []
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    initdb = next(
        (
            os.path.join(d, "initdb")
            for d in candidates
            if d and os.path.exists(os.path.join(d, "initdb"))
        ),
        None,
    )
    if initdb is None:
        yield None
        return
    bindir = os.path.dirname(initdb)
    root = tempfile.mkdtemp(prefix="pgqrs-pg-")
    prefix: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    data, port = os.path.join(root, "data"), _free_port()
    try:
        subprocess.run(
            [*prefix, initdb, "-D", data, "-U", "postgres", "-A", "trust"],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [
                *prefix,
                os.path.join(bindir, "pg_ctl"),
                "-D",
                data,
                "-w",
                "-l",
                os.path.join(root, "log"),
                "-o",
                f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off",
                "start",
            ],
            check=True,
            capture_output=True,
        )
        yield PgServer(f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres", "local binaries")
    finally:
        subprocess.run(
            [*prefix, os.path.join(bindir, "pg_ctl"), "-D", data, "-m", "immediate", "stop"],
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer | None]:
    with contextlib.ExitStack() as stack:
        server = (
            _from_env()
            or stack.enter_context(_from_docker())
            or stack.enter_context(_from_binaries())
        )
        if server is None:
            if _require_postgres():
                pytest.exit(
                    "PostgreSQL is required (CI=true or PGQRS_REQUIRE_POSTGRES=1) but none was found",
                    3,
                )
            print(
                "\n!!! No PostgreSQL found (no PGQRS_TEST_DATABASE_URL, Docker or local binaries): "
                "PostgreSQL tests are SKIPPED !!!"
            )
            yield None
            return
        # A template with the pgqrs tables, copied for each test that wants a store.
        template = server.create_database()
        engine = create_engine(server.sync_url(template))
        try:
            pgqrs.pgqrs_models().metadata.create_all(engine)
        finally:
            engine.dispose()
        server.admin(f"ALTER DATABASE {template} WITH is_template = true")
        server.template = template
        try:
            yield server
        finally:
            server.admin(f"ALTER DATABASE {template} WITH is_template = false")
            server.drop_database(template)


def _pg_or_skip(server: PgServer | None) -> PgServer:
    if server is None:
        pytest.skip("no PostgreSQL server available")
    return server


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def empty_db_url(backend: str, pg_server: PgServer | None, tmp_path: object) -> Iterator[str]:
    """URL of a fresh, empty database (no pgqrs tables) on the test's backend."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path}/empty.db"
        return
    server = _pg_or_skip(pg_server)
    name = server.create_database()
    try:
        yield server.async_url(name)
    finally:
        server.drop_database(name)


@pytest.fixture
def db_url(backend: str, pg_server: PgServer | None, tmp_path: object) -> Iterator[str]:
    """URL of a fresh database with the pgqrs tables installed."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path}/pgqrs.db"
        engine = create_engine(url)
        try:
            pgqrs.pgqrs_models().metadata.create_all(engine)
        finally:
            engine.dispose()
        yield url
        return
    server = _pg_or_skip(pg_server)
    name = server.create_database(server.template)
    try:
        yield server.async_url(name)
    finally:
        server.drop_database(name)


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[pgqrs.Store]:
    """A Store on a fresh database with the tables installed."""
    s = await pgqrs.connect(db_url)
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def wait_until():  # type: ignore[no-untyped-def]
    """Await a condition with a deadline (for state that changes in other tasks/processes)."""
    import asyncio

    async def wait(predicate, timeout: float = 10.0, interval: float = 0.02):  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while True:
            value = await predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout}s")
            await asyncio.sleep(interval)

    return wait
