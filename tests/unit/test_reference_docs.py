"""docs/reference.md is generated from the code and must not go stale."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_reference_page_is_current() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_reference.py"), "--check"])
    assert done.returncode == 0, "docs/reference.md is stale: run `python scripts/gen_reference.py`"
