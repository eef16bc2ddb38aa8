"""The docs site (mkdocs.yml) builds under ``mkdocs build --strict``, and its API reference
covers the whole public API with whole docstrings."""

from __future__ import annotations

import html
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import pgqrs_sqla

# Its tests share one built site (a session fixture): under pytest-xdist they run on one
# worker (make test uses --dist loadgroup), so it is built once. (A module fixture was built
# twice there: the worker ran other modules' tests between this module's.)
pytestmark = pytest.mark.xdist_group("docs_site")

ROOT = Path(__file__).resolve().parents[2]
ROLE = re.compile(r":(?:py:)?\w+:`(~?)([\w.]+)`")


def words(text: str) -> str:
    """Letters and digits only, one space apart: markup-free text to compare."""
    return " ".join(re.findall(r"[A-Za-z0-9]+", text))


def docstring_words(text: str) -> str:
    """A docstring's words as the site shows them (a ``~`` role shows its last name)."""
    return words(ROLE.sub(lambda m: m[2].rsplit(".", 1)[-1] if m[1] else m[2], text))


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}{done.stderr}"
    return out


def test_every_public_name_has_a_reference_entry() -> None:
    """Each name of ``pgqrs_sqla.__all__`` has its ``::: pgqrs_sqla.<name>`` directive: a name
    added to the facade without one fails here."""
    page = (ROOT / "docs" / "reference.md").read_text()
    directives = set(re.findall(r"^::: pgqrs_sqla\.(\w+)$", page, flags=re.M))
    assert set(pgqrs_sqla.__all__) - directives == set()


def test_reference_page_has_whole_docstrings(site: Path) -> None:
    """Every public class's, function's, method's and property's docstring (inherited
    methods included: most of ``Store``'s come from its bases) appears whole on the rendered
    page: no summary cut at its first line, as the old generator's were."""
    page = words(
        html.unescape(re.sub(r"<[^>]+>", " ", (site / "reference/index.html").read_text()))
    )
    checked = 0
    for name in pgqrs_sqla.__all__:
        obj = getattr(pgqrs_sqla, name)
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        assert docstring_words(inspect.getdoc(obj) or "") in page, name
        members: dict[str, object] = {}
        for klass in reversed(obj.__mro__ if inspect.isclass(obj) else ()):
            if klass.__module__.startswith("pgqrs_sqla"):
                members.update(vars(klass))
        for attr, member in members.items():
            target = member.fget if isinstance(member, property) else member
            if attr.startswith("_") or not inspect.isfunction(target) or not target.__doc__:
                continue
            assert docstring_words(inspect.cleandoc(target.__doc__)) in page, f"{name}.{attr}"
            checked += 1
    assert checked >= 50
    assert "DESIGN.md" not in page


def test_sphinx_roles_become_links(site: Path) -> None:
    """The docstrings' Sphinx roles render as links to the reference entries, not as
    ``:class:`` text."""
    page = (site / "reference/index.html").read_text()
    assert ":class:" not in page and ":meth:" not in page and ":func:" not in page
    assert 'href="#pgqrs_sqla.Store.install"><code>Store.install</code></a>' in page


def test_the_site_loads_nothing_from_the_internet(site: Path) -> None:
    """No web fonts, scripts or stylesheets from a CDN: the site builds and reads offline."""
    for page in site.rglob("*.html"):
        text = page.read_text()
        assert not re.search(r"<(?:script|link|img)\b[^>]*(?:src|href)=\"https?://", text), page
