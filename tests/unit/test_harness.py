"""The test harness's own promises (tests/conftest.py): the Docker path imports and builds
its container under ``filterwarnings = error``; when no PostgreSQL is found the run ends
with one loud line saying why and how to provide one (a failure under ``CI=true``); the
local-binaries path steps aside cleanly when it cannot start a cluster."""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import HOW_TO_ENABLE, _from_binaries

ROOT = Path(__file__).resolve().parents[2]


def run_pytest(
    *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run pytest on ``args`` in a child process (from the repository root, with ``env``).

    Less what an xdist controller hands its workers (this test may run in one): the child
    finds its server by itself.
    """
    handed_down = ("PGQRS_TEST_SERVER_HOW", "PGQRS_TEST_NO_POSTGRES")
    return subprocess.run(
        [sys.executable, "-m", "pytest", *args, "-p", "no:cacheprovider"],
        cwd=ROOT,
        env={k: v for k, v in env.items() if k not in handed_down},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


#: What the stand-in initdb below says on stderr before failing.
INITDB_ERROR = "initdb: error: stand-in initdb failed on purpose"
#: What the stand-in pg_ctl below writes to the server log before failing to start.
SERVER_LOG_ERROR = "FATAL:  stand-in server could not start on purpose"


@contextlib.contextmanager
def stand_in_bindir(**scripts: str) -> Iterator[str]:
    """A directory of executable shell scripts standing in for PostgreSQL's binaries.

    Made with ``tempfile`` rather than ``tmp_path``: as root the harness runs them as the
    ``postgres`` OS user, who cannot enter pytest's private ``tmp_path``.
    """
    directory = tempfile.mkdtemp(prefix="pgqrs-fake-bin-")
    try:
        os.chmod(directory, 0o755)
        for name, body in scripts.items():
            script = Path(directory, name)
            script.write_text(f"#!/bin/sh\n{body}\n")
            script.chmod(0o755)
        yield directory
    finally:
        shutil.rmtree(directory)


@pytest.fixture
def failing_bindir() -> Iterator[str]:
    """An ``initdb`` that writes :data:`INITDB_ERROR` to stderr and exits 1."""
    with stand_in_bindir(initdb=f"echo '{INITDB_ERROR}' >&2; exit 1") as directory:
        yield directory


def no_postgres_env(bindir: str, **extra: str) -> dict[str, str]:
    """An environment in which the harness finds no PostgreSQL: no URL, a Docker socket
    that does not exist, and only ``bindir`` to look for binaries in."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PGQRS_TEST_DATABASE_URL", "CI", "PGQRS_REQUIRE_POSTGRES")
    }
    env.update(DOCKER_HOST="unix:///nonexistent/docker.sock", PGQRS_TEST_PG_BINDIR=bindir, **extra)
    return env


def test_the_docker_path_imports_and_builds_its_container_with_warnings_as_errors() -> None:
    # A fresh interpreter, so the import really happens (and warns, if it would) here;
    # `-W error` is stricter than the suite's filterwarnings. docker_client_kw names the
    # API version, so no Docker daemon needs to answer for the container to be built.
    script = (
        "from tests.conftest import POSTGRES_IMAGE, _postgres_container\n"
        "c = _postgres_container(docker_client_kw={'version': '1.44'})\n"
        "assert c.image.endswith(POSTGRES_IMAGE) and c.driver == '+psycopg', vars(c)\n"
        "c.get_docker_client().client.close()\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", script],
        cwd=ROOT,
        env={**os.environ, "DOCKER_HOST": "unix:///nonexistent/docker.sock"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


#: The run-level promises hold for a serial run and for a parallel one (pytest-xdist), where
#: the controller finds the server once for its workers.
PARALLEL = pytest.mark.parametrize("parallel", [(), ("-n", "2")], ids=["serial", "xdist"])


@PARALLEL
def test_no_postgres_ends_the_run_with_one_loud_line_saying_how(
    failing_bindir: str, parallel: tuple[str, ...]
) -> None:
    test = "tests/integration/test_store.py::test_install_is_idempotent_and_check_is_clean"
    done = run_pytest(test, *parallel, env=no_postgres_env(failing_bindir))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed, 1 skipped" in done.stdout  # SQLite ran; PostgreSQL was skipped
    lines = [line for line in done.stdout.splitlines() if "PostgreSQL tests SKIPPED" in line]
    assert len(lines) == 1, done.stdout
    [line] = lines
    assert done.stdout.rstrip().endswith(line)  # the last line: nothing pushes it away
    assert "PGQRS_TEST_DATABASE_URL is not set" in line
    assert "Docker does not answer" in line
    assert INITDB_ERROR in line  # initdb's own stderr says what went wrong
    assert HOW_TO_ENABLE in line


@PARALLEL
def test_no_postgres_under_ci_is_a_failure_that_says_why(
    failing_bindir: str, parallel: tuple[str, ...]
) -> None:
    test = "tests/integration/test_store.py::test_install_is_idempotent_and_check_is_clean"
    done = run_pytest(test, *parallel, env=no_postgres_env(failing_bindir, CI="true"))
    assert done.returncode == 3, done.stdout + done.stderr
    output = done.stdout + done.stderr
    assert "PostgreSQL is required (CI=true or PGQRS_REQUIRE_POSTGRES=1)" in output
    assert INITDB_ERROR in output
    assert HOW_TO_ENABLE in output


def test_a_failing_initdb_gives_way_with_its_stderr(failing_bindir: str) -> None:
    notes: list[str] = []
    with _from_binaries(notes, [failing_bindir]) as server:
        assert server is None
    [note] = notes
    assert note.startswith(f"local binaries: {failing_bindir}/initdb failed: ")
    assert INITDB_ERROR in note


def test_a_failing_server_start_gives_way_with_the_end_of_its_log() -> None:
    # initdb succeeds (makes the data directory); `pg_ctl -D data -w -l log -o opts start`
    # logs a FATAL and fails.
    pg_ctl = (
        'if [ "$1" = "-D" ] && [ "$8" = "start" ]; then '
        f"echo '{SERVER_LOG_ERROR}' >> \"$5\"; "
        "echo 'pg_ctl: could not start server' >&2; exit 1; fi; exit 0"
    )
    with stand_in_bindir(initdb='mkdir -p "$2"', pg_ctl=pg_ctl) as bindir:
        notes: list[str] = []
        with _from_binaries(notes, [bindir]) as server:
            assert server is None
    [note] = notes
    assert note.startswith(f"local binaries: {bindir}/pg_ctl start failed: ")
    assert "pg_ctl: could not start server" in note
    assert SERVER_LOG_ERROR in note


@pytest.mark.skipif(os.geteuid() != 0, reason="the OS user is only needed when running as root")
def test_without_the_postgres_os_user_local_binaries_give_way(failing_bindir: str) -> None:
    notes: list[str] = []
    with _from_binaries(notes, [failing_bindir], os_user="pgqrs-no-such-user") as server:
        assert server is None
    assert notes == [
        "local binaries: running as root and there is no 'pgqrs-no-such-user' OS user to run "
        "initdb as (initdb refuses root)"
    ]


def test_the_run_says_which_postgresql_it_used() -> None:
    """At the top and the bottom (``-q`` hides the top), the password hidden."""
    test = "tests/integration/test_store.py::test_install_is_idempotent_and_check_is_clean"
    env = {
        **os.environ,
        "PGQRS_TEST_DATABASE_URL": "postgresql://postgres:s3cret@127.0.0.1:5432/postgres",
    }
    for quiet in ([], ["-q"]):
        done = run_pytest(test, *quiet, env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        line = "PostgreSQL: PGQRS_TEST_DATABASE_URL at postgresql://postgres:***@127.0.0.1:5432/postgres"
        assert done.stdout.count(line) == (1 if quiet else 2), done.stdout
        assert "s3cret" not in done.stdout + done.stderr


@pytest.mark.skipif(not glob.glob("/usr/lib/postgresql/*/bin/initdb"), reason="no initdb")
@PARALLEL
def test_a_cluster_the_harness_starts_is_named_in_the_summary(parallel: tuple[str, ...]) -> None:
    test = "tests/integration/test_store.py::test_install_is_idempotent_and_check_is_clean"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PGQRS_TEST_DATABASE_URL", "PGQRS_TEST_PG_BINDIR")
    }
    env["DOCKER_HOST"] = "unix:///nonexistent/docker.sock"
    done = run_pytest(test, "-q", *parallel, env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(
        r"^PostgreSQL: local binaries at postgresql://postgres@127\.0\.0\.1:\d+/postgres$",
        done.stdout,
        re.M,
    ), done.stdout
