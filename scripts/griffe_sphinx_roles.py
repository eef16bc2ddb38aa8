"""A Griffe extension for the docs site (mkdocs.yml): the docstrings' Sphinx roles as links.

The docstrings write cross-references the Sphinx way (``:class:`Store```,
``:meth:`~pgqrs_sqla.Worker.health```), which Markdown would show as literal text. Before
mkdocstrings renders them, each role becomes an optional autoref: a link to the object's
entry on the reference page when it has one, plain code otherwise (an internal helper), so
the strict build never fails on a role. Names resolve the way Python would from the
docstring's own scope, then move to the facade (``pgqrs_sqla.store.Store`` is rendered as
``pgqrs_sqla.Store``). A paragraph ending in reST's ``::`` loses one colon: the indented
block after it is already a Markdown code block.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|meth|func|attr|exc|data|mod|obj):`(~?)([\w.]+)`")
LITERAL_MARKER = re.compile(r"(?<=\S)::(?=\n[ \t]*\n)")


def _objects(obj: griffe.Object) -> list[griffe.Object]:
    found = [obj]
    for member in obj.members.values():
        if not member.is_alias:
            found += _objects(member)  # type: ignore[arg-type]
    return found


class SphinxRoles(griffe.Extension):
    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        # The facade's re-exports: canonical path -> public path.
        public = {
            member.target_path: member.path
            for member in pkg.members.values()
            if member.is_alias and member.target_path.startswith(pkg.path + ".")
        }
        for obj in _objects(pkg):
            if obj.docstring is not None:
                obj.docstring.value = self._rewrite(obj, obj.docstring.value, public)

    @staticmethod
    def _rewrite(obj: griffe.Object, text: str, public: dict[str, str]) -> str:
        def link(match: re.Match[str]) -> str:
            short, name = match.groups()
            shown = name.rsplit(".", 1)[-1] if short else name
            head, _, rest = name.partition(".")
            try:
                path: str | None = obj.resolve(head) + (f".{rest}" if rest else "")
            except griffe.NameResolutionError:
                path = name if head == obj.package.path else None
            if path is None:
                return f"`{shown}`"
            for canonical, facade in public.items():
                if path == canonical or path.startswith(canonical + "."):
                    path = facade + path[len(canonical) :]
                    break
            return (
                f'<autoref identifier="{html.escape(path)}" optional>'
                f"<code>{html.escape(shown)}</code></autoref>"
            )

        return LITERAL_MARKER.sub(":", ROLE.sub(link, text))
