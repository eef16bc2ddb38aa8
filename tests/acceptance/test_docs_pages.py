"""The docs pages run as written (installation and existing-app: test_docs_existing_app.py)."""

from __future__ import annotations

from pathlib import Path

from tests.acceptance.docs_blocks import run_page


def test_workflows_page(empty_db_url: str, tmp_path: Path) -> None:
    out = run_page("workflows.md", tmp_path, {"DATABASE_URL": empty_db_url})
    assert "[save_results] Saving 3 records" in out


def test_operate_page(tmp_path: Path) -> None:
    run_page("operate.md", tmp_path)


def test_embedding_page(tmp_path: Path) -> None:
    run_page("embedding.md", tmp_path)


def test_queue_page(tmp_path: Path) -> None:
    run_page("queue.md", tmp_path)
