"""Event items: the PynamoDB model that defines an event's item, and the conversions both ways.

`EventModel` is the one definition of the item's attributes; `event_items` builds, once per
table and set of attribute names, a model class with the caller's key, payload and TTL
attribute names, and the `EventItems` converter around it. PynamoDB is used as the item's schema
only: chathist sends its own requests (`chathist.dynamo.client`), so no model class ever holds a
connection.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pynamodb.attributes import BinaryAttribute, NumberAttribute, UnicodeAttribute
from pynamodb.models import Model

from chathist.core.events import Event, parse_key, sort_key
from chathist.errors import CorruptHistoryError

__all__ = ["INTERNAL_NAMES", "EventItems", "EventModel", "event_items"]


class EventModel(Model):
    """Attributes of one event item. Concrete classes come from `event_items`."""

    session = UnicodeAttribute(hash_key=True)
    seq = UnicodeAttribute(range_key=True)
    kind = UnicodeAttribute(attr_name="event")
    version = NumberAttribute(attr_name="v")
    writer = UnicodeAttribute(attr_name="w", null=True)
    codec = UnicodeAttribute(attr_name="codec", null=True)
    text = UnicodeAttribute(null=True)
    blob = BinaryAttribute(attr_name="blob", null=True, legacy_encoding=False)
    parts = NumberAttribute(attr_name="parts", null=True)
    message_seq = NumberAttribute(attr_name="msg", null=True)
    covers = NumberAttribute(attr_name="count", null=True)
    stage = UnicodeAttribute(attr_name="stage", null=True)
    staged_at = NumberAttribute(attr_name="at", null=True)
    expires_at = NumberAttribute(null=True)
    sealed = UnicodeAttribute(attr_name="enc", null=True)
    """Set on an item whose payload is sealed (client-side encryption, in ``blob``): the
    envelope format (`chathist.dynamo.encryption`)."""


INTERNAL_NAMES = frozenset(
    attribute.attr_name
    for name, attribute in EventModel.get_attributes().items()
    if name not in ("session", "seq", "text", "expires_at")
)
"""Attribute names chathist uses itself; the configurable names must be none of these."""


class EventItems:
    """Converts events of one table to items and back, with that table's attribute names."""

    def __init__(self, model: type[EventModel]) -> None:
        self.model = model
        self.table_name: str = model.Meta.table_name
        attributes = model.get_attributes()
        self.names = {field: attribute.attr_name for field, attribute in attributes.items()}
        self.hash_name = self.names["session"]
        self.range_name = self.names["seq"]
        self.attribute_names = list(self.names.values())

    def key(self, session: str, sort: str) -> dict[str, Any]:
        """The wire-form primary key of the item at ``sort`` in ``session``."""
        return {self.hash_name: {"S": session}, self.range_name: {"S": sort}}

    def to_item(self, session: str, event: Event) -> dict[str, Any]:
        """The wire-form item that stores ``event``."""
        body = event.body
        instance = self.model(
            session,
            sort_key(event),
            kind=event.kind,
            version=event.version,
            writer=event.writer,
            codec=event.codec,
            text=body if isinstance(body, str) else None,
            blob=body if isinstance(body, bytes) else None,
            parts=event.parts or None,
            message_seq=event.message_seq,
            covers=event.count or None,
            stage=event.stage if event.kind == "commit" else None,
            staged_at=event.staged_at,
            expires_at=event.expires_at,
        )
        item: dict[str, Any] = instance.serialize()
        return item

    def key_of(self, raw: dict[str, Any]) -> dict[str, Any]:
        """The primary key of a raw item, as plain values (for error messages)."""
        return {
            name: next(iter(found.values()), None) if isinstance(found, dict) else found
            for name, found in raw.items()
            if name in (self.hash_name, self.range_name)
        }

    def to_event(self, raw: dict[str, Any]) -> Event:
        """The event stored in ``raw``; `CorruptHistoryError` naming the item if it is not one.

        Decoded straight from the attribute map, with the model's attribute names and types:
        the read path's hottest code (PynamoDB's ``from_raw_data`` doubles its cost)."""
        names = self.names

        def value(field: str, kind: str, required: bool = False) -> Any:
            attribute = raw.get(names[field])
            if attribute is None:
                if required:
                    raise ValueError(f"attribute {names[field]!r} is missing")
                return None
            if not isinstance(attribute, dict) or kind not in attribute:
                raise ValueError(f"attribute {names[field]!r} is not of type {kind}")
            return attribute[kind]

        def number(field: str) -> int | None:
            found = value(field, "N")
            return None if found is None else int(found)

        try:
            stage, seq = parse_key(value("seq", "S", required=True))
            text = value("text", "S")
            return Event(
                seq=seq,
                kind=value("kind", "S", required=True),
                codec=value("codec", "S"),
                body=text if text is not None else value("blob", "B"),
                parts=number("parts") or 0,
                message_seq=number("message_seq"),
                count=number("covers") or 0,
                stage=stage if stage is not None else value("stage", "S"),
                staged_at=number("staged_at"),
                writer=value("writer", "S"),
                expires_at=number("expires_at"),
                version=int(value("version", "N", required=True)),
            )
        except (ValueError, TypeError, AttributeError) as exc:
            raise CorruptHistoryError(
                f"unreadable event item: {exc}", key=self.key_of(raw)
            ) from exc


def event_items(
    table_name: str,
    primary_key_name: str = "SessionId",
    sort_key_name: str = "SK",
    payload_name: str = "History",
    ttl_key_name: str = "expireAt",
) -> EventItems:
    """The converter of ``table_name``'s event items with these attribute names, built once
    and cached (one model class per table and names, never changed afterwards)."""
    return _event_items(table_name, primary_key_name, sort_key_name, payload_name, ttl_key_name)


@lru_cache(maxsize=256)
def _event_items(
    table_name: str,
    primary_key_name: str,
    sort_key_name: str,
    payload_name: str,
    ttl_key_name: str,
) -> EventItems:
    attributes: dict[str, Any] = {
        "Meta": type("Meta", (), {"table_name": table_name}),
        "session": UnicodeAttribute(hash_key=True, attr_name=primary_key_name),
        "seq": UnicodeAttribute(range_key=True, attr_name=sort_key_name),
        "text": UnicodeAttribute(null=True, attr_name=payload_name),
        "expires_at": NumberAttribute(null=True, attr_name=ttl_key_name),
    }
    model: type[EventModel] = type(f"EventModel_{table_name}", (EventModel,), attributes)
    return EventItems(model)
