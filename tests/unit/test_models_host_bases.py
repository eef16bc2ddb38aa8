"""pgqrs_models on the bases hosts have (SQLAlchemy's, SQLModel's, none), and
``models.run_fk()``: a foreign key to runs that has a name, whatever the host's convention."""

from __future__ import annotations

import pytest
from sqlalchemy import Column, Integer, MetaData, Table
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, registry

import pgqrs_sqla as pgqrs


def fk_names(table: Table) -> list[str | None]:
    return [fk.name for fk in table.foreign_key_constraints]


def test_run_fk_is_named_without_a_convention_and_by_the_convention_with_one() -> None:
    class Base(DeclarativeBase):
        pass

    models = pgqrs.pgqrs_models(Base)

    class Order(Base):
        __tablename__ = "orders"
        id: Mapped[int] = mapped_column(primary_key=True)
        run_id: Mapped[int | None] = mapped_column(models.run_fk())

    class HasRun:  # a mixin: declarative copies its column into each table
        run_id: Mapped[int | None] = mapped_column(models.run_fk(ondelete="CASCADE"))

    class Invoice(HasRun, Base):
        __tablename__ = "invoices"
        id: Mapped[int] = mapped_column(primary_key=True)

    core = Table(
        "core", Base.metadata, Column("id", Integer, primary_key=True),
        Column("r", Integer, models.run_fk(name="my_fk")),
    )  # fmt: skip
    long = Table("t" * 50, Base.metadata, Column("run", Integer, models.run_fk()))

    assert fk_names(Order.__table__) == ["fk_orders_run_id_pgqrs_workflow_runs"]
    [fk] = Order.__table__.foreign_key_constraints
    assert fk.ondelete == "SET NULL"
    assert fk.referred_table is models.tables.runs
    assert fk_names(Invoice.__table__) == ["fk_invoices_run_id_pgqrs_workflow_runs"]
    assert fk_names(core) == ["my_fk"]
    [long_name] = fk_names(long)
    assert long_name is not None and len(long_name) <= 63

    class Conventional(DeclarativeBase):
        metadata = MetaData(naming_convention={"fk": "fk_%(table_name)s_%(column_0_name)s"})

    conventional = pgqrs.pgqrs_models(Conventional)

    class Thing(Conventional):
        __tablename__ = "things"
        id: Mapped[int] = mapped_column(primary_key=True)
        run_id: Mapped[int | None] = mapped_column(conventional.run_fk())

    [fk] = Thing.__table__.foreign_key_constraints
    # Left to the convention, as every other key of the host is.
    assert fk.name == "fk_things_run_id"


def test_sqlmodel_base_shares_its_metadata_and_registry() -> None:
    sqlmodel = pytest.importorskip("sqlmodel")

    class Base(sqlmodel.SQLModel, registry=registry()):  # type: ignore[call-arg]
        pass

    models = pgqrs.pgqrs_models(Base)
    assert models.metadata is Base.metadata
    assert models.WorkflowRun.registry is Base._sa_registry  # type: ignore[attr-defined]
    assert "pgqrs_workflow_runs" in Base.metadata.tables
    with pytest.raises(pgqrs.ConfigurationError, match="call pgqrs_models\\(\\) once"):
        pgqrs.pgqrs_models(Base)


def test_something_that_is_no_declarative_base_is_refused_saying_what_to_pass() -> None:
    with pytest.raises(pgqrs.ConfigurationError) as caught:
        pgqrs.pgqrs_models(MetaData())  # type: ignore[arg-type]
    assert "call pgqrs_models(Base) with the class your models inherit from" in str(caught.value)
