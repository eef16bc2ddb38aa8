"""``pgqrs-sqla dashboard``: serve the operator's dashboard with uvicorn, on this machine.

Without a login (``NO_AUTH``), so it binds to loopback only and refuses any other host: to
serve it over a network, mount ``pgqrs_sqla.contrib.dashboard.dashboard`` in your web app
behind its own auth (docs/dashboard.md).
"""

from __future__ import annotations

import argparse
import ipaddress
from types import FrameType
from typing import Any

from ..store import Store
from ._app import EXIT_OK, UsageError
from ._output import Output, _say


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_dashboard_args(args: argparse.Namespace) -> None:
    """Refuse a non-loopback ``--host`` before anything connects: no auth over a network."""
    if not _loopback(args.host):
        raise UsageError(
            f"--host {args.host} is not this machine: `pgqrs-sqla dashboard` has no login, so it "
            "serves loopback only (127.0.0.1, ::1). To serve it over a network, mount "
            "pgqrs_sqla.contrib.dashboard.dashboard(store, auth=...) in your web app behind "
            "its own auth, or reach this one through an SSH tunnel"
        )
    if not 0 < args.port < 65536:
        raise UsageError(f"--port must be 1-65535, got {args.port}")


async def cmd_dashboard(store: Store, args: argparse.Namespace, out: Output) -> int:
    """``pgqrs-sqla dashboard``: serve the dashboard until interrupted (SIGINT/SIGTERM)."""
    check_dashboard_args(args)
    try:
        import uvicorn

        from ..contrib.dashboard import NO_AUTH, dashboard
    except ImportError as error:
        raise UsageError(
            f"{error}; `pgqrs-sqla dashboard` needs the dashboard extra: "
            "pip install 'pgqrs-sqla[dashboard]'"
        ) from None

    def everyone(identity: Any) -> bool:
        return True

    app = dashboard(store, auth=NO_AUTH, operate=everyone if args.operate else None)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            # SIGINT/SIGTERM stop serving, and the command returns 0 with the store closed
            # (uvicorn's own raises the signal again after shutdown: a KeyboardInterrupt).
            self.force_exit = self.should_exit
            self.should_exit = True

    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning")
    server = Server(config)
    where = f"[{args.host}]" if ":" in args.host else args.host
    mode = "operators may act (--operate)" if args.operate else "read-only"
    _say(f"pgqrs dashboard on http://{where}:{args.port}/ ({mode}; this machine only)")
    await server.serve()
    return EXIT_OK
