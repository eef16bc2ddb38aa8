"""mypy --strict checks ``trigger(params)`` against a typed workflow's params type.

``tests/typecheck/typed_refs.py`` is what a user writes (clean, with ``assert_type`` on what
each call returns); ``typed_refs_wrong.py`` holds the mistakes, each marked on its line with
the error code mypy must report there, and nothing else may be reported."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECKED = ROOT / "tests" / "typecheck"


@pytest.mark.timeout(900)
def test_mypy_strict_accepts_typed_refs_and_rejects_the_wrong_params(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-error-summary",
            "--show-error-codes",
            "--cache-dir",
            str(tmp_path / "mypy_cache"),
            str(CHECKED / "typed_refs.py"),
            str(CHECKED / "typed_refs_wrong.py"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    reported = {
        (Path(m[0]).name, int(m[1]), m[2])
        for m in re.findall(r"^(\S+\.py):(\d+): error: .*\[([\w-]+)\]$", done.stdout, re.M)
    }
    wrong = (CHECKED / "typed_refs_wrong.py").read_text().splitlines()
    expected = {
        ("typed_refs_wrong.py", number, marked.group(1))
        for number, line in enumerate(wrong, start=1)
        if (marked := re.search(r"# error: ([\w-]+)$", line))
    }
    assert len(expected) == 4
    assert reported == expected, done.stdout + done.stderr
