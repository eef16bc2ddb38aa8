"""Fixtures for the Alembic tests: a host app, and logging put back after Alembic's env.py
(``fileConfig`` disables every logger that exists when it runs)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.migrations.hostapp import HostApp


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    loggers = {
        name: (lg.disabled, lg.level, list(lg.handlers), lg.propagate)
        for name, lg in logging.root.manager.loggerDict.items()
        if isinstance(lg, logging.Logger)
    }
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, lg in logging.root.manager.loggerDict.items():
        if not isinstance(lg, logging.Logger):
            continue
        if name in loggers:
            lg.disabled, level, lg.handlers[:], lg.propagate = loggers[name]
            lg.setLevel(level)
        else:
            lg.disabled = False


@pytest.fixture
def app(empty_db_url: str, tmp_path: Path) -> Iterator[HostApp]:
    """A host app on a fresh, empty database of the test's backend."""
    host = HostApp(tmp_path, empty_db_url)
    yield host
    host.close()
