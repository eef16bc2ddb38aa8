"""Fixtures for the Alembic tests: a host app, and logging put back after Alembic's env.py
(``fileConfig`` disables every logger that exists when it runs)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._cli import kept_logging
from tests.migrations.hostapp import HostApp


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    with kept_logging():
        yield


@pytest.fixture
def app(empty_db_url: str, tmp_path: Path) -> Iterator[HostApp]:
    """A host app on a fresh, empty database of the test's backend."""
    host = HostApp(tmp_path, empty_db_url)
    yield host
    host.close()
