"""Run a docs page's ```python blocks, top to bottom, as one script (a new user's view)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"


def python_blocks(page: str) -> list[str]:
    """The ```python blocks of ``docs/<page>``, except those right after ``<!-- no-test -->``."""
    text = (DOCS / page).read_text()
    return [
        block
        for skip, block in re.findall(
            r"(<!-- no-test -->\s*)?```python\n(.*?)```", text, flags=re.S
        )
        if not skip
    ]


def run_page(
    page: str, tmp_path: Path, env: dict[str, str] | None = None, *, leak_check: bool = True
) -> str:
    """Run the page's python blocks as one script; it must exit 0 and, unless
    ``leak_check=False``, leave no ResourceWarning (unclosed connection or file)."""
    script = tmp_path / f"{Path(page).stem}_page.py"
    script.write_text("\n\n".join(python_blocks(page)))
    done = subprocess.run(
        # Development mode shows every ResourceWarning (an unclosed connection or file);
        # a page that leaks one fails.
        [sys.executable, "-X", "dev", "-W", "error::ResourceWarning", str(script)],
        cwd=tmp_path,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, f"{page} failed:\n{done.stderr}"
    assert not leak_check or "ResourceWarning" not in done.stderr, f"{page} leaks:\n{done.stderr}"
    return done.stdout


def console_lines(page: str) -> list[str]:
    """The command lines of the ```console blocks of ``docs/<page>``, top to bottom."""
    text = (DOCS / page).read_text()
    blocks = re.findall(r"```console\n(.*?)```", text, flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]
