"""The pgqrs durable-workflows guide's Python examples, run as written.

The guide lives in the team's shared folder beside this repository
(``../shared/reference/durable-workflows-guide.md``; ``PGQRS_GUIDE`` names another copy).
Its Python blocks run with only the swaps the guide itself implies: ``import pgqrs_sqla as
pgqrs`` for ``import pgqrs``, the test database for ``postgresql://localhost/mydb``, and
stand-ins for the helpers it leaves to the reader (``fetch_from_api``, ``is_transient``,
``transform_logic``, ``save_to_db``). The worker block (``poll_forever``) runs in its own
process, as in the guide, and is stopped with SIGINT, as a user would stop it.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import pgqrs_sqla as pgqrs

ROOT = Path(__file__).resolve().parents[2]
GUIDE = Path(
    os.environ.get(
        "PGQRS_GUIDE", ROOT.parent / "shared" / "reference" / "durable-workflows-guide.md"
    )
)
GUIDE_DSN = "postgresql://localhost/mydb"

STAND_INS = """
async def fetch_from_api(url):
    return [1, 2, 3]

def is_transient(error):
    return isinstance(error, ConnectionError)

def transform_logic(data):
    return [x * 10 for x in data]

async def save_to_db(rows):
    pass
"""


def guide_python_blocks() -> list[str]:
    """The guide's ``=== "Python"`` tab blocks, dedented, in order."""
    text = GUIDE.read_text()
    blocks = re.findall(r'=== "Python"\n\s*\n( {4}```python\n.*?\n {4}```)', text, flags=re.S)
    return [textwrap.dedent(b).split("\n", 1)[1].rsplit("```", 1)[0] for b in blocks]


def as_ours(block: str, url: str) -> str:
    block = re.sub(r"^import pgqrs$", "import pgqrs_sqla as pgqrs", block, flags=re.M)
    block = re.sub(r"^from pgqrs import", "from pgqrs_sqla import", block, flags=re.M)
    return block.replace(GUIDE_DSN, url)


@pytest.fixture
def blocks(db_url: str) -> list[str]:
    if not GUIDE.exists():
        pytest.skip(f"the guide is not beside this checkout ({GUIDE}); set PGQRS_GUIDE")
    found = [as_ours(b, db_url) for b in guide_python_blocks()]
    assert len(found) == 3, "the guide's Python half: handler, worker, trigger"
    return found


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_the_guides_python_examples_run_as_written(
    blocks: list[str], db_url: str, tmp_path: Path
) -> None:
    handler, worker, trigger = blocks
    worker_script = tmp_path / "guide_worker.py"
    worker_script.write_text(STAND_INS + handler + "\n" + worker)
    trigger_script = tmp_path / "guide_trigger.py"
    trigger_script.write_text(
        trigger + "\nprint(asyncio.run(handle_request('https://example.com/data')))\n"
    )

    proc = subprocess.Popen(
        [sys.executable, str(worker_script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        # Ctrl-C as in a terminal, however this run was started: a shell that starts a job
        # in the background (`cmd &`) has it ignore SIGINT, and the child would inherit that.
        preexec_fn=_default_sigint,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "Worker started. Waiting for runs..."
        done = subprocess.run(
            [sys.executable, str(trigger_script)],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        run_id = int(done.stdout.strip().splitlines()[-1])

        asyncio.run(check_run(db_url, run_id))

        proc.send_signal(signal.SIGINT)  # Ctrl-C: poll_forever stops, the worker row says so
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()  # reaps it and closes its pipes
    assert "[workflow] Starting pipeline for https://example.com/data" in out
    asyncio.run(check_worker_stopped(db_url))


async def check_run(url: str, run_id: int) -> None:
    store = await pgqrs.connect(url)
    try:
        assert await store.wait_for_run(run_id, timeout=30) == {"processed_count": 3}
        run = await store.get_run(run_id)
        assert [s.name for s in run.steps] == ["fetch_data", "transform_data", "save_results"]
        assert run.steps[1].output == [10, 20, 30]
    finally:
        await store.close()


async def check_worker_stopped(url: str) -> None:
    store = await pgqrs.connect(url)
    try:
        [info] = await store.list_workers()
        assert (info.name, info.port, info.status) == ("worker-1", 8080, "stopped")
    finally:
        await store.close()
