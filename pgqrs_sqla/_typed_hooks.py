"""Where typed values meet a run: a handler's params and output, a step's result.

The worker binds each workflow handler through :func:`typed_handler`; ``ctx.step`` calls
:func:`step_function` before the step and :func:`step_result` on what it returns (live or
replayed). Annotations are read with ``typing.get_type_hints``; one that does not resolve
(a name imported only under ``TYPE_CHECKING``) leaves that value untyped, with a warning.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Awaitable, Callable
from typing import Any

from ._logging import get_logger
from .typed import _plain, decode, encode

log = get_logger("pgqrs_sqla.typed")

#: resolved annotations by (code, raw annotations): a nested ``async def`` is a new function
#: object on every call, with the same code and annotations
_HINTS: dict[Any, dict[str, Any]] = {}
_HINTS_MAX = 4096


def _target(fn: Any) -> Any:
    """The function whose annotations describe a call of ``fn`` (None: a class, a builtin)."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.isfunction(fn) or inspect.ismethod(fn):
        return getattr(fn, "__func__", fn)
    if isinstance(fn, type):
        return None
    call = getattr(type(fn), "__call__", None)  # noqa: B004 (the method, not callable())
    return call if inspect.isfunction(call) else None


def hints(fn: Any) -> dict[str, Any]:
    """``fn``'s annotations resolved (``typing.get_type_hints``), those that resolve."""
    target = _target(fn)
    raw = getattr(target, "__annotations__", None) if target is not None else None
    if not raw:
        return {}
    try:
        key: Any = (target.__code__, tuple(raw.items()))
        found = _HINTS.get(key)
    except (TypeError, AttributeError):  # an unhashable annotation: resolved every time
        key, found = None, None
    if found is None:
        found = _resolve(target, raw)
        if key is not None:
            if len(_HINTS) >= _HINTS_MAX:
                _HINTS.clear()
            _HINTS[key] = found
    return found


def _resolve(target: Any, raw: dict[str, Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(target)
    except Exception:  # one of them does not resolve: take the others
        pass
    globalns = getattr(inspect.unwrap(target), "__globals__", {})
    resolved: dict[str, Any] = {}
    for name, ann in raw.items():
        one = types.SimpleNamespace(__annotations__={name: ann})
        try:
            resolved[name] = typing.get_type_hints(one, globalns=globalns)[name]
        except Exception as error:
            log.warning(
                "annotation %s: %r of %s does not resolve (%r): that value is not typed",
                name,
                ann,
                getattr(target, "__qualname__", target),
                error,
            )
    return resolved


def handler_types(fn: Any) -> tuple[Any, Any]:
    """The annotations of handler ``fn``'s params (its second parameter) and of its result.

    None where there is none, or it is a plain JSON one (``dict[str, Any]``...).
    """
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return None, None
    positional = [
        p
        for p in parameters
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    found = hints(fn)
    params = found.get(positional[1].name) if len(positional) >= 2 else None
    returns = found.get("return")
    return (None if _plain(params) else params), (None if _plain(returns) else returns)


def typed_handler(fn: Callable[..., Awaitable[Any]]) -> Callable[[Any, Any], Awaitable[Any]]:
    """Workflow handler ``fn`` with its params decoded and its output encoded by its annotations.

    Models in an untyped output are encoded too.
    """
    params, returns = handler_types(fn)

    async def run(ctx: Any, value: Any) -> Any:
        if params is not None:
            value = decode(
                value, params, what=f"params of workflow {ctx.workflow!r}", run_id=ctx.run_id
            )
        return encode(await fn(ctx, value), returns)

    run.__wrapped__ = fn  # type: ignore[attr-defined]
    return run


def step_function(fn: Callable[..., Any]) -> tuple[Callable[..., Any], Any]:
    """``fn`` (wrapped to encode its result where its return annotation names a type) and that.

    The annotation is None for an untyped step (a lambda, ``-> dict[str, Any]``...): then
    ``fn`` is returned as it is.
    """
    returns = hints(fn).get("return")
    if _plain(returns):
        return fn, None
    if inspect.iscoroutinefunction(fn):

        async def encoding(*args: Any) -> Any:
            return encode(await fn(*args), returns)

        return encoding, returns

    def encoding_sync(*args: Any) -> Any:
        result = fn(*args)
        if inspect.isawaitable(result):
            return _encoded(result, returns)
        return encode(result, returns)

    return encoding_sync, returns


async def _encoded(result: Awaitable[Any], returns: Any) -> Any:
    return encode(await result, returns)


def step_result(value: Any, returns: Any, run_id: int, name: str) -> Any:
    """Step ``name``'s stored ``value`` decoded by its function's return annotation ``returns``."""
    if returns is None:
        return value
    return decode(value, returns, what=f"result of step {name!r}", run_id=run_id, step_name=name)
