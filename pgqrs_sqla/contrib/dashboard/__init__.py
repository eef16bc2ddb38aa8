"""The operator's dashboard: an ASGI app your web app mounts, behind your own auth.

``app.mount("/jobs", dashboard(store, auth=check, operate=is_admin))``. See
docs/dashboard.md ("Watch it run"). Needs the ``dashboard`` extra:
``pip install 'pgqrs-sqla[dashboard]'`` (Starlette, Jinja2, python-multipart, uvicorn).
"""

from __future__ import annotations

import importlib.util

_MISSING = [
    name
    for name, modules in (
        ("starlette", ("starlette",)),
        ("jinja2", ("jinja2",)),
        ("python-multipart", ("python_multipart", "multipart")),
    )
    if not any(importlib.util.find_spec(module) is not None for module in modules)
]
if _MISSING:
    raise ImportError(
        f"pgqrs_sqla.contrib.dashboard needs {', '.join(_MISSING)}: "
        "pip install 'pgqrs-sqla[dashboard]'"
    )

from ._app import dashboard as dashboard  # noqa: E402
from ._security import (  # noqa: E402
    CSP as CSP,
    NO_AUTH as NO_AUTH,
    AuthCheck as AuthCheck,
    OperateCheck as OperateCheck,
)

__all__ = ["CSP", "NO_AUTH", "AuthCheck", "OperateCheck", "dashboard"]
