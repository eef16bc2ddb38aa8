"""One ``mypy --strict`` run over ``tests/typecheck/`` for the tests that check what a user's
type checker sees (test_error_types.py, test_typed_checking.py).

A cold mypy run over the package and SQLAlchemy takes tens of seconds of CPU, so the files are
checked together, once per test process (the tests share the xdist group ``mypy``), and each
test reads its own files' errors from the report. In a ``*_wrong.py`` file each line marked
``# error: <code>`` must be reported with that code, and nothing else may be.
"""

from __future__ import annotations

import functools
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ROOT / "tests" / "typecheck"

Error = tuple[int, str]  # (line, error code)


@dataclass(frozen=True)
class MypyReport:
    """Each checked file's reported errors, and mypy's whole output."""

    reported: dict[str, set[Error]]
    output: str

    def errors(self, name: str) -> set[Error]:
        """What mypy reported in ``tests/typecheck/<name>``."""
        return self.reported.get(name, set())

    @staticmethod
    def marked(name: str) -> set[Error]:
        """The errors ``tests/typecheck/<name>`` marks with ``# error: <code>``."""
        lines = (CHECKED / name).read_text().splitlines()
        return {
            (number, marked.group(1))
            for number, line in enumerate(lines, start=1)
            if (marked := re.search(r"# error: ([\w-]+)$", line))
        }


@functools.cache
def mypy_strict_report() -> MypyReport:
    """``mypy --strict`` over every ``tests/typecheck/*.py``, run once per process."""
    files = sorted(str(path) for path in CHECKED.glob("*.py") if path.name != "__init__.py")
    argv = [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", "--show-error-codes"]
    with tempfile.TemporaryDirectory() as cache:
        done = subprocess.run(
            [*argv, "--cache-dir", cache, *files],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=900,
        )
    reported: dict[str, set[Error]] = {}
    for path, line, code in re.findall(
        r"^(\S+\.py):(\d+): error: .*\[([\w-]+)\]$", done.stdout, re.M
    ):
        reported.setdefault(Path(path).name, set()).add((int(line), code))
    assert done.returncode in (0, 1), done.stdout + done.stderr  # 2: mypy itself failed
    return MypyReport(reported, done.stdout + done.stderr)
