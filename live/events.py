"""What a subscriber's iterator yields: deliveries of change batches, resync events, access events."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from models.access_events import AccessEvent, AccessKind

__all__ = ["AccessEnded", "AccessKind", "ChangeBatch", "Delivery", "Event", "Resync", "parse_change_payload"]

#: An access-ending event (models/access_events.py), as the bus hands it on.
AccessEnded = AccessEvent


@dataclass(frozen=True, slots=True)
class ChangeBatch:
    """One committed change batch: every entity it changed (a truncated notification expanded)."""

    batch_id: uuid.UUID
    tenant_id: uuid.UUID
    entities: tuple[tuple[str, uuid.UUID], ...]
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def entity_types(self) -> frozenset[str]:
        return frozenset(kind for kind, _ in self.entities)

    def ids(self, entity_type: str) -> list[uuid.UUID]:
        """The ids of the batch's entities of one type, in the batch's order."""
        return [entity_id for kind, entity_id in self.entities if kind == entity_type]


@dataclass(frozen=True, slots=True)
class Resync:
    """Events may have been missed: catch up from `last_batch` / `last_at` (docs/api.md, Subscriptions).

    reason "reconnect": the process's LISTEN connection was lost; `last_batch` is the last batch
    the process delivered before. reason "overflow": the subscriber's queue filled; `last_batch`
    is the last batch the subscriber itself took.
    """

    last_batch: uuid.UUID | None
    last_at: datetime | None
    reason: str


@dataclass(frozen=True, slots=True)
class Delivery:
    """A change batch for one subscriber, with what the shared read of its group returned."""

    batch: ChangeBatch
    shared: object = None


Event = Delivery | Resync | AccessEvent


@dataclass(frozen=True, slots=True)
class ChangeNotice:
    """A change-batch notification as it arrived (entities may be cut: `truncated`)."""

    batch: ChangeBatch
    truncated: bool


def parse_change_payload(payload: str) -> ChangeNotice:
    """The batch a notification on the change channel announces; ValueError if it is not one."""
    data = json.loads(payload)
    if not isinstance(data, dict):
        raise ValueError("a change notification is a JSON object")
    entities = tuple((str(item["type"]), uuid.UUID(str(item["id"]))) for item in data.get("entities") or [])
    batch = ChangeBatch(
        batch_id=uuid.UUID(str(data["batch"])),
        tenant_id=uuid.UUID(str(data["tenant"])),
        entities=entities,
    )
    return ChangeNotice(batch=batch, truncated=bool(data.get("truncated")))
