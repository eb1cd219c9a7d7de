"""Storing an accepted request as a delivery row: the first durable step of every event.

The web API, a review system's webhook endpoint and the admin commands all
call :func:`store_delivery`, and answer 202 only once it returned: the row is
committed, so nothing answered 202 is lost.  A repeated idempotency key finds
the row stored first instead of making another.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Protocol

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from repo_state.db import session
from repo_state.models import Delivery


class Accepts(Protocol):
    """Where deliveries are stored, and whom to wake once one is."""

    @property
    def engine(self) -> Engine: ...

    def wake(self) -> None: ...


def store_delivery(
    to: Accepts,
    source: str,
    event_type: str,
    payload: dict[str, Any],
    key: str | None,
    requested_by: str | None = None,
) -> tuple[Delivery, bool]:
    """Commit the event; returns (delivery, created).  Idempotent on ``key``."""
    delivery_key = f"{source}:{event_type}:{key or uuid.uuid4()}"
    with session(to.engine) as s:
        existing = s.exec(select(Delivery).where(Delivery.delivery_key == delivery_key)).first()
        if existing is not None:
            return existing, False
        row = Delivery(
            source=source,
            event_type=event_type,
            delivery_key=delivery_key,
            payload=json.dumps(payload, sort_keys=True),
            requested_by=requested_by,
        )
        s.add(row)
        try:
            s.commit()
        except IntegrityError:
            s.rollback()
            again = s.exec(select(Delivery).where(Delivery.delivery_key == delivery_key)).one()
            return again, False
        s.refresh(row)
    to.wake()
    return row, True
