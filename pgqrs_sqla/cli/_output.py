"""Output of the ``pgqrs-sqla`` commands: tables or JSON on stdout, one-line messages on stderr."""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import json
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any


def _say(text: str) -> None:
    """Write a line to stderr, which may be gone (a closed pipe): never stop the command.

    After one failed write, stderr goes to /dev/null, so the interpreter's final flush cannot fail
    either.
    """
    try:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stderr.fileno())
            os.close(devnull)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, dict | list):
        text = json.dumps(value, default=str)
        return text if len(text) <= 60 else text[:57] + "..."
    return str(value)


class Output:
    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def data(self, value: Any) -> None:
        sys.stdout.write(json.dumps(_plain(value), indent=2, default=str) + "\n")

    def table(self, title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        cells = [[_cell(v) for v in row] for row in rows]
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
            sys.stdout.write(f"{title}\n")
            for line in [list(headers), *cells]:
                sys.stdout.write(
                    "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() + "\n"
                )
            return
        table = Table(title=title, title_justify="left")
        for header in headers:
            table.add_column(header)
        for row in cells:
            table.add_row(*row)
        Console(soft_wrap=False, width=max(100, len(headers) * 14)).print(table)

    def message(self, text: str, value: Any = None) -> None:
        if self.as_json:
            self.data(value if value is not None else {"ok": True, "message": text})
        else:
            sys.stdout.write(text + "\n")
