"""docs/installation.md and docs/existing-app.md run as written: every ```python block (as
one script per page, a new user's view), the console block marked ``<!-- test: run -->`` (as
shell commands in an empty directory), and the ``alembic.ini`` lines the page shows are the
ones the scaffold writes."""

from __future__ import annotations

import os
import re
import shlex
import sqlite3
import subprocess
import sys
from pathlib import Path

from pgqrs_sqla.alembic_support import pgqrs_table_names
from tests._cli import run_alembic
from tests.acceptance.docs_blocks import DOCS, run_page


def test_installation_page(tmp_path: Path) -> None:
    """It runs, and the SQLite file it keeps in a temporary folder goes when its script ends:
    the temp directory it was given (TMPDIR) is empty afterwards."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    out = run_page("installation.md", tmp_path, {"TMPDIR": str(scratch)})
    assert "unsupported database 'mysql'" in out
    assert list(scratch.iterdir()) == []


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


def test_the_branch_console_blocks_show_what_alembic_prints(tmp_path: Path) -> None:
    """The ``<!-- test: heads -->`` blocks of existing-app.md, run with Alembic's own command
    line (in this process: tests/_cli.py) in a scaffolded app: each ``$`` command must succeed, and where the page shows its output,
    Alembic prints exactly that - except the app's own revision ids, which Alembic makes up.
    The pgqrs revision ids shown must be the shipped branch's, so a new pgqrs revision makes
    this test say which lines of the page to update."""
    from pgqrs_sqla.alembic_support import scaffold

    scaffold(tmp_path / "alembic", template="sync")
    app_id = re.compile(r"^[0-9a-f]{12}\b", flags=re.M)
    checked = 0
    for block in blocks("existing-app.md", "console", "<!-- test: heads -->"):
        steps: list[tuple[str, list[str]]] = []
        for line in block.splitlines():
            if line.startswith("$ "):
                steps.append((line[2:], []))
            elif line.strip():
                steps[-1][1].append(line)
        for command_line, shown in steps:
            program, *argv = shlex.split(command_line)
            assert program == "alembic", command_line
            done = run_alembic(*argv, cwd=tmp_path)
            assert done.returncode == 0, f"{command_line}:\n{done.stderr}"
            if shown:
                printed = app_id.sub("<app revision>", done.stdout).splitlines()
                expected = app_id.sub("<app revision>", "\n".join(shown)).splitlines()
                assert printed == expected, (
                    f"docs/existing-app.md shows, for `{command_line}`:\n{shown}\n"
                    f"but Alembic prints:\n{done.stdout}\n(update the page's console block)"
                )
                checked += 1
    assert checked == 2
