"""The sync Alembic template on a plain ``postgresql://`` URL runs on psycopg (3); without it,
``alembic upgrade`` says what to install (or which template to use instead) rather than
``ModuleNotFoundError: No module named 'psycopg'`` - and touches nothing."""

from __future__ import annotations

import sys

import pytest
from alembic import command

from pgqrs_sqla import ConfigurationError
from pgqrs_sqla.alembic_support import migration_url
from tests.migrations.hostapp import HostApp


def without_psycopg(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # `import psycopg` now fails


@pytest.mark.parametrize(
    "url", ["postgresql://app@db/app", "postgres://app@db/app", "postgresql+psycopg://app@db/app"]
)
def test_migration_url_says_to_install_the_psycopg_extra(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    without_psycopg(monkeypatch)
    with pytest.raises(ConfigurationError) as caught:
        migration_url(url, asynchronous=False)
    message = str(caught.value)
    assert 'pip install "pgqrs-sqla[psycopg]"' in message
    assert "--template async" in message and "postgresql+asyncpg://" in message
    # Not needed on the async side, nor for SQLite.
    if "psycopg" not in url:
        assert migration_url(url, asynchronous=True).drivername == "postgresql+asyncpg"
    assert migration_url("sqlite:///app.db", asynchronous=False).drivername == "sqlite"


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_sync_template_upgrade_without_psycopg_says_what_to_do(
    app: HostApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    app.scaffold("sync")
    cfg = app.config(url=app.url)  # postgresql://... as the user writes it
    without_psycopg(monkeypatch)
    with pytest.raises(ConfigurationError, match=r'pip install "pgqrs-sqla\[psycopg\]"'):
        command.upgrade(cfg, "heads")
    monkeypatch.undo()
    assert app.tables() == set()
