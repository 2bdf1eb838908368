"""The batches table: who a provider batch bills, what it holds, whether it was metered."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import Boolean, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from otari_server.storage.tables import Base, Money, UTCDateTime, utcnow


class BatchJob(Base):
    """A batch created through the gateway, keyed by the provider's own batch id."""

    __tablename__ = "batches"

    provider: Mapped[str] = mapped_column(String(64), primary_key=True)
    batch_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    model_key: Mapped[str] = mapped_column(String(255))
    user_id: Mapped[str | None] = mapped_column(String(255), index=True)
    api_key_id: Mapped[str | None] = mapped_column(String(64), index=True)
    counts_toward_budget: Mapped[bool] = mapped_column(Boolean, default=True)
    request_count: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Set, once, by whoever meters the results: a second collection must not bill again.
    metered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The worst case of every line, held against the user's budget from creation until the
    # results are collected: the `reservations` row `hold_id` (None when nothing is held).
    hold_id: Mapped[str | None] = mapped_column(String(64))
    reserved: Mapped[Decimal] = mapped_column(Money(), default=Decimal(0))
