"""docs/workflows.md runs as written: its Python blocks, top to bottom, as one script."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "workflows.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_workflows_page_runs(empty_db_url: str, tmp_path: Path) -> None:
    script = tmp_path / "workflows_page.py"
    script.write_text("\n\n".join(python_blocks(DOC.read_text())))
    done = subprocess.run(
        [sys.executable, str(script)],
        env={**os.environ, "DATABASE_URL": empty_db_url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "[save_results] Saving 3 records" in done.stdout
