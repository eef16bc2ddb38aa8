"""``pgqrs-sqla`` and ``alembic`` run in this process, their output captured.

A subprocess costs an interpreter start and every import (about a second each, more on a
loaded machine); this costs the command. What a process adds - the exit status of
``python -m pgqrs_sqla``, signals, a closed stderr pipe - is tested by the few tests that
still start one (tests/acceptance/test_cli.py).

The call runs in a thread of its own, so ``main()``'s ``asyncio.run`` never meets the
caller's running loop, and it puts back what a command changes for the whole process: the
working directory, the environment, ``sys.path``, the modules it imported from the working
directory, and logging (``pgqrs-sqla worker`` configures it before it fails on a bad
target; Alembic's ``env.py`` runs ``fileConfig``, which disables every existing logger).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from alembic.config import CommandLine, Config

from pgqrs_sqla.cli import main

#: One command at a time: what the command changes is process-wide.
_LOCK = threading.Lock()


@dataclass
class Done:
    """What ``subprocess.run(..., capture_output=True, text=True)`` would have returned."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str


def run_cli(
    *argv: str, cwd: str | Path | None = None, env: Mapping[str, str | None] | None = None
) -> Done:
    """``pgqrs-sqla *argv``, in this process. ``env`` sets variables for the command (``None``
    unsets one), ``cwd`` is its working directory."""
    return _in_thread(lambda: _call("pgqrs-sqla", main, list(argv), cwd, env or {}))


def run_main(
    prog: str, entry: Callable[[Sequence[str]], int], *argv: str, cwd: str | Path | None = None
) -> Done:
    """``entry(argv)``, a command's ``main``, as :func:`run_cli` runs ``pgqrs-sqla``."""
    return _in_thread(lambda: _call(prog, entry, list(argv), cwd, {}))


def run_alembic(*argv: str, cwd: str | Path) -> Done:
    """``alembic *argv`` in ``cwd``, in this process (its ``env.py`` runs ``asyncio.run`` in
    the async template: the thread of its own keeps that away from the caller's loop)."""
    return _in_thread(lambda: _call("alembic", _alembic, list(argv), cwd, {}))


def _alembic(argv: Sequence[str]) -> int:
    """What ``alembic.config.main`` does, with the Config printing to the current
    ``sys.stdout`` (its default is the one of the moment alembic was imported)."""
    line = CommandLine(prog="alembic")
    options = line.parser.parse_args(argv)
    toml, ini = line._inis_from_config(options)
    config = Config(
        file_=ini, toml_file=toml, ini_section=options.name, cmd_opts=options, stdout=sys.stdout
    )
    line.run_cmd(config, options)
    return 0


@contextlib.contextmanager
def kept_logging() -> Iterator[None]:
    """Logging as it was, afterwards: the root logger's handlers and level, and each logger's
    ``disabled``, level, handlers and ``propagate`` (a logger created meanwhile is enabled)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    loggers = {
        name: (lg.disabled, lg.level, list(lg.handlers), lg.propagate)
        for name, lg in logging.root.manager.loggerDict.items()
        if isinstance(lg, logging.Logger)
    }
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, lg in logging.root.manager.loggerDict.items():
            if not isinstance(lg, logging.Logger):
                continue
            if name in loggers:
                lg.disabled, level, lg.handlers[:], lg.propagate = loggers[name]
                lg.setLevel(level)
            else:
                lg.disabled = False


def _in_thread(call: Callable[[], Done]) -> Done:
    result: list[Done] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            result.append(call())
        except BaseException as error:  # re-raised in the caller's thread
            failure.append(error)

    with _LOCK:
        thread = threading.Thread(target=target, name="in-process command")
        thread.start()
        thread.join()
    if failure:
        raise failure[0]
    return result[0]


def _call(
    prog: str,
    entry: Callable[[Sequence[str]], int],
    argv: list[str],
    cwd: str | Path | None,
    env: Mapping[str, str | None],
) -> Done:
    out, err = io.StringIO(), io.StringIO()
    here = os.getcwd()
    where = os.path.realpath(cwd if cwd is not None else here)
    saved_env = {name: os.environ.get(name) for name in env}
    saved_path = list(sys.path)
    saved_modules = set(sys.modules)
    try:
        for name, value in env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        os.chdir(where)
        importlib.invalidate_caches()  # files the test has just written must be importable
        with kept_logging(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = entry(argv)
            except SystemExit as exit_:  # argparse's usage errors, alembic's CommandError
                code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        os.chdir(here)
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        sys.path[:] = saved_path
        for name in set(sys.modules) - saved_modules if cwd is not None else ():
            file = getattr(sys.modules[name], "__file__", None) or ""
            if os.path.realpath(file).startswith(where + os.sep):
                del sys.modules[name]  # the next test's jobs.py is another module
    return Done([prog, *argv], code, out.getvalue(), err.getvalue())
