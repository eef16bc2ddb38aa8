"""Alembic, three ways, on SQLite and PostgreSQL: the shipped ``pgqrs`` branch, autogenerate in
a host app with its own history, and a new app scaffolded from our templates. Drift is judged
on Alembic's structured diffs, never on log text."""

from __future__ import annotations

import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.operations import ops
from sqlalchemy import create_engine, inspect
from sqlalchemy.engine import make_url

import pgqrs_sqla as pgqrs
from pgqrs_sqla.alembic_support import pgqrs_table_names, scaffold

PGQRS = set(pgqrs_table_names())
CONVENTION = textwrap.dedent(
    """
    CONVENTION = {
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
    """
)
V1 = (
    "from sqlalchemy import MetaData, String\n"
    "from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column\n"
    + CONVENTION
    + textwrap.dedent(
        """
        class Base(DeclarativeBase):
            metadata = MetaData(naming_convention=CONVENTION)

        class Customer(Base):
            __tablename__ = "customers"
            id: Mapped[int] = mapped_column(primary_key=True)
            name: Mapped[str] = mapped_column(String(100))
        """
    )
)
V2 = V1 + textwrap.dedent(
    """
    from sqlalchemy import ForeignKey
    from sqlalchemy.orm import relationship
    from pgqrs_sqla import pgqrs_models

    pgqrs = pgqrs_models(Base)

    class Order(Base):
        __tablename__ = "orders"
        id: Mapped[int] = mapped_column(primary_key=True)
        customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
        run_id: Mapped[int | None] = mapped_column(ForeignKey("pgqrs_workflow_runs.id"))
        run = relationship(pgqrs.WorkflowRun)
    """
)


def sync_url(url: str) -> str:
    parsed = make_url(url)
    driver = "postgresql+psycopg" if parsed.get_backend_name() == "postgresql" else "sqlite"
    return parsed.set(drivername=driver).render_as_string(hide_password=False)


class HostApp:
    """An app in tmp_path with its own models module and an Alembic environment."""

    def __init__(self, root: Path, url: str, template: str = "sync") -> None:
        self.root = root
        self.url = url
        self.package = f"hostapp_{uuid.uuid4().hex[:8]}"
        (root / self.package).mkdir()
        (root / self.package / "__init__.py").write_text("")
        self.ini = scaffold(root / "alembic", template=template)
        sys.path.insert(0, str(root))

    def models(self, name: str, source: str) -> str:
        (self.root / self.package / f"{name}.py").write_text(source)
        return f"{self.package}.{name}:Base"

    def config(self, target: str | None, *, tables: str, branch: bool) -> Config:
        cfg = Config(str(self.ini))
        cfg.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        cfg.set_main_option("pgqrs_target_metadata", target or "")
        cfg.set_main_option("pgqrs_tables", tables)
        locations = [str(self.root / "alembic" / "versions")]
        if branch:
            locations.append("pgqrs_sqla:migrations/versions")
        cfg.set_main_option("version_locations", " ".join(locations))
        return cfg

    def autogenerate(self, cfg: Config, message: str, **kw: Any) -> list[str]:
        """Run `alembic revision --autogenerate`; return the tables the revision creates."""
        created: list[str] = []

        def capture(context: Any, revision: Any, directives: list[Any]) -> None:
            for op in directives[0].upgrade_ops.ops:
                if isinstance(op, ops.CreateTableOp):
                    created.append(op.table_name)

        command.revision(
            cfg,
            message,
            autogenerate=True,
            process_revision_directives=capture,
            version_path=str(self.root / "alembic" / "versions"),
            **kw,
        )
        return created

    def tables(self) -> set[str]:
        engine = create_engine(sync_url(self.url))
        try:
            return set(inspect(engine).get_table_names()) - {"alembic_version"}
        finally:
            engine.dispose()

    def close(self) -> None:
        sys.path.remove(str(self.root))
        for name in [m for m in sys.modules if m.startswith(self.package)]:
            del sys.modules[name]


@pytest.fixture
def app(empty_db_url: str, tmp_path: Path) -> Iterator[HostApp]:
    host = HostApp(tmp_path, sync_url(empty_db_url))
    yield host
    host.close()


def only_pgqrs(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    table = name if type_ == "table" else getattr(getattr(obj, "table", None), "name", None)
    return table in PGQRS


def drift(url: str, metadata: Any) -> list[Any]:
    """Alembic's structured diff between the database's pgqrs tables and ``metadata``."""
    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"include_object": only_pgqrs})
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


def test_shipped_branch_matches_the_models_and_downgrades_alone(app: HostApp) -> None:
    cfg = app.config(app.models("v1", V1), tables="exclude", branch=True)
    command.upgrade(cfg, "heads")
    assert app.tables() == PGQRS
    # The app's own first revision: include_object keeps autogenerate from dropping the
    # pgqrs tables it finds in the database but not in the app's models.
    assert app.autogenerate(cfg, "customers", head="base", branch_label="app") == ["customers"]
    command.upgrade(cfg, "heads")
    assert app.tables() == PGQRS | {"customers"}
    assert drift(app.url, pgqrs.pgqrs_models().metadata) == []
    command.check(cfg)  # the app's autogenerate sees nothing to do

    command.downgrade(cfg, "pgqrs@base")
    assert app.tables() == {"customers"}


def test_autogenerate_in_an_existing_history_adds_exactly_the_pgqrs_tables(app: HostApp) -> None:
    cfg = app.config(app.models("v1", V1), tables="include", branch=False)
    assert app.autogenerate(cfg, "customers") == ["customers"]
    command.upgrade(cfg, "head")

    cfg = app.config(app.models("v2", V2), tables="include", branch=False)
    created = app.autogenerate(cfg, "add pgqrs")
    assert set(created) == PGQRS | {"orders"}
    assert len(created) == len(PGQRS) + 1
    command.upgrade(cfg, "head")
    assert app.tables() == PGQRS | {"customers", "orders"}
    command.check(cfg)  # a second autogenerate finds no difference
    assert app.autogenerate(cfg, "nothing") == []


def test_branch_plus_host_models_that_include_pgqrs(app: HostApp) -> None:
    """A host whose Base carries the pgqrs models but takes the shipped branch: its own
    autogenerate must neither re-create nor drop our tables."""
    cfg = app.config(app.models("v2", V2), tables="exclude", branch=True)
    command.upgrade(cfg, "pgqrs@head")
    created = app.autogenerate(cfg, "app tables", head="base", branch_label="app")
    assert set(created) == {"customers", "orders"}
    command.upgrade(cfg, "heads")
    command.check(cfg)


@pytest.mark.parametrize("template", ["async", "sync"])
def test_new_app_scaffolded_from_a_template(
    empty_db_url: str, tmp_path: Path, template: str
) -> None:
    ini = scaffold(tmp_path / "migrations", template=template)
    assert (tmp_path / "migrations" / "env.py").exists()
    cfg = Config(str(ini))
    url = empty_db_url if template == "async" else sync_url(empty_db_url)
    if template == "async":
        url = pgqrs.store.normalise_url(url).render_as_string(hide_password=False)
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(cfg, "heads")
    assert drift(empty_db_url, pgqrs.pgqrs_models().metadata) == []
    command.check(cfg)


def test_scaffold_command_line(tmp_path: Path) -> None:
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", "pgqrs_sqla.alembic_support", "init", str(tmp_path / "alembic")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    ini = (tmp_path / "alembic.ini").read_text()
    assert "pgqrs_sqla:migrations/versions" in ini
    assert "path_separator = space" in ini
    again = subprocess.run(
        [sys.executable, "-m", "pgqrs_sqla.alembic_support", "init", str(tmp_path / "alembic")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert again.returncode == 1
    assert again.stderr.startswith("error:")
    assert "Traceback" not in again.stderr
