"""docs/reference.md is generated from the code and must not go stale."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_reference_page_is_current() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_reference.py"), "--check"])
    assert done.returncode == 0, "docs/reference.md is stale: run `python scripts/gen_reference.py`"


def test_method_summaries_are_whole_first_paragraphs() -> None:
    """A member's summary line is its docstring's whole first paragraph, never its first
    physical line (which stopped ``autocommit``'s summary mid-sentence)."""
    import inspect

    import pgqrs_sqla

    page = (ROOT / "docs" / "reference.md").read_text()
    checked = 0
    for name in pgqrs_sqla.__all__:
        obj = getattr(pgqrs_sqla, name)
        if not inspect.isclass(obj):
            continue
        for attr in dir(obj):
            member = inspect.getattr_static(obj, attr, None)
            target = member.fget if isinstance(member, property) else member
            if attr.startswith("_") or not inspect.isfunction(target) or not target.__doc__:
                continue
            first = inspect.cleandoc(target.__doc__).split("\n\n", 1)[0]
            if "\n" in first:
                assert "  " + " ".join(first.split()) + "\n" in page, f"{name}.{attr}"
                checked += 1
    assert checked >= 12
    assert "DESIGN.md" not in page
