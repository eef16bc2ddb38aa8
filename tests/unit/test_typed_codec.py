"""``pgqrs_sqla.typed``: values encoded to JSON and decoded back by their annotation.

Round trips go through ``check_json``, as storage does: what comes back is what a replay reads.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import logging
import pickle
import subprocess
import sys
import uuid
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any, Generic, Literal, NewType, TypedDict, TypeVar

import pydantic
import pytest

import pgqrs_sqla as pgqrs
from pgqrs_sqla._typed_hooks import handler_types, step_function, step_result
from pgqrs_sqla.codec import check_json


def stored(value: Any, annotation: Any = None) -> Any:
    """``value`` as the database gives it back."""
    return json.loads(json.dumps(check_json(pgqrs.encode(value, annotation), what="value")))


def round_trip(value: Any, annotation: Any) -> Any:
    return pgqrs.decode(stored(value, annotation), annotation)


class Size(enum.Enum):
    S = "s"
    M = "m"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


UserId = NewType("UserId", uuid.UUID)
T = TypeVar("T")


@dataclasses.dataclass
class Item:
    sku: str
    size: Size
    price: Decimal
    count: int = 1


@dataclasses.dataclass
class Basket:
    owner: UserId
    created: datetime
    day: date
    opens: time
    items: list[Item]
    by_day: dict[date, int]
    tags: frozenset[str] = frozenset()
    level: Level = Level.LOW
    coupon: Item | None = None
    pair: tuple[int, str] = (0, "")
    derived: int = dataclasses.field(default=0, init=False)


@dataclasses.dataclass
class Box(Generic[T]):
    content: T


class Extra(TypedDict):
    at: datetime
    note: str


BASKET = Basket(
    owner=UserId(uuid.UUID(int=9)),
    created=datetime(2026, 1, 2, 3, 4, 5, 600, tzinfo=timezone(timedelta(hours=-5))),
    day=date(2026, 1, 2),
    opens=time(8, 30),
    items=[Item("tea", Size.M, Decimal("3.10"), 2), Item("cup", Size.S, Decimal("0.1"))],
    by_day={date(2026, 1, 1): 3},
    tags=frozenset({"b", "a"}),
    level=Level.HIGH,
    coupon=Item("free", Size.S, Decimal("0")),
    pair=(1, "x"),
)


@pytest.mark.parametrize(
    ("value", "annotation", "json_value"),
    [
        (uuid.UUID(int=1), uuid.UUID, "00000000-0000-0000-0000-000000000001"),
        (datetime(2026, 1, 2, 3, 4, tzinfo=UTC), datetime, "2026-01-02T03:04:00+00:00"),
        (date(2026, 1, 2), date, "2026-01-02"),
        (time(1, 2, 3), time, "01:02:03"),
        (Decimal("1.10"), Decimal, "1.10"),
        (Size.M, Size, "m"),
        (Level.HIGH, Level, 2),
        ([uuid.UUID(int=2)], list[uuid.UUID], ["00000000-0000-0000-0000-000000000002"]),
        ({Size.S: Decimal("1")}, dict[Size, Decimal], {"s": "1"}),
        ({3: date(2026, 1, 1)}, dict[int, date], {"3": "2026-01-01"}),
        ((1, Size.S), tuple[int, Size], [1, "s"]),
        ({"b", "a"}, set[str], ["a", "b"]),
        (None, Decimal | None, None),
        (Decimal("2"), Decimal | None, "2"),
        (Box(Size.S), Box[Size], {"content": "s"}),
        ({"at": datetime(2026, 1, 1, tzinfo=UTC), "note": "n"}, Extra, None),
        ("s", Literal["s", "m"], "s"),
    ],
    # A set's repr follows string hashing, which differs between processes: its sorted items
    # name it, so every pytest-xdist worker collects the same ids.
    ids=lambda v: repr(sorted(v)) if isinstance(v, set) else repr(v),
)
def test_a_value_round_trips_by_its_annotation(
    value: Any, annotation: Any, json_value: Any
) -> None:
    if json_value is not None:
        assert stored(value, annotation) == json_value
    back = round_trip(value, annotation)
    assert back == value and type(back) is type(value)


def test_a_nested_dataclass_round_trips_with_every_type_inside() -> None:
    data = stored(BASKET)  # no annotation: a dataclass is encoded anyway, all of it
    assert data["owner"] == str(uuid.UUID(int=9))
    assert data["created"] == "2026-01-02T03:04:05.000600-05:00"
    assert data["items"][0] == {"sku": "tea", "size": "m", "price": "3.10", "count": 2}
    assert data["tags"] == ["a", "b"] and data["by_day"] == {"2026-01-01": 3}
    back = pgqrs.decode(data, Basket)
    assert back == BASKET
    assert back.created.utcoffset() == timedelta(hours=-5)  # aware, offset kept
    assert type(back.items[0].price) is Decimal and back.items[0].size is Size.M
    assert type(back.tags) is frozenset and type(back.pair) is tuple
    assert type(back.owner) is uuid.UUID


def test_plain_annotations_leave_json_as_it_is() -> None:
    """No annotation, Any, dict, dict[str, Any], list[int], str | None: the same object."""
    value = {"a": [1, "2"], "b": None}
    for annotation in (None, Any, object, dict, dict[str, Any], dict[str, int], str | None):
        assert pgqrs.decode(value, annotation) is value
        assert pgqrs.encode(value, annotation) is value
    # and a type-lying plain annotation is not policed outside a model (as before types)
    assert pgqrs.decode("x", int) == "x"
    # untyped, a bare UUID is left for the JSON check (refused, or json_default)
    ident = uuid.UUID(int=1)
    assert pgqrs.encode(ident) is ident and pgqrs.encode([ident], Any)[0] is ident


def test_removed_fields_are_ignored_and_defaults_fill_missing_ones() -> None:
    assert pgqrs.decode({"sku": "a", "size": "s", "price": "1", "gone": 1}, Item) == Item(
        "a", Size.S, Decimal("1")
    )


class Money(pydantic.BaseModel):
    amount: Decimal
    currency: str


@dataclasses.dataclass
class Priced:
    item: Item
    money: Money


def test_pydantic_models_round_trip_inside_dataclasses_and_back() -> None:
    value = Priced(Item("tea", Size.S, Decimal("1")), Money(amount=Decimal("1.5"), currency="EUR"))
    data = stored(value)
    assert data["money"] == {"amount": "1.5", "currency": "EUR"}
    assert pgqrs.decode(data, Priced) == value
    with pytest.raises(pgqrs.DecodeError) as bad:
        pgqrs.decode({**data, "money": {"amount": "lots", "currency": "EUR"}}, Priced)
    assert bad.value.path == "$.money.amount" and bad.value.value == "lots"
    assert "Input should be a valid decimal" in str(bad.value)


@pytest.mark.parametrize(
    ("data", "annotation", "path", "expected"),
    [
        ({"sku": "a", "size": "xl", "price": "1"}, Item, "$.size", "one of Size's values"),
        ({"sku": "a", "size": "s", "price": "x"}, Item, "$.price", "a decimal number"),
        ({"sku": "a", "size": "s"}, Item, "$.price", "field 'price'"),
        ({"sku": 1, "size": "s", "price": "1"}, Item, "$.sku", "str"),
        ({"sku": "a", "size": "s", "price": "1", "count": True}, Item, "$.count", "int"),
        ([{"sku": "a"}], list[Item], "$[0].size", "field 'size'"),
        ({"k": "nope"}, dict[str, uuid.UUID], "$.k", "a UUID string"),
        ("2026-13-01", date, "$", "an ISO 8601 date string"),
        ([1, 2, 3], tuple[int, int], "$", "an array of 2 items"),
        ("x", Item | None, "$", "Item | None"),
        ({"content": "q"}, Box[Size], "$.content", "one of Size's values"),
    ],
    ids=repr,
)
def test_a_value_that_does_not_fit_names_the_path(
    data: Any, annotation: Any, path: str, expected: str
) -> None:
    with pytest.raises(pgqrs.DecodeError) as bad:
        pgqrs.decode(data, annotation, what="result of step 's'", run_id=7, step_name="s")
    error = bad.value
    assert (error.run_id, error.step_name, error.what, error.path) == (
        7,
        "s",
        "result of step 's'",
        path,
    )
    assert error.expected.startswith(expected), error.expected
    assert str(error).startswith("run 7: result of step 's' cannot be decoded as"), str(error)
    assert isinstance(error, pgqrs.ValidationError)
    copy = pickle.loads(pickle.dumps(error))
    assert vars(copy) == vars(error)


class Handlers:
    async def method(self, ctx: Any, params: Item) -> Basket:
        raise NotImplementedError

    async def __call__(self, ctx: Any, params: Basket) -> Item:
        raise NotImplementedError


async def plain_handler(ctx, params):  # type: ignore[no-untyped-def]
    return params


async def typed_handler(ctx: pgqrs.RunContext, params: Item, /) -> Basket:
    raise NotImplementedError


async def partial_handler(flag: bool, ctx: pgqrs.RunContext, params: Item) -> Basket:
    raise NotImplementedError


def test_a_handler_s_types_are_its_second_parameter_s_and_its_return_annotation() -> None:
    assert handler_types(typed_handler) == (Item, Basket)
    assert handler_types(Handlers().method) == (Item, Basket)
    assert handler_types(Handlers()) == (Basket, Item)
    assert handler_types(functools.partial(partial_handler, True)) == (Item, Basket)
    assert handler_types(plain_handler) == (None, None)


def test_an_annotation_that_does_not_resolve_leaves_that_value_untyped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def handler(ctx: NotImported, params: Item) -> AlsoNotImported:  # type: ignore[name-defined]  # noqa: F821
        raise NotImplementedError

    with caplog.at_level(logging.WARNING, "pgqrs_sqla.typed"):
        assert handler_types(handler) == (Item, None)
    assert "AlsoNotImported" in caplog.text


async def test_a_step_function_keeps_its_kind_and_its_result_is_encoded() -> None:
    async def fetch() -> Item:
        return Item("a", Size.S, Decimal("1"))

    def compute() -> list[Size]:
        return [Size.M]

    wrapped, returns = step_function(fetch)
    assert returns is Item
    assert stored(await wrapped()) == {"sku": "a", "size": "s", "price": "1", "count": 1}
    import inspect

    assert inspect.iscoroutinefunction(wrapped)
    wrapped_sync, returns = step_function(compute)
    assert not inspect.iscoroutinefunction(wrapped_sync) and wrapped_sync() == ["m"]
    assert step_result(["m"], returns, 1, "c") == [Size.M]
    lam = lambda: 1  # noqa: E731
    assert step_function(lam) == (lam, None)


def test_the_package_imports_and_types_dataclasses_without_pydantic() -> None:
    """pydantic is an optional extra: with it uninstallable, import and dataclasses work."""
    code = """
import sys
sys.modules["pydantic"] = None  # import pydantic now raises ImportError
import dataclasses, uuid
import pgqrs_sqla as pgqrs

@dataclasses.dataclass
class P:
    id: uuid.UUID

data = pgqrs.encode(P(uuid.UUID(int=3)))
assert pgqrs.decode(data, P) == P(uuid.UUID(int=3)), data
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
    light = subprocess.run(
        [sys.executable, "-c", "import sys, pgqrs_sqla; print('pydantic' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert light.stdout.strip() == "False"  # importing pgqrs does not import pydantic


class Sku(str):
    pass


class Opaque:
    """A type pgqrs has no decoding for (an app's json_default encodes it, say)."""


def test_subclasses_of_json_types_are_rebuilt_and_unknown_types_left_as_json() -> None:
    back = pgqrs.decode(["tea"], list[Sku])
    assert back == ["tea"] and type(back[0]) is Sku
    assert pgqrs.decode({"any": "thing"}, Opaque) == {"any": "thing"}
    assert pgqrs.decode({"box": {"content": 1}}, dict[str, Box[Opaque]]) == {"box": Box(1)}
