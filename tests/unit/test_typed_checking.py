"""mypy --strict checks ``trigger(params)`` against a typed workflow's params type.

``tests/typecheck/typed_refs.py`` is what a user writes (clean, with ``assert_type`` on what
each call returns); ``typed_refs_wrong.py`` holds the mistakes, each marked on its line with
the error code mypy must report there, and nothing else may be reported."""

from __future__ import annotations

import pytest

from tests._mypy import mypy_strict_report


@pytest.mark.xdist_group("mypy")
@pytest.mark.timeout(900)
def test_mypy_strict_accepts_typed_refs_and_rejects_the_wrong_params() -> None:
    report = mypy_strict_report()
    assert report.errors("typed_refs.py") == set(), report.output
    expected = report.marked("typed_refs_wrong.py")
    assert len(expected) == 4
    assert report.errors("typed_refs_wrong.py") == expected, report.output
