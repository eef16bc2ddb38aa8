"""The app's own models, with the pgqrs models on the same declarative base."""

from __future__ import annotations

from sqlalchemy import CheckConstraint, ForeignKey, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

import pgqrs_sqla

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


pgqrs = pgqrs_sqla.pgqrs_models(Base)


class Customer(Base):
    __tablename__ = "customers"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))


class Stock(Base):
    __tablename__ = "stock"
    __table_args__ = (CheckConstraint("quantity >= 0", name="non_negative"),)
    sku: Mapped[str] = mapped_column(String(32), primary_key=True)
    quantity: Mapped[int]


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (CheckConstraint("quantity > 0", name="positive_quantity"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    sku: Mapped[str] = mapped_column(ForeignKey("stock.sku"))
    quantity: Mapped[int]
    status: Mapped[str] = mapped_column(String(16), default="placed")
    run_id: Mapped[int | None] = mapped_column(ForeignKey("pgqrs_workflow_runs.id"))
    run: Mapped[pgqrs.WorkflowRun | None] = relationship(pgqrs.WorkflowRun)  # type: ignore[name-defined]
