"""The house rules, checked from the source: every module sits on one layer of
``docs/design.md``, imports point down (or sideways within a layer) only, there are no
import cycles, and no module is past the size at which it asks to be split.

Imports are read with ``ast`` as the interpreter runs them: those under
``if TYPE_CHECKING:`` are left out (they never execute). A new module fails the first test
until it is given a layer here and in ``docs/design.md``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "pgqrs_sqla"

#: bottom to top, as docs/design.md draws them
LAYERS: dict[str, list[str]] = {
    "rules": [
        "errors",
        "errors._base",
        "errors._database",
        "errors._runs",
        "errors._validation",
        "_schedule_time",
        "_status",
        "_signals",
        "_outcome",
        "_error_record",
        "codec",
        "typed",
        "_typed_hooks",
        "retry",
        "_logging",
        "_limits",
        "_observe",
    ],
    "backends": [
        "dialects",
        "dialects.base",
        "dialects.postgresql",
        "dialects.sqlite",
        "dialects.types",
        "_listen",
        "_db",
    ],
    "schema": [
        "_fk_names",
        "_model_base",
        "_schedule_model",
        "models",
        "_run_info",
        "states",
        "alembic_support",
        "_message",
        "_fence",
        "migrations",
    ],
    "writes": [
        "queue",
        "queue._enqueue",
        "queue._runs",
        "queue._prune",
        "queue._limited",
        "_runs_write",
        "_steps_write",
        "_catalog_write",
        "_events_write",
        "_schedules_write",
    ],
    "store": [
        "_core",
        "_connect",
        "_registration",
        "_queues_admin",
        "runs",
        "_execution",
        "context",
        "_waits",
        "_children",
        "events",
        "trigger",
        "_trigger_many",
        "_isolation",
        "_retention",
        "_schedules",
        "store",
    ],
    "worker": [
        "consumer",
        "worker",
        "_dead_letters",
        "_delivery",
        "_plain_messages",
        "_prefetch",
        "_heartbeat",
        "_wakeups",
        "_leases",
        "_worker_state",
        "_scheduler",
        "_limited_claim",
    ],
    "entry": [
        "",  # the facade, pgqrs_sqla/__init__.py
        "__main__",
        "registry",
        "testing",
        "contrib",
        "contrib._factory",
        "contrib.asgi",
        "contrib.threaded",
        "contrib.dashboard",
        "contrib.dashboard._app",
        "contrib.dashboard._actions",
        "contrib.dashboard._charts",
        "contrib.dashboard._pages",
        "contrib.dashboard._queries",
        "contrib.dashboard._render",
        "contrib.dashboard._security",
        "contrib.otel",
        "cli",
        "cli.__main__",
        "cli._app",
        "cli._output",
        "cli.dashboard",
        "cli.prune",
        "cli.queues",
        "cli.runs",
        "cli.schedules",
        "cli.schema",
        "cli.worker",
        "cli.workers",
    ],
}
FLOOR = {module: floor for floor, names in enumerate(LAYERS.values()) for module in names}

#: "a module past ~600 lines is asking to be split along a seam" (the house style)
MAX_LINES = 650


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).with_suffix("")
        if rel.parts[:2] == ("migrations", "versions"):
            continue  # the shipped revisions: Alembic scripts, not package modules
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _runtime_imports(name: str, path: Path) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.If):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".") if package else []
                    base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                    target = ".".join([*base, *([node.module] if node.module else [])])
                elif (node.module or "").startswith("pgqrs_sqla"):
                    target = node.module.removeprefix("pgqrs_sqla").lstrip(".")  # type: ignore[union-attr]
                else:
                    continue
                subs = {f"{target}.{a.name}".lstrip(".") for a in node.names}
                subs &= MODULES.keys()
                found.update(subs or ({target} & MODULES.keys()))
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("pgqrs_sqla."):
                        found.update({alias.name.removeprefix("pgqrs_sqla.")} & MODULES.keys())

    visit(ast.parse(path.read_text()).body)
    found.discard(name)
    return found


GRAPH = {name: _runtime_imports(name, path) for name, path in MODULES.items()}


def test_every_module_has_a_layer() -> None:
    assert sorted(set(MODULES) - set(FLOOR)) == [], "give each new module a layer"
    assert sorted(set(FLOOR) - set(MODULES)) == [], "a layer names a module that is gone"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_point_down(name: str) -> None:
    up = sorted(t for t in GRAPH[name] if FLOOR[t] > FLOOR[name])
    assert up == [], f"pgqrs_sqla.{name} ({list(LAYERS)[FLOOR[name]]}) imports upwards: {up}"


def test_no_import_cycles() -> None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(name: str) -> None:
        state[name] = 1
        path.append(name)
        for target in sorted(GRAPH[name]):
            if state.get(target) == 1:
                cycle = [*path[path.index(target) :], target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                walk(target)
        path.pop()
        state[name] = 2

    for name in sorted(GRAPH):
        if name not in state:
            walk(name)


def test_the_layer_check_sees_an_upward_import() -> None:
    """The reader is not blind: the worker does import the store, one layer down."""
    assert "store" in GRAPH["worker"]
    assert "_signals" in GRAPH["context"]
    assert FLOOR["store"] < FLOOR["worker"]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_past_the_size_that_asks_for_a_split(name: str) -> None:
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"pgqrs_sqla.{name} has {lines} lines: split it along a seam"
