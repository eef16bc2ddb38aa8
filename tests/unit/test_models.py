"""Models join the host app's MetaData: naming convention, schema, prefix, FK + relationship,
and the ORM refuses writes to pgqrs rows."""

from __future__ import annotations

import pytest
from sqlalchemy import ForeignKey, MetaData, create_engine, inspect, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship
from sqlalchemy.schema import CreateTable

import pgqrs_sqla as pgqrs

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


def test_status_columns_are_constrained_to_the_design_states() -> None:
    models = pgqrs.pgqrs_models()
    ddl = str(CreateTable(models.tables.runs))
    for status in pgqrs.RunStatus:
        assert f"'{status.value}'" in ddl


def test_app_table_can_point_a_foreign_key_and_relationship_at_runs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    Base = host_base()
    models = pgqrs.pgqrs_models(Base)

    class Order(Base):
        __tablename__ = "orders"
        id: Mapped[int] = mapped_column(primary_key=True)
        run_id: Mapped[int | None] = mapped_column(ForeignKey("pgqrs_workflow_runs.id"))
        run: Mapped[models.WorkflowRun | None] = relationship(models.WorkflowRun)  # type: ignore[name-defined]

    engine = create_engine(f"sqlite:///{tmp_path}/fk.db")
    Base.metadata.create_all(engine)
    fks = inspect(engine).get_foreign_keys("orders")
    assert [(fk["referred_table"], fk["referred_columns"]) for fk in fks] == [
        ("pgqrs_workflow_runs", ["id"])
    ]
    with Session(engine) as session:
        session.add(Order(id=1))
        session.commit()
        order = session.scalars(select(Order)).one()
        assert order.run is None
    engine.dispose()


def test_prefix_and_schema_options() -> None:
    Base = host_base()
    models = pgqrs.pgqrs_models(Base, prefix="jobs_", schema="background")
    assert {t.fullname for t in Base.metadata.sorted_tables} == {
        "background." + name.replace("pgqrs_", "jobs_") for name in TABLES
    }
    fk = next(iter(models.tables.messages.c.queue_id.foreign_keys))
    assert fk.target_fullname == "background.jobs_queues.id"
    assert "jobs_messages_ready_ix" in {ix.name for ix in models.tables.messages.indexes}


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
