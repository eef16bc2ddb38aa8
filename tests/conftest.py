"""Test harness: every storage test runs on SQLite and on a real PostgreSQL server.

PostgreSQL is found in this order:
1. ``PGQRS_TEST_DATABASE_URL`` (a server URL whose user may CREATE DATABASE);
2. testcontainers, when a Docker daemon answers;
3. a throwaway cluster started from local PostgreSQL binaries (``initdb`` / ``pg_ctl``;
   as the ``postgres`` OS user when running as root).
If none is found, PostgreSQL tests are skipped and the run ends with one loud line saying
why and how to provide a server — unless ``CI=true`` or ``PGQRS_REQUIRE_POSTGRES=1``, where
that is a failure (exit status 3). ``PGQRS_TEST_PG_BINDIR`` names the directory of the
binaries to use instead of searching ``pg_config``, ``PATH`` and ``/usr/lib/postgresql``.

Isolation: each PostgreSQL test gets its own database (``CREATE DATABASE ... TEMPLATE`` of
a template built once per session); each SQLite test its own WAL file in ``tmp_path``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

import pgqrs_sqla as pgqrs

BACKENDS = ("sqlite", "postgresql")


def _required(variable: str) -> bool:
    """Whether a missing server fails the run (on CI, or with ``variable=1``), not skips."""
    return os.environ.get("CI", "").lower() == "true" or os.environ.get(variable) == "1"


def _require_postgres() -> bool:
    return _required("PGQRS_REQUIRE_POSTGRES")


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


#: How to make the PostgreSQL half of the suite run, for the line printed when it is skipped.
HOW_TO_ENABLE = (
    "set PGQRS_TEST_DATABASE_URL=postgresql://user@host:5432/postgres (a user that may "
    "CREATE DATABASE), start Docker, or install the PostgreSQL server binaries (initdb, pg_ctl)"
)
#: The testcontainers image the Docker path starts.
POSTGRES_IMAGE = "postgres:16-alpine"
#: Where the sources that found no server leave their reasons, for the summary line.
_NO_POSTGRES = pytest.StashKey[str]()
#: Which PostgreSQL the run used ("PostgreSQL: <how> at <url>"), for the summary line.
_PG_USED = pytest.StashKey[str]()


def _one_line(text: str | bytes, limit: int = 300) -> str:
    """A command's output folded onto one line (for the one summary line)."""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    folded = " | ".join(line.strip() for line in text.splitlines() if line.strip())
    return folded if len(folded) <= limit else folded[: limit - 3] + "..."


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


def _postgres_container(**options: Any) -> Any:
    """The testcontainers PostgreSQL container the Docker path starts (not started yet).

    Imported from ``testcontainers.community.postgres``: testcontainers 4.x deprecated the
    top-level ``testcontainers.postgres``, and that warning is attributed to the importing
    module (this one), so no ``filterwarnings`` entry for testcontainers' own modules
    silences it - under ``filterwarnings = error`` the import itself would fail.
    """
    try:
        from testcontainers.community.postgres import PostgresContainer
    except ImportError:  # an older 4.x, before the move, where the old path is not deprecated
        from testcontainers.postgres import PostgresContainer
    return PostgresContainer(POSTGRES_IMAGE, driver="psycopg", **options)


def _docker_answers(notes: list[str]) -> bool:
    if not (os.environ.get("DOCKER_HOST") or os.path.exists("/var/run/docker.sock")):
        notes.append("no Docker (DOCKER_HOST unset, no /var/run/docker.sock)")
        return False
    import gc
    import warnings

    problem = None
    with warnings.catch_warnings():
        # A failed ping leaves docker-py's socket to the garbage collector (and the
        # exception's traceback keeps it alive): both are dropped inside this block.
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            import docker  # type: ignore[import-untyped]

            client = docker.from_env(timeout=3)
            try:
                client.ping()
            finally:
                client.close()
        except Exception as error:
            problem = _one_line(str(error), 120)
        gc.collect()
    if problem is not None:
        notes.append(f"Docker does not answer ({problem})")
        return False
    return True


@contextlib.contextmanager
def _from_docker(notes: list[str]) -> Iterator[PgServer | None]:
    if not _docker_answers(notes):
        yield None
        return
    container = _postgres_container()
    try:
        container.start()
    except Exception as error:  # e.g. the image cannot be pulled: try the next source
        notes.append(
            f"Docker: the {POSTGRES_IMAGE} container did not start ({_one_line(str(error))})"
        )
        with contextlib.suppress(Exception):
            container.stop()
        yield None
        return
    try:
        yield PgServer(_psycopg(container.get_connection_url()), "testcontainers")
    finally:
        container.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _bindir_candidates() -> list[str]:
    """Directories that may hold initdb: ``PGQRS_TEST_PG_BINDIR`` alone if set, else
    ``pg_config --bindir``, ``PATH``, and Debian's ``/usr/lib/postgresql/*/bin``."""
    chosen = os.environ.get("PGQRS_TEST_PG_BINDIR")
    if chosen:
        return [chosen]
    candidates = []
    with contextlib.suppress(Exception):
        candidates.append(
            subprocess.run(
                ["pg_config", "--bindir"], capture_output=True, text=True, check=True
            ).stdout.strip()
        )
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(os.path.dirname(on_path))
    return candidates + sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)


@contextlib.contextmanager
def _from_binaries(
    notes: list[str],
    bindirs: list[str] | None = None,
    *,
    os_user: str = "postgres",
) -> Iterator[PgServer | None]:
    """A throwaway cluster from local binaries; ``None`` (and a note why) if it cannot start.

    initdb refuses to run as root, so as root the cluster runs as ``os_user``.
    """
    candidates = _bindir_candidates() if bindirs is None else bindirs
    initdb = next(
        (
            os.path.join(d, "initdb")
            for d in candidates
            if d and os.path.exists(os.path.join(d, "initdb"))
        ),
        None,
    )
    if initdb is None:
        where = ", ".join(candidates) or "no candidate directory"
        notes.append(f"no local initdb (looked in: {where}; or set PGQRS_TEST_PG_BINDIR)")
        yield None
        return
    prefix: list[str] = []
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(os_user)
        except KeyError:
            notes.append(
                f"local binaries: running as root and there is no {os_user!r} OS user to run "
                "initdb as (initdb refuses root)"
            )
            yield None
            return
        prefix = ["runuser", "-u", os_user, "--"]
    bindir = os.path.dirname(initdb)
    root = tempfile.mkdtemp(prefix="pgqrs-pg-")
    data, log, port = os.path.join(root, "data"), os.path.join(root, "log"), _free_port()
    pg_ctl = os.path.join(bindir, "pg_ctl")
    started = False
    try:
        try:
            if prefix:
                shutil.chown(root, os_user)
            subprocess.run(
                [*prefix, initdb, "-D", data, "-U", "postgres", "-A", "trust"],
                check=True,
                capture_output=True,
            )
        except (OSError, subprocess.CalledProcessError) as error:
            output = getattr(error, "stderr", None) or str(error)
            notes.append(f"local binaries: {initdb} failed: {_one_line(output)}")
        else:
            try:
                subprocess.run(
                    [
                        *prefix,
                        pg_ctl,
                        "-D",
                        data,
                        "-w",
                        "-l",
                        log,
                        "-o",
                        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off",
                        "start",
                    ],
                    check=True,
                    capture_output=True,
                )
                started = True
            except (OSError, subprocess.CalledProcessError) as error:
                # pg_ctl says only "could not start server"; the reason ends its log.
                output = _one_line(getattr(error, "stderr", None) or str(error), 100)
                with contextlib.suppress(OSError), open(log, errors="replace") as f:
                    output += " | log: ..." + _one_line(f.read(), 10_000)[-300:]
                notes.append(f"local binaries: {pg_ctl} start failed: {output}")
        yield (
            PgServer(f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres", "local binaries")
            if started
            else None
        )
    finally:
        if os.path.isdir(data):  # also after a failed start: pg_ctl -w may have given up early
            subprocess.run(
                [*prefix, pg_ctl, "-D", data, "-m", "immediate", "stop"], capture_output=True
            )
        shutil.rmtree(root, ignore_errors=True)


def _find_server(config: pytest.Config, stack: contextlib.ExitStack) -> PgServer | None:
    """The server this run uses, from the sources above in order; ``None`` if none answers.

    A missing server ends the run (exit status 3) when one is required; otherwise its reasons
    go to the stash, for the loud last line (a print() in a fixture would be captured).
    """
    notes: list[str] = ["PGQRS_TEST_DATABASE_URL is not set"]
    server = (
        _from_env()
        or stack.enter_context(_from_docker(notes))
        or stack.enter_context(_from_binaries(notes))
    )
    if server is None:
        found = "; ".join(notes)
        if _require_postgres():
            pytest.exit(
                "PostgreSQL is required (CI=true or PGQRS_REQUIRE_POSTGRES=1) but none was "
                f"found: {found}. To provide one: {HOW_TO_ENABLE}",
                3,
            )
        config.stash[_NO_POSTGRES] = found
        return None
    config.stash[_PG_USED] = _server_line(server.how, server.url)
    return server


# ---------------------------------------------------------------- parallel runs (pytest-xdist)
#
# Under ``-n N`` the controller process finds the server once, before the workers start, and
# hands it to them in the environment they inherit: a server the harness starts itself
# (testcontainers, local binaries) is started once, not once per worker, and the "no server"
# verdict (a failure on CI, a loud last line elsewhere) is the controller's, printed once.

#: Set by the controller for its workers: how it found the server (for their summary).
_SERVER_HOW = "PGQRS_TEST_SERVER_HOW"
#: Set by the controller for its workers when it found no server: why (they skip at once).
_NO_SERVER = "PGQRS_TEST_NO_POSTGRES"
#: The controller's server, stopped when the run ends.
_CONTROLLER_SERVER = pytest.StashKey[contextlib.ExitStack]()


def _is_xdist_controller(config: pytest.Config) -> bool:
    numprocesses = getattr(config.option, "numprocesses", None)
    return bool(numprocesses) and not hasattr(config, "workerinput")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    if not _is_xdist_controller(config):
        return
    stack = contextlib.ExitStack()
    config.stash[_CONTROLLER_SERVER] = stack
    server = _find_server(config, stack)
    if server is None:
        os.environ[_NO_SERVER] = config.stash[_NO_POSTGRES]
        return
    if not os.environ.get("PGQRS_TEST_DATABASE_URL"):
        os.environ["PGQRS_TEST_DATABASE_URL"] = server.url
        os.environ[_SERVER_HOW] = server.how


#: Where the long tests are, longest chains first: xdist hands tests to its workers in
#: collection order, so a long test collected last runs alone at the end while the other
#: workers idle. Collected first, they overlap with the many short ones.
SLOW_FIRST = (
    "tests/unit/test_docs_site.py",  # one group: the site's build, then its checks
    "tests/migrations/test_wheel.py",  # one group: the wheel's build and install
    "tests/unit/test_error_types.py",  # the group "mypy" with the next
    "tests/unit/test_typed_checking.py",
    "tests/unit/test_bench_smoke.py",
    "tests/unit/test_harness.py",
)
# (The reliability tests stay where they are collected: run side by side on every worker,
# each starting worker processes, they starved each other on 2 cores.)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Long tests first (:data:`SLOW_FIRST`); otherwise the collection order, unchanged."""

    def rank(item: pytest.Item) -> int:
        for i, prefix in enumerate(SLOW_FIRST):
            if item.nodeid.startswith(prefix):
                return i
        return len(SLOW_FIRST)

    items.sort(key=rank)  # stable: same-rank tests keep their order


@pytest.fixture(scope="session")
def pg_server(request: pytest.FixtureRequest) -> Iterator[PgServer | None]:
    with contextlib.ExitStack() as stack:
        if _NO_SERVER in os.environ:  # an xdist worker whose controller found none
            request.config.stash[_NO_POSTGRES] = os.environ[_NO_SERVER]
            yield None
            return
        server = _find_server(request.config, stack)
        if server is None:
            yield None
            return
        server.how = os.environ.get(_SERVER_HOW, server.how)
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


def _server_line(how: str, url: str) -> str:
    """``PostgreSQL: <how> at <url>``, the password hidden (even in a URL that will not parse)."""
    try:
        shown = make_url(url).set(drivername="postgresql").render_as_string(hide_password=True)
    except Exception:
        shown = "<a URL that does not parse>"
    return f"PostgreSQL: {how} at {shown}"


def pytest_report_header(config: pytest.Config) -> str:
    """Which PostgreSQL this run uses, at the top (the summary repeats it at the bottom,
    since ``-q`` hides this header). A server the harness starts itself is known only when a
    test first needs it."""
    url = os.environ.get("PGQRS_TEST_DATABASE_URL")
    if url:
        return _server_line(os.environ.get(_SERVER_HOW, "PGQRS_TEST_DATABASE_URL"), url)
    return (
        "PostgreSQL: PGQRS_TEST_DATABASE_URL is not set; testcontainers or local binaries "
        "start a server when a test first needs one (the summary says which)"
    )


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """The server the run used, at the bottom: "PostgreSQL: local binaries at ...:42701"."""
    used = config.stash.get(_PG_USED, None)
    if used is not None:
        terminalreporter.write_line(used)


def pytest_unconfigure(config: pytest.Config) -> None:
    """The one loud line, last in the output: PostgreSQL tests were skipped, why, and how
    to run them. (Written after pytest's own summary, which would push it out of sight.)"""
    if _CONTROLLER_SERVER in config.stash:
        config.stash[_CONTROLLER_SERVER].close()
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    found = config.stash.get(_NO_POSTGRES, None)
    skipped = (
        ("PostgreSQL", None if found is None else f"no server found ({found})", HOW_TO_ENABLE),
        ("PgBouncer", config.stash.get(_NO_PGBOUNCER, None), HOW_TO_ENABLE_PGBOUNCER),
    )
    for what, why, how in skipped:
        if why is not None and reporter is not None:
            reporter.write_sep(
                "!", f"{what} tests SKIPPED - {why}. To run them: {how}", red=True, bold=True
            )


# ---------------------------------------------------------------- PgBouncer

#: Where a missing PgBouncer leaves its reason, for the summary line.
_NO_PGBOUNCER = pytest.StashKey[str]()
HOW_TO_ENABLE_PGBOUNCER = "install PgBouncer (apt-get install pgbouncer) so `pgbouncer` is on PATH"


def _require_pgbouncer() -> bool:
    return _required("PGQRS_REQUIRE_PGBOUNCER")


@dataclass
class Bouncer:
    """A PgBouncer in transaction pooling mode in front of the test server."""

    port: int

    def url(self, server_url: str, driver: str = "postgresql") -> str:
        """``server_url`` (a database on the test server) reached through this PgBouncer."""
        return (
            make_url(server_url)
            .set(drivername=driver, host="127.0.0.1", port=self.port)
            .render_as_string(hide_password=False)
        )


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(scope="session")
def pgbouncer(request: pytest.FixtureRequest, pg_server: PgServer | None) -> Iterator[Bouncer]:
    """PgBouncer (``pool_mode = transaction``) on a free loopback port in front of the test
    server, in a temporary directory of its own, stopped at the end of the session.

    Without a ``pgbouncer`` binary the tests that use it are skipped and the run ends with
    one loud line; under ``CI=true`` (or ``PGQRS_REQUIRE_PGBOUNCER=1``) they fail instead.
    """
    server = pg_or_skip(pg_server)
    binary = shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.path.exists(p)), None
    )
    if binary is None:
        why = "no `pgbouncer` binary on PATH or in /usr/sbin"
        if _require_pgbouncer():
            pytest.fail(f"PgBouncer is required (CI=true) but {why}: {HOW_TO_ENABLE_PGBOUNCER}")
        request.config.stash[_NO_PGBOUNCER] = why
        pytest.skip(f"PgBouncer tests skipped: {why} (see the last line)")
    target = make_url(server.url)
    prefix: list[str] = []
    root = tempfile.mkdtemp(prefix="pgqrs-pgbouncer-")
    if os.geteuid() == 0:  # PgBouncer refuses to run as root
        prefix = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
    port = _free_port()
    password = f" password={target.password}" if target.password else ""
    config = os.path.join(root, "pgbouncer.ini")
    with open(config, "w") as f:
        f.write(
            "[databases]\n"
            f"* = host={target.host or '127.0.0.1'} port={target.port or 5432} "
            f"user={target.username or 'postgres'}{password}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
            "auth_type = any\npool_mode = transaction\n"
            "max_client_conn = 500\ndefault_pool_size = 20\n"
            f"logfile = {root}/pgbouncer.log\npidfile = {root}/pgbouncer.pid\n"
            "ignore_startup_parameters = extra_float_digits\n"
        )
    proc = subprocess.Popen([*prefix, binary, config], stderr=subprocess.PIPE)
    try:
        if not _wait_for_port(port, proc):
            proc.kill()
            output = _one_line(proc.communicate()[1] or b"")
            with contextlib.suppress(OSError), open(f"{root}/pgbouncer.log") as log:
                output += " | log: " + _one_line(log.read())
            why = f"{binary} did not start: {output}"
            if _require_pgbouncer():
                pytest.fail(f"PgBouncer is required (CI=true) but {why}")
            request.config.stash[_NO_PGBOUNCER] = why
            pytest.skip(f"PgBouncer tests skipped: {why}")
        yield Bouncer(port)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def bouncer_db(pg_server: PgServer | None, pgbouncer: Bouncer) -> Iterator[str]:
    """URL (asyncpg) of a fresh database with the pgqrs tables, reached through PgBouncer."""
    server = pg_or_skip(pg_server)
    name = server.create_database(server.template)
    try:
        yield pgbouncer.url(server.async_url(name))
    finally:
        server.drop_database(name)


def pg_or_skip(server: PgServer | None) -> PgServer:
    if server is None:
        pytest.skip("no PostgreSQL server found (why, and how to provide one: see the last line)")
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
    server = pg_or_skip(pg_server)
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
    server = pg_or_skip(pg_server)
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
    """Await a condition with a deadline (for state that changes in other tasks/processes):
    :func:`tests._wait.eventually`, as a fixture."""
    from tests._wait import eventually

    async def wait(predicate, timeout: float = 30.0, interval: float = 0.02):  # type: ignore[no-untyped-def]
        return await eventually(predicate, timeout=timeout, interval=interval)

    return wait


@pytest.fixture
async def run_worker(store: pgqrs.Store) -> AsyncIterator[Callable[..., Awaitable[pgqrs.Worker]]]:
    """Start a worker for ``workflow`` (created, with ``retry=`` as its policy) running
    ``handler``; every worker started is stopped at teardown."""
    workers: list[pgqrs.Worker] = []

    async def start(
        workflow: str, handler: Callable[..., Awaitable[Any]], **options: Any
    ) -> pgqrs.Worker:
        await store.create_workflow(workflow, retry=options.pop("retry", None))
        options.setdefault("poll_interval", 0.05)
        worker = (
            await pgqrs.consumer(f"w{len(workers)}", None, workflow)
            .handler(handler)
            .create(store, **options)
        )
        worker.start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        await worker.stop(grace=5)


@dataclass
class TaggedEngine:
    """An app's engine whose every connection carries the tag ``orders-web`` (from its
    ``connect_args`` on PostgreSQL, a ``connect`` event on SQLite), and the query reading it."""

    engine: AsyncEngine
    probe: str


@pytest.fixture
async def tagged_app_engine(db_url: str, backend: str) -> AsyncIterator[TaggedEngine]:
    """A :class:`TaggedEngine` on the test database, disposed at teardown: a pool built
    from the app engine's URL alone would not carry the tag."""
    from sqlalchemy import event
    from sqlalchemy.ext.asyncio import create_async_engine

    from pgqrs_sqla.store import normalise_url

    url = normalise_url(db_url)
    if backend == "postgresql":
        engine = create_async_engine(
            url, connect_args={"server_settings": {"application_name": "orders-web"}}
        )
        probe = "SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()"
    else:
        engine = create_async_engine(url)

        @event.listens_for(engine.sync_engine, "connect")
        def tag(dbapi_connection: Any, record: Any) -> None:
            dbapi_connection.create_function("app_tag", 0, lambda: "orders-web")

        probe = "SELECT app_tag()"
    try:
        yield TaggedEngine(engine, probe)
    finally:
        await engine.dispose()
