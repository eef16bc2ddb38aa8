"""The public surface is exactly what `pgqrs_sqla.__all__` says, and it stays light."""

from __future__ import annotations

import subprocess
import sys

import pgqrs_sqla


def test_all_is_sorted_and_complete() -> None:
    public = {name for name in vars(pgqrs_sqla) if not name.startswith("_")}
    modules = {n for n in public if type(getattr(pgqrs_sqla, n)).__name__ == "module"}
    # ruff's RUF022 keeps __all__ sorted; here: no duplicates, nothing missing, nothing extra.
    assert len(set(pgqrs_sqla.__all__)) == len(pgqrs_sqla.__all__)
    assert set(pgqrs_sqla.__all__) == public - modules


def test_every_export_has_a_docstring() -> None:
    missing = [
        name
        for name in pgqrs_sqla.__all__
        if callable(getattr(pgqrs_sqla, name))
        and not (getattr(pgqrs_sqla, name).__doc__ or "").strip()
    ]
    assert missing == []


def test_import_is_light() -> None:
    code = "import sys, pgqrs_sqla; print(','.join(m for m in ('rich', 'starlette', 'pgqrs_sqla.cli', 'psycopg', 'opentelemetry') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
