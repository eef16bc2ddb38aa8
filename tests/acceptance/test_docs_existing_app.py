"""docs/installation.md and docs/existing-app.md run as written: every ```python block (as
one script per page, a new user's view), the console block marked ``<!-- test: run -->`` (as
shell commands in an empty directory), and the ``alembic.ini`` lines the page shows are the
ones the scaffold writes."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

from pgqrs_sqla.alembic_support import pgqrs_table_names
from tests.acceptance.docs_blocks import DOCS, run_page


def test_installation_page(tmp_path: Path) -> None:
    out = run_page("installation.md", tmp_path)
    assert "unsupported database 'mysql'" in out


def test_existing_app_page(tmp_path: Path) -> None:
    run_page("existing-app.md", tmp_path)


def blocks(page: str, lang: str, marker: str = "") -> list[str]:
    text = (DOCS / page).read_text()
    return re.findall(rf"{re.escape(marker)}\s*```{lang}\n(.*?)```", text, flags=re.S)


def test_new_app_commands_run_as_written(tmp_path: Path) -> None:
    [script] = blocks("existing-app.md", "console", "<!-- test: run -->")
    bin_dir = str(Path(sys.executable).parent)  # python and alembic of this environment
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "alembic" / "env.py").is_file()
    # `alembic check` passed (it exits non-zero on any difference); the tables are there.
    with sqlite3.connect(tmp_path / "app.db") as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == set(pgqrs_table_names()) | {"alembic_version"}

    # The ini lines the page shows for the shipped branch are the scaffold's own.
    [ini] = blocks("existing-app.md", "ini")
    written = (tmp_path / "alembic.ini").read_text().splitlines()
    for line in ini.splitlines():
        assert line in written, line
