"""Typed parameters and results: dataclasses and pydantic models in, JSON stored, the types back.

A handler ``async def handler(ctx, params: Order) -> Receipt`` gets its params decoded per
its annotation, a step's result is decoded per its function's return annotation (on the
first run as on a replay: the live value is encoded, stored, and decoded back), and the
handler's return value is encoded for the run's output. What is stored is always JSON:
:func:`encode` turns a value into it, :func:`decode` reads it back by an annotation.

- A dataclass becomes an object of its fields, a pydantic model ``model_dump(mode="json")``,
  wherever they appear. Inside them, and wherever the annotation names a type, a ``UUID``
  becomes its string, a ``datetime``/``date``/``time`` ISO 8601 text, a ``Decimal`` its
  string, an ``Enum`` its value, a ``tuple`` a list and a ``set`` a (sorted) list.
- Decoding follows the annotation: dataclasses (nested, generic), pydantic models (their own
  validation), ``TypedDict``, ``list``/``tuple``/``set``/``dict``, ``Optional``/``Union``,
  ``Literal``, ``Annotated``, ``NewType``, subclasses of ``str``/``int``, and the scalars
  above; a type it does not know is left as JSON gives it back. A dataclass's fields are
  checked against their annotations (an ``int`` is an int, a missing field without a default
  is an error); extra keys are ignored, so a field removed from the code does not fail runs
  stored before.
- Where the annotation says nothing more than JSON does (none, ``Any``, ``dict``,
  ``dict[str, Any]``, ``list[int]``...), values are left as they are, as without types.

A value that does not fit is a :class:`~pgqrs_sqla.errors.DecodeError` naming the run, the
step, the value (``what``) and the place inside it (``path``). JSON only, never pickle.
"""

from __future__ import annotations

import collections.abc as abc
import dataclasses
import datetime as dt
import enum
import functools
import sys
import types
import typing
import uuid
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, TypeVar, Union, overload

from .codec import MAX_JSON_DEPTH
from .errors import DecodeError

T = TypeVar("T")

#: Where a value sits inside the decoded one: the parent's location and this value's key or
#: index (None at the top); made into ``$.a[0]`` only when something does not fit.
_Where = tuple[Any, str | int] | None

_NONE_TYPE = type(None)
_JSON_SCALARS = (str, int, float, bool, _NONE_TYPE)
_LISTS = frozenset({list, abc.Sequence, abc.MutableSequence, abc.Collection, abc.Iterable})
_SETS = frozenset({set, frozenset, abc.Set, abc.MutableSet})
_DICTS = frozenset({dict, abc.Mapping, abc.MutableMapping})


def _base_model() -> type | None:
    """Pydantic's ``BaseModel`` if pydantic is imported (no model can exist otherwise)."""
    module = sys.modules.get("pydantic")
    return getattr(module, "BaseModel", None) if module is not None else None


def _is_model(value: Any) -> bool:
    if dataclasses.is_dataclass(value):
        return not isinstance(value, type)
    base = _base_model()
    return base is not None and isinstance(value, base)


# ------------------------------------------------------------------ encoding


def encode(value: Any, annotation: Any = None) -> Any:
    """``value`` made JSON-ready for storage, as :mod:`pgqrs_sqla.typed` describes.

    Dataclasses and pydantic models are encoded wherever they are. UUIDs, dates, Decimals,
    Enums, tuples and sets are encoded inside them, and anywhere when ``annotation`` names a
    type (not None, ``Any`` or a plain JSON type like ``dict[str, Any]``). What cannot be
    encoded is left in place, for the JSON check to refuse naming its path (or for a
    ``json_default`` hook to encode). The same object is returned when nothing changes.
    """
    return _encode(value, not _plain(annotation))


def _encode(value: Any, full: bool, depth: int = 0) -> Any:
    kind = type(value)
    if kind is str or kind is int or kind is float or kind is bool or value is None:
        return value
    if depth > MAX_JSON_DEPTH:
        return value  # too deep to store: left for the JSON check to refuse, naming the depth
    depth += 1
    if isinstance(value, dict):
        changed = kind is not dict
        out = {}
        for key, item in value.items():
            new_key = _encode_key(key) if full else key
            new = _encode(item, full, depth)
            changed = changed or new is not item or new_key is not key
            out[new_key] = new
        return out if changed else value
    if isinstance(value, list | tuple):
        items = [_encode(item, full, depth) for item in value]
        if all(new is old for new, old in zip(items, value, strict=True)):
            return value  # (a tuple stays one: the JSON check makes it a list)
        return items
    if _is_model(value):
        if dataclasses.is_dataclass(value):
            return {
                f.name: _encode(getattr(value, f.name), True, depth)
                for f in dataclasses.fields(value)
            }
        return value.model_dump(mode="json")
    if not full:
        return value
    if isinstance(value, enum.Enum):
        return _encode(value.value, True, depth)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    if isinstance(value, set | frozenset):
        items = [_encode(item, True, depth) for item in value]
        try:
            return sorted(items)
        except TypeError:
            return items
    return value


def _encode_key(key: Any) -> Any:
    """A dict key as JSON's ``str``, for the types :func:`decode` reads back from one."""
    if type(key) is str:
        return key
    encoded = _encode(key, True)
    if isinstance(encoded, int) and not isinstance(encoded, bool):
        return str(encoded)
    return encoded if isinstance(encoded, str) else key


# ------------------------------------------------------------------ decoding


class _Mismatch(Exception):
    """The value at ``where`` does not fit; made a :class:`DecodeError` at the top."""

    def __init__(self, where: _Where, expected: str, value: Any, detail: str = "") -> None:
        super().__init__(expected)
        self.where, self.expected, self.value, self.detail = where, expected, value, detail


_ABSENT = object()  # a missing field's "value"


@overload
def decode(
    value: Any,
    annotation: type[T],
    *,
    what: str = ...,
    run_id: int | None = ...,
    step_name: str | None = ...,
) -> T: ...


@overload
def decode(
    value: Any,
    annotation: object,
    *,
    what: str = ...,
    run_id: int | None = ...,
    step_name: str | None = ...,
) -> Any: ...


def decode(
    value: Any,
    annotation: object,
    *,
    what: str = "value",
    run_id: int | None = None,
    step_name: str | None = None,
) -> Any:
    """``value`` (as JSON gives it back) read by ``annotation``: the typed value.

    ``decode(stored, Receipt)`` returns a ``Receipt``; ``decode(x, None)`` or an annotation
    JSON already satisfies returns ``value`` itself. A value that does not fit raises
    :class:`~pgqrs_sqla.errors.DecodeError` naming ``what``, ``run_id``, ``step_name`` and the
    path inside the value.
    """
    if _plain(annotation):
        return value
    try:
        return _decode(value, annotation, None, False)
    except _Mismatch as bad:
        path = _path(bad.where)
        shown = "nothing (the field is missing)" if bad.value is _ABSENT else _shown(bad.value)
        where = f"run {run_id}: " if run_id is not None else ""
        detail = f" ({bad.detail})" if bad.detail else ""
        raise DecodeError(
            f"{where}{what} cannot be decoded as {_name(annotation)}: at {path}, expected "
            f"{bad.expected}, got {shown}{detail}",
            run_id=run_id,
            step_name=step_name,
            what=what,
            path=path,
            expected=bad.expected,
            value=None if bad.value is _ABSENT else bad.value,
        ) from None


def _decode(value: Any, ann: Any, where: _Where, strict: bool) -> Any:
    """``value`` by ``ann``; ``strict`` (inside a model): JSON scalars are checked too."""
    if not strict and _plain(ann):
        return value
    if ann is Any or ann is object or isinstance(ann, TypeVar | str | typing.ForwardRef):
        return value
    if ann is None or ann is _NONE_TYPE:
        if value is None:
            return None
        raise _Mismatch(where, "null", value)
    if isinstance(ann, typing.NewType):
        return _decode(value, ann.__supertype__, where, strict)
    origin = typing.get_origin(ann)
    if origin is None:
        if isinstance(ann, type):
            return _decode_class(value, ann, where, strict)
        return value  # a special form this does not know: left as JSON gives it
    args = typing.get_args(ann)
    if origin is typing.Annotated:
        return _decode(value, args[0], where, strict)
    if origin is Union or origin is types.UnionType:
        return _decode_union(value, args, where, strict)
    if origin is Literal:
        for option in args:
            if value == option and type(value) is type(option):
                return option
            if isinstance(option, enum.Enum) and option.value == value:
                return option
        raise _Mismatch(where, " | ".join(repr(a) for a in args), value)
    if origin in _LISTS or origin is tuple or origin in _SETS:
        return _decode_items(value, origin, args, where, strict)
    if origin in _DICTS:
        if not isinstance(value, dict):
            raise _Mismatch(where, "an object", value)
        key_ann, item_ann = args if len(args) == 2 else (Any, Any)
        return {
            _decode_key(key, key_ann, where): _decode(item, item_ann, (where, key), strict)
            for key, item in value.items()
        }
    if isinstance(origin, type) and dataclasses.is_dataclass(origin):
        bound = dict(zip(getattr(origin, "__parameters__", ()), args, strict=False))
        return _decode_dataclass(value, origin, where, bound)
    if isinstance(origin, type):
        return _decode_class(value, origin, where, strict)
    return value


def _decode_key(key: Any, ann: Any, where: _Where) -> Any:
    """A dict key (a str in JSON) by ``ann``: numbers from their text, the rest as values."""
    if (ann is int or ann is float) and isinstance(key, str):
        try:
            return ann(key)
        except ValueError:
            raise _Mismatch((where, key), f"a key that is {ann.__name__}", key) from None
    return _decode(key, ann, (where, key), True)


def _decode_union(value: Any, members: tuple[Any, ...], where: _Where, strict: bool) -> Any:
    if value is None and _NONE_TYPE in members:
        return None
    first: _Mismatch | None = None
    for member in members:
        if member is _NONE_TYPE:
            continue
        try:
            return _decode(value, member, where, True)
        except _Mismatch as bad:
            first = first or bad
    if not strict:  # outside a model a plain member takes the value as it is
        for member in members:
            if member is not _NONE_TYPE and _plain(member):
                return value
    names = " | ".join(_name(m) for m in members)
    if first is not None and first.where is not where:
        raise first  # deeper inside the first member: say where
    raise _Mismatch(where, names, value)


def _decode_items(
    value: Any, origin: Any, args: tuple[Any, ...], where: _Where, strict: bool
) -> Any:
    if not isinstance(value, list):
        raise _Mismatch(where, "an array", value)
    if origin is tuple and args and args[-1] is not Ellipsis:
        if len(args) != len(value):
            raise _Mismatch(where, f"an array of {len(args)} items", value)
        return tuple(
            _decode(item, arg, (where, index), strict)
            for index, (item, arg) in enumerate(zip(value, args, strict=True))
        )
    item_ann = args[0] if args else Any
    items = [_decode(item, item_ann, (where, index), strict) for index, item in enumerate(value)]
    if origin is tuple:
        return tuple(items)
    if origin in _SETS:
        try:
            return frozenset(items) if origin is frozenset else set(items)
        except TypeError as error:
            raise _Mismatch(where, "an array of hashable items", value, str(error)) from None
    return items


def _decode_class(value: Any, cls: type, where: _Where, strict: bool) -> Any:
    if cls is bool:
        if type(value) is bool:
            return value
    elif cls is int:
        if type(value) is int:
            return value
    elif cls is float:
        if type(value) is float or type(value) is int:
            return float(value)
    elif cls is str:
        if type(value) is str:
            return value
    elif issubclass(cls, enum.Enum):
        if isinstance(value, cls):
            return value
        try:
            return cls(value)
        except ValueError:
            values = ", ".join(repr(m.value) for m in cls)
            raise _Mismatch(
                where, f"one of {cls.__qualname__}'s values ({values})", value
            ) from None
    elif cls in _SCALARS:
        return _decode_scalar(value, cls, where)
    elif dataclasses.is_dataclass(cls):
        return _decode_dataclass(value, cls, where, {})
    elif (base := _base_model()) is not None and issubclass(cls, base):
        return _decode_pydantic(value, cls, where)
    elif typing.is_typeddict(cls):
        return _decode_typeddict(value, cls, where)
    elif cls in _LISTS or cls is tuple or cls in _SETS:
        return _decode_items(value, cls, (), where, strict)
    elif cls in _DICTS:
        if isinstance(value, dict):
            return value
        raise _Mismatch(where, "an object", value)
    elif (json_base := _json_base(cls)) is not None:  # class Sku(str), class Cents(int)
        if type(value) is json_base:
            return typing.cast(Any, cls)(value)
    else:
        # A type pgqrs does not know (one a json_default hook encodes, say): left as JSON
        # gives it back, as without types.
        return value
    raise _Mismatch(where, cls.__qualname__, value)


def _json_base(cls: type) -> type | None:
    for base in (bool, int, float, str):
        if issubclass(cls, base):
            return base
    return None


def _decode_scalar(value: Any, cls: type, where: _Where) -> Any:
    if isinstance(value, cls) and not (cls is dt.date and isinstance(value, dt.datetime)):
        return value
    parse = _SCALARS[cls]
    if isinstance(value, str) or (cls is Decimal and type(value) in (int, float)):
        try:
            return parse(value)
        except (ValueError, InvalidOperation) as error:
            raise _Mismatch(where, _EXPECTED[cls], value, str(error)) from None
    raise _Mismatch(where, _EXPECTED[cls], value)


def _decimal(value: Any) -> Decimal:
    return Decimal(str(value)) if isinstance(value, float) else Decimal(value)


def _date(value: str) -> dt.date:
    # date.fromisoformat reads only a date; a datetime string would be a datetime
    return dt.date.fromisoformat(value)


_SCALARS: dict[type, Any] = {
    uuid.UUID: uuid.UUID,
    dt.datetime: dt.datetime.fromisoformat,
    dt.date: _date,
    dt.time: dt.time.fromisoformat,
    Decimal: _decimal,
}
_EXPECTED = {
    uuid.UUID: "a UUID string",
    dt.datetime: "an ISO 8601 datetime string",
    dt.date: "an ISO 8601 date string",
    dt.time: "an ISO 8601 time string",
    Decimal: "a decimal number or its string",
}


def _decode_dataclass(value: Any, cls: type, where: _Where, bound: dict[Any, Any]) -> Any:
    if not isinstance(value, dict):
        raise _Mismatch(where, f"an object (for {cls.__qualname__})", value)
    hints = _class_hints(cls, value, where)
    given: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        if not field.init:
            continue
        if field.name not in value:
            if (
                field.default is dataclasses.MISSING
                and field.default_factory is dataclasses.MISSING
            ):
                raise _Mismatch((where, field.name), f"field {field.name!r}", _ABSENT)
            continue
        ann = hints.get(field.name, Any)
        ann = bound.get(ann, ann) if isinstance(ann, TypeVar) else ann
        given[field.name] = _decode(value[field.name], ann, (where, field.name), True)
    try:
        return cls(**given)
    except Exception as error:  # its __post_init__ refused the values
        raise _Mismatch(
            where, cls.__qualname__, value, f"{cls.__qualname__}() raised {error!r}"
        ) from None


def _decode_typeddict(value: Any, cls: type, where: _Where) -> Any:
    if not isinstance(value, dict):
        raise _Mismatch(where, f"an object (for {cls.__qualname__})", value)
    hints = _class_hints(cls, value, where)
    for key in getattr(cls, "__required_keys__", ()):
        if key not in value:
            raise _Mismatch((where, key), f"key {key!r}", _ABSENT)
    return {
        key: _decode(item, hints[key], (where, key), True) if key in hints else item
        for key, item in value.items()
    }


def _decode_pydantic(value: Any, cls: Any, where: _Where) -> Any:
    try:
        return cls.model_validate(value)
    except ValueError as error:  # pydantic's ValidationError
        errors = error.errors() if hasattr(error, "errors") else []
        if not errors:
            raise _Mismatch(where, cls.__qualname__, value, str(error)) from None
        first = errors[0]
        inner = where
        for step in first.get("loc", ()):
            inner = (inner, step)
        found = first.get("input", value)
        expected = f"what {cls.__qualname__} accepts"
        raise _Mismatch(inner, expected, found, str(first.get("msg", error))) from None


def _class_hints(cls: type, value: Any, where: _Where) -> dict[str, Any]:
    try:
        return _hints_of_class(cls)
    except Exception as error:  # an annotation that does not resolve
        raise _Mismatch(
            where, cls.__qualname__, value, f"its annotations do not resolve: {error!r}"
        ) from None


@functools.lru_cache(maxsize=1024)
def _hints_of_class(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


# ------------------------------------------------------------------ plain annotations


def _plain(ann: Any) -> bool:
    """Whether ``ann`` asks nothing of a value that JSON does not already give.

    None (no annotation), ``Any``, ``object``, a JSON scalar type, and lists, dicts and unions
    of those: such values are neither encoded beyond JSON nor decoded.
    """
    try:
        return _plain_cached(ann)
    except TypeError:  # unhashable
        return _plain_uncached(ann)


@functools.lru_cache(maxsize=1024)
def _plain_cached(ann: Any) -> bool:
    return _plain_uncached(ann)


def _plain_uncached(ann: Any) -> bool:
    if ann is None or ann is Any or ann is object or ann in _JSON_SCALARS:
        return True
    if isinstance(ann, TypeVar | str | typing.ForwardRef):
        return True
    if ann in _LISTS or ann in _DICTS:
        return True
    origin = typing.get_origin(ann)
    args = typing.get_args(ann)
    if origin is typing.Annotated:
        return _plain(args[0])
    if origin is Union or origin is types.UnionType:
        return all(_plain(a) for a in args)
    if origin is Literal:
        return all(type(a) in _JSON_SCALARS for a in args)
    if origin in _DICTS and args and args[0] not in (str, Any):
        return False  # JSON keys are str: other keys are decoded
    if origin in _LISTS or origin in _DICTS:
        return all(_plain(a) for a in args)
    return False


# ------------------------------------------------------------------ messages


def _path(where: _Where) -> str:
    parts: list[str] = []
    while where is not None:
        where, step = where
        if isinstance(step, int) or not isinstance(step, str):
            parts.append(f"[{step!r}]" if not isinstance(step, int) else f"[{step}]")
        elif step.isidentifier():
            parts.append(f".{step}")
        else:
            parts.append(f"[{step!r}]")
    return "$" + "".join(reversed(parts))


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def _name(ann: Any) -> str:
    """``ann`` as its code says it: ``Order | None``, ``list[UUID]``."""
    if ann is None or ann is _NONE_TYPE:
        return "None"
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is Union or origin is types.UnionType:
        return " | ".join(_name(a) for a in args)
    if origin is not None and origin is not typing.Annotated and args:
        shown = ", ".join("..." if a is Ellipsis else _name(a) for a in args)
        return f"{_name(origin)}[{shown}]"
    if isinstance(ann, type):
        return ann.__qualname__
    return repr(ann).replace("typing.", "")
