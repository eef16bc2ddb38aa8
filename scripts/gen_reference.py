"""Write docs/reference.md from the public API's signatures and docstrings.

python scripts/gen_reference.py          # rewrite the page
python scripts/gen_reference.py --check  # exit 1 if the page is stale (the tests do this)
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import pgqrs_sqla

PAGE = Path(__file__).resolve().parents[1] / "docs" / "reference.md"


def doc(obj: object) -> str:
    return inspect.cleandoc(obj.__doc__ or "").strip()


def summary(obj: object) -> str:
    """The docstring's first paragraph on one line: a summary never stops mid-sentence."""
    return " ".join(doc(obj).split("\n\n", 1)[0].split())


def signature(obj: object) -> str:
    try:
        return str(inspect.signature(obj))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return ""


def render() -> str:
    out = [
        "# API reference",
        "",
        "Generated from the code by `scripts/gen_reference.py` (the tests fail if it is stale).",
        "Everything here is importable from `pgqrs_sqla`; nothing else is public.",
        "",
    ]
    for name in sorted(pgqrs_sqla.__all__, key=str.lower):
        obj = getattr(pgqrs_sqla, name)
        if inspect.isclass(obj):
            base = ", ".join(b.__name__ for b in obj.__bases__ if b is not object)
            out += [f"## class `{name}`" + (f" ({base})" if base else ""), "", doc(obj), ""]
            members: dict[str, object] = {}
            for klass in reversed(obj.__mro__):
                if klass.__module__.startswith("pgqrs_sqla"):
                    members.update(vars(klass))
            for attr, member in sorted(members.items()):
                if attr.startswith("_") or not (
                    inspect.isfunction(member) or isinstance(member, property)
                ):
                    continue
                target = member.fget if isinstance(member, property) else member
                kind = "property" if isinstance(member, property) else "method"
                out += [f"- `{attr}{'' if kind == 'property' else signature(target)}` ({kind})"]
                if doc(target):
                    out += ["  " + summary(target)]
            out.append("")
        elif callable(obj):
            out += [f"## `{name}{signature(obj)}`", "", doc(obj), ""]
        else:
            out += [f"## `{name}`", "", f"`{obj!r}`", ""]
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv:
        sys.exit(0 if PAGE.exists() and PAGE.read_text() == text else 1)
    PAGE.write_text(text)
