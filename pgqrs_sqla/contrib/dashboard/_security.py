"""Who may look and who may act, and the headers and tokens that keep a browser honest.

Everything here is per request: :func:`viewer` asks the host's ``auth`` (or, with
``NO_AUTH``, checks that the client is on this machine); :func:`may_operate` asks
``operate``; :func:`check_post` refuses a cross-site POST (its ``Origin`` is another host, or
its CSRF token is missing or wrong). :class:`SecurityHeaders` puts the Content-Security-Policy
and friends on every response the app sends.
"""

from __future__ import annotations

import hmac
import inspect
import ipaddress
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: what ``auth`` may be: ``auth(request)``, sync or async, returns the viewer's identity (any
#: object) or None to refuse
AuthCheck = Callable[[Request], Any]
#: ``operate(identity)``, sync or async: True if that viewer may act (cancel, retry...)
OperateCheck = Callable[[Any], "bool | Awaitable[bool]"]

#: the policy sent with every response: our own static files only, no inline script or style
CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS: Final = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
)
#: the double-submit cookie's name, and the form field that must repeat its value
CSRF_COOKIE: Final = "pgqrs_csrf"
CSRF_FIELD: Final = "csrf_token"
_TOKEN_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


class _NoAuth:
    """The type of :data:`NO_AUTH`."""

    def __repr__(self) -> str:
        return "NO_AUTH"


#: ``dashboard(store, auth=NO_AUTH)``: no login; then only clients on this machine
#: (127.0.0.0/8, ::1) are served, everyone else gets 403
NO_AUTH: Final = _NoAuth()
#: the identity a ``NO_AUTH`` viewer has in the action log
LOCAL_VIEWER: Final = "local (NO_AUTH)"


class Refused(Exception):
    """A request the dashboard will not serve: ``status`` (401 or 403) and why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` (a client address) is this machine's: 127.0.0.0/8 or ::1."""
    if not host:
        return False
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Access:
    """The ``auth`` and ``operate`` a dashboard was made with."""

    auth: AuthCheck | _NoAuth
    operate: OperateCheck | None

    async def viewer(self, request: Request, *, acting: bool = False) -> Any:
        """The identity of whoever sent ``request``; :class:`Refused` if nobody may see.

        A refusal is 401 for a page (log in first) and 403 for an action.
        """
        if isinstance(self.auth, _NoAuth):
            host = request.client.host if request.client else None
            if not is_loopback(host):
                raise Refused(
                    403,
                    "this dashboard runs without auth (NO_AUTH), so it serves clients on its "
                    "own machine only",
                )
            return LOCAL_VIEWER
        identity = await _maybe_await(self.auth(request))
        if identity is None:
            raise Refused(403 if acting else 401, "not signed in, or not allowed to see this")
        return identity

    async def may_operate(self, identity: Any) -> bool:
        """Whether ``identity`` may act; nobody may when no ``operate`` was given."""
        if self.operate is None:
            return False
        return bool(await _maybe_await(self.operate(identity)))


def csrf_token(request: Request) -> tuple[str, bool]:
    """The request's CSRF token and whether it is new (then the response must set it)."""
    token = request.cookies.get(CSRF_COOKIE, "")
    if len(token) == 43 and set(token) <= _TOKEN_CHARS:
        return token, False
    return secrets.token_urlsafe(32), True


def set_csrf_cookie(response: Response, request: Request, token: str) -> None:
    """Send ``token`` as the double-submit cookie: HttpOnly, SameSite=Strict, our path only."""
    response.set_cookie(
        CSRF_COOKIE,
        token,
        path=mount_path(request) or "/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def mount_path(request: Request) -> str:
    """Where the dashboard is mounted (``/jobs``), or "" at the root; no trailing slash."""
    root: str = request.scope.get("root_path", "")
    return root.rstrip("/")


def check_origin(request: Request) -> None:
    """Refuse a POST whose ``Origin`` header names another host than the request's."""
    origin = request.headers.get("origin")
    if origin is None:
        return
    host = request.headers.get("host", "")
    if urlsplit(origin).netloc.lower() != host.lower() or not host:
        raise Refused(403, f"cross-origin request refused (Origin {origin!r})")


def check_csrf(request: Request, submitted: object) -> None:
    """Refuse unless the form's token equals the cookie's (compared in constant time)."""
    cookie = request.cookies.get(CSRF_COOKIE)
    if (
        not isinstance(submitted, str)
        or not cookie
        or not hmac.compare_digest(submitted.encode(), cookie.encode())
    ):
        raise Refused(
            403,
            "the form's CSRF token is missing or wrong: reload the page and try again",
        )


class SecurityHeaders:
    """ASGI middleware: the CSP, nosniff, Referrer-Policy and frame headers on every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in HEADERS}
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message = {**message, "headers": [*headers, *HEADERS]}
            await send(message)

        await self.app(scope, receive, sending)
