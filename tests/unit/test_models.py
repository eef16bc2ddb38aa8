"""Models join the host app's MetaData: naming convention, schema, prefix, FK + relationship,
and the ORM refuses writes to pgqrs rows."""

from __future__ import annotations

import enum
import re

import pytest
from sqlalchemy import (
    CheckConstraint,
    ForeignKey,
    MetaData,
    create_engine,
    exc,
    inspect,
    select,
    update as sql_update,
)
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    relationship,
    selectinload,
)
from sqlalchemy.schema import CreateTable, Table

import pgqrs_sqla as pgqrs
from pgqrs_sqla.alembic_support import pgqrs_table_names
from pgqrs_sqla.models import ArchiveReason, WorkerStatus

CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
TABLES = {
    "pgqrs_queues",
    "pgqrs_messages",
    "pgqrs_workers",
    "pgqrs_workflows",
    "pgqrs_workflow_runs",
    "pgqrs_workflow_steps",
    "pgqrs_workflow_events",
    "pgqrs_schedules",
}


def host_base(convention: dict[str, str] | None = CONVENTION) -> type[DeclarativeBase]:
    class Base(DeclarativeBase):
        metadata = MetaData(naming_convention=convention or {})

    return Base


def test_tables_join_the_host_metadata_with_its_naming_convention() -> None:
    Base = host_base()
    models = pgqrs.pgqrs_models(Base)
    assert models.metadata is Base.metadata
    assert set(Base.metadata.tables) >= TABLES
    ddl = str(CreateTable(models.tables.messages))
    assert "CONSTRAINT pk_pgqrs_messages PRIMARY KEY" in ddl
    assert "fk_pgqrs_messages_queue_id_pgqrs_queues" in ddl
    # CHECK constraints and indexes keep their exact, prefix-derived names.
    assert "CONSTRAINT pgqrs_messages_reason_ck CHECK" in ddl
    assert {ix.name for ix in models.tables.messages.indexes} == {
        "pgqrs_messages_ready_ix",
        "pgqrs_messages_archived_ix",
    }


def constrained_values(table: Table, column: str) -> set[str] | None:
    """The values a CHECK constraint of ``table`` allows in ``column`` (None: no CHECK)."""
    for constraint in table.constraints:
        if isinstance(constraint, CheckConstraint):
            sql = str(constraint.sqltext)
            if re.match(rf"(\w+ IS NULL OR )?{column} IN \(", sql):
                return set(re.findall(r"'([^']*)'", sql))
    return None


#: (table attribute, column, its states, whether NULL is allowed) for every state column.
STATE_COLUMNS: list[tuple[str, str, type[enum.StrEnum], bool]] = [
    ("runs", "status", pgqrs.RunStatus, False),
    ("steps", "status", pgqrs.StepStatus, False),
    ("workers", "status", WorkerStatus, False),
    ("messages", "archive_reason", ArchiveReason, True),
]


@pytest.mark.parametrize(
    ("table", "column", "states", "nullable"), STATE_COLUMNS, ids=[c[0] for c in STATE_COLUMNS]
)
def test_status_columns_are_constrained_to_the_design_states(
    table: str, column: str, states: type[enum.StrEnum], nullable: bool
) -> None:
    t = getattr(pgqrs.pgqrs_models().tables, table)
    assert constrained_values(t, column) == {s.value for s in states}
    assert t.c[column].nullable is nullable
    ddl = str(CreateTable(t))
    assert f"CONSTRAINT pgqrs_{table}_{'reason' if nullable else 'status'}_ck CHECK" in ddl


async def test_the_database_refuses_states_outside_the_design(store: pgqrs.Store) -> None:
    """One real row in every table with a state column; the database refuses a bad state."""

    async def handler(ctx: pgqrs.RunContext, params: object) -> str:
        return await ctx.step("only", lambda: "ok")

    await store.create_workflow("wf")
    run_id = await pgqrs.workflow("wf").trigger({}).execute(store)
    worker = await pgqrs.consumer("w", None, "wf").handler(handler).create(store)
    await worker.run_until_idle(timeout=30)
    assert (await store.get_run(run_id)).status == pgqrs.RunStatus.SUCCESS

    for table, column, _states, nullable in STATE_COLUMNS:
        t = getattr(store.tables, table)
        name = f"pgqrs_{table}_{'reason' if nullable else 'status'}_ck"
        with pytest.raises(exc.IntegrityError, match=name):
            async with store.engine.begin() as conn:
                await conn.execute(sql_update(t).values({column: "BOGUS"}))
        async with store.engine.connect() as conn:  # the refused write changed nothing
            values = set((await conn.execute(select(t.c[column]))).scalars())
        assert values and "BOGUS" not in values, (table, values)


async def test_app_table_can_point_a_foreign_key_and_relationship_at_runs(
    empty_db_url: str,
) -> None:
    Base = host_base()
    models = pgqrs.pgqrs_models(Base)

    class Order(Base):
        __tablename__ = "orders"
        id: Mapped[int] = mapped_column(primary_key=True)
        run_id: Mapped[int | None] = mapped_column(ForeignKey("pgqrs_workflow_runs.id"))
        run: Mapped[models.WorkflowRun | None] = relationship(models.WorkflowRun)  # type: ignore[name-defined]

    async with await pgqrs.connect(empty_db_url, models=models) as store:
        async with store.engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
            fks = await conn.run_sync(lambda c: inspect(c).get_foreign_keys("orders"))
        assert [(fk["referred_table"], fk["referred_columns"]) for fk in fks] == [
            ("pgqrs_workflow_runs", ["id"])
        ]
        await store.create_workflow("fulfil")
        sessions = async_sessionmaker(store.engine)
        async with sessions() as session, session.begin():
            run_id = await (
                pgqrs.workflow("fulfil", models=models).trigger({"order": 1}).execute(session)
            )
            session.add_all([Order(id=1, run_id=run_id), Order(id=2)])
        async with sessions() as session:
            orders = (
                await session.scalars(
                    select(Order).options(selectinload(Order.run)).order_by(Order.id)
                )
            ).all()
            first, second = orders
            assert first.run is not None
            assert (first.run.id, first.run.status, first.run.input) == (
                run_id,
                "QUEUED",
                {"order": 1},
            )
            assert second.run is None
            # ...and the other way: a join from the app's table to ours.
            joined = await session.execute(
                select(Order.id, models.WorkflowRun.status).join(Order.run)
            )
            assert joined.all() == [(1, "QUEUED")]


def test_prefix_and_schema_options() -> None:
    Base = host_base()
    models = pgqrs.pgqrs_models(Base, prefix="jobs_", schema="background")
    assert {t.fullname for t in Base.metadata.sorted_tables} == {
        "background." + name.replace("pgqrs_", "jobs_") for name in TABLES
    }
    fk = next(iter(models.tables.messages.c.queue_id.foreign_keys))
    assert fk.target_fullname == "background.jobs_queues.id"
    assert "jobs_messages_ready_ix" in {ix.name for ix in models.tables.messages.indexes}


@pytest.mark.parametrize("prefix", ["pgqrs_", "jobs_"])
def test_the_alembic_helpers_know_every_table_the_models_make(prefix: str) -> None:
    """``pgqrs_table_names`` (the ``exclude_pgqrs_tables`` hook) and ``models.owns`` name
    exactly the tables ``pgqrs_models`` puts in the metadata, so a new table cannot be left
    to a host's autogenerate."""
    models = pgqrs.pgqrs_models(prefix=prefix)
    made = {t.name for t in models.metadata.sorted_tables}
    assert made == {name.replace("pgqrs_", prefix) for name in TABLES}
    assert pgqrs_table_names(prefix) == made
    assert {
        t.name for t in models.metadata.sorted_tables if models.owns(t, t.name, "table")
    } == made


def test_library_metadata_for_apps_without_a_base() -> None:
    one, two = pgqrs.pgqrs_models(), pgqrs.pgqrs_models()
    assert one.metadata is not two.metadata
    assert one.metadata.naming_convention["pk"] == pgqrs.DEFAULT_NAMING_CONVENTION["pk"]


def test_second_call_on_the_same_base_is_refused() -> None:
    Base = host_base()
    pgqrs.pgqrs_models(Base)
    with pytest.raises(pgqrs.ConfigurationError, match="already on"):
        pgqrs.pgqrs_models(Base)


@pytest.mark.parametrize("prefix", ["", "Bad", "1x_", "x" * 30, "a-b"])
def test_invalid_prefix(prefix: str) -> None:
    with pytest.raises(pgqrs.ConfigurationError, match="invalid table prefix"):
        pgqrs.pgqrs_models(prefix=prefix)


def test_orm_writes_to_pgqrs_rows_are_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    models = pgqrs.pgqrs_models()
    engine = create_engine(f"sqlite:///{tmp_path}/ro.db")
    models.metadata.create_all(engine)
    with Session(engine) as session:
        session.add(models.Queue(queue_name="q", max_deliveries=5))
        with pytest.raises(pgqrs.ReadOnlyModel, match="create_queue"):
            session.flush()
        session.rollback()
        assert session.scalars(select(models.Queue)).all() == []
    engine.dispose()
