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

from pynamodb.attributes import (
    BinaryAttribute,
    BooleanAttribute,
    NumberAttribute,
    UnicodeAttribute,
)
from pynamodb.models import Model

from chathist.core.events import SEQ_WIDTH, Event, parse_key, sort_key
from chathist.errors import CorruptHistoryError

__all__ = ["INTERNAL_NAMES", "EventItems", "EventModel", "event_items", "stray_key"]

_new_event = tuple.__new__


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
    after_expiring = BooleanAttribute(attr_name="px", null=True)
    sealed = UnicodeAttribute(attr_name="enc", null=True)
    """Set on an item whose payload is sealed (client-side encryption, in ``blob``): the
    envelope format (`chathist.dynamo.encryption`)."""


INTERNAL_NAMES = frozenset(
    attribute.attr_name
    for name, attribute in EventModel.get_attributes().items()
    if name not in ("session", "seq", "text", "expires_at")
)
"""Attribute names chathist uses itself; the configurable names must be none of these."""


def stray_key(key: object, item: dict[str, Any]) -> CorruptHistoryError:
    """The error for an item whose sort key no chathist write stores (``item``: its primary
    key): it says the way out, since every read or write of the session meets it."""
    return CorruptHistoryError(
        f"sort key {key!r} is not a 20-digit sequence number nor a staged event's key: no"
        " chathist write stores it; repair() (`chathist repair TABLE SESSION`) deletes such"
        " items",
        key=item,
    )


_FIELDS = (
    "kind",
    "version",
    "writer",
    "codec",
    "text",
    "blob",
    "parts",
    "message_seq",
    "covers",
    "stage",
    "staged_at",
    "expires_at",
    "after_expiring",
)
"""The model's attributes besides the key, in the order `EventItems._values` gives them."""


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
        # ``sealed`` is no field of an event: the encryption layer sets it on the wire item.
        unmapped = set(attributes) - {"session", "seq", "sealed", *_FIELDS}
        if unmapped:
            raise TypeError(f"event item attributes {sorted(unmapped)} are not in _FIELDS")
        self._fields = _FIELDS
        self._optional = tuple(
            self.names[field]
            for field in (
                "text",
                "blob",
                "parts",
                "message_seq",
                "covers",
                "staged_at",
                "expires_at",
                "codec",
                "writer",
                "after_expiring",
                "stage",
            )
        )
        """The attributes `to_event` looks up, in the order it unpacks them."""
        self._kind_name = self.names["kind"]
        self._version_name = self.names["version"]
        self._codec_name = self.names["codec"]
        self._text_name = self.names["text"]
        self._by_name = {
            attribute.attr_name: (field, attribute.attr_type)
            for field, attribute in attributes.items()
            if field != "session"
        }
        self._wire = tuple(attributes[field].attr_name for field in _FIELDS)
        self._kinds = tuple(attributes[field].attr_type for field in _FIELDS)

    def key(self, session: str, sort: str) -> dict[str, Any]:
        """The wire-form primary key of the item at ``sort`` in ``session``."""
        return {self.hash_name: {"S": session}, self.range_name: {"S": sort}}

    def to_item(self, session: str, event: Event) -> dict[str, Any]:
        """The wire-form item that stores ``event``: the model's serialisation (`model_item`),
        built straight from the model's attribute names and types (the write path's hottest
        code; PynamoDB's ``serialize`` costs several times the put's own client work).
        ``tests/test_items.py`` proves the two equal."""
        item: dict[str, Any] = {
            self.hash_name: {"S": session},
            self.range_name: {"S": sort_key(event)},
        }
        for name, kind, value in zip(self._wire, self._kinds, self._values(event), strict=True):
            if value is not None:
                item[name] = {kind: str(value) if kind == "N" else value}
        return item

    def model_item(self, session: str, event: Event) -> dict[str, Any]:
        """The wire-form item of ``event`` as the PynamoDB model serialises it: the one
        definition of the item, which `to_item` reproduces."""
        fields = dict(zip(self._fields, self._values(event), strict=True))
        instance = self.model(session, sort_key(event), **fields)
        item: dict[str, Any] = instance.serialize()
        return item

    @staticmethod
    def _values(event: Event) -> tuple[Any, ...]:
        """The values of `_FIELDS` for ``event`` (None: the attribute is absent)."""
        body = event.body
        return (
            event.kind,
            event.version,
            event.writer,
            event.codec,
            body if isinstance(body, str) else None,
            body if isinstance(body, bytes) else None,
            event.parts or None,
            event.message_seq,
            event.count or None,
            event.stage if event.kind == "commit" else None,
            event.staged_at,
            event.expires_at,
            event.after_expiring or None,
        )

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
        the read path's hottest code (PynamoDB's ``from_raw_data`` doubles its cost). Each
        attribute is read by the type the model gives it, so an item that is not an event
        fails here and is decoded again by `_checked`, which says what is wrong with it."""
        try:
            if len(raw) == 6 and self._text_name in raw and self.hash_name in raw:
                # A message in one text payload, as a reader's projection returns it: the key,
                # kind, version, codec and payload, and nothing else (the common item).
                key = raw[self.range_name]["S"]
                if len(key) == SEQ_WIDTH and key.isdigit() and key.isascii():
                    return _new_event(
                        Event,
                        (
                            int(key),
                            raw[self._kind_name]["S"],
                            raw[self._codec_name]["S"],
                            raw[self._text_name]["S"],
                            0,
                            None,
                            0,
                            None,
                            None,
                            None,
                            None,
                            False,
                            int(raw[self._version_name]["N"]),
                        ),
                    )
            (
                text,
                blob,
                parts,
                message_seq,
                covers,
                staged_at,
                expires_at,
                codec,
                writer,
                after_expiring,
                stored_stage,
            ) = map(raw.get, self._optional)
            key = raw[self.range_name]["S"]
            if len(key) == SEQ_WIDTH and key.isdigit() and key.isascii():
                stage, seq = None, int(key)  # a sequence number (`parse_key`, inline)
            else:
                stage, seq = parse_key(key)
            if stage is None and stored_stage is not None:
                stage = stored_stage["S"]
            return _new_event(  # (`Event._make` without its length check)
                Event,
                (
                    seq,
                    raw[self._kind_name]["S"],
                    None if codec is None else codec["S"],
                    text["S"] if text is not None else None if blob is None else blob["B"],
                    0 if parts is None else int(parts["N"]),
                    None if message_seq is None else int(message_seq["N"]),
                    0 if covers is None else int(covers["N"]),
                    stage,
                    None if staged_at is None else int(staged_at["N"]),
                    None if writer is None else writer["S"],
                    None if expires_at is None else int(expires_at["N"]),
                    after_expiring is not None and after_expiring["BOOL"] is True,
                    int(raw[self._version_name]["N"]),
                ),
            )
        except (KeyError, ValueError, TypeError, AttributeError):
            return self._checked(raw)

    def _checked(self, raw: dict[str, Any]) -> Event:
        """`to_event` the slow way: every attribute checked, for an error naming the item and
        what is wrong with it."""
        found: dict[str, Any] = {}
        try:
            for name, attribute in raw.items():
                spec = self._by_name.get(name)
                if spec is None:
                    continue
                field, kind = spec
                if not isinstance(attribute, dict) or kind not in attribute:
                    raise ValueError(f"attribute {name!r} is not of type {kind}")
                value = attribute[kind]
                found[field] = int(value) if kind == "N" else value
            if "seq" not in found:
                raise ValueError(f"attribute {self.names['seq']!r} is missing")
            try:  # (first: a key no chathist write stores says so, whatever else is wrong)
                stage, seq = parse_key(found["seq"])
            except ValueError:
                raise stray_key(found["seq"], self.key_of(raw)) from None
            for field in ("kind", "version"):
                if field not in found:
                    raise ValueError(f"attribute {self.names[field]!r} is missing")
            text = found.get("text")
            return Event(
                seq=seq,
                kind=found["kind"],
                codec=found.get("codec"),
                body=text if text is not None else found.get("blob"),
                parts=found.get("parts") or 0,
                message_seq=found.get("message_seq"),
                count=found.get("covers") or 0,
                stage=stage if stage is not None else found.get("stage"),
                staged_at=found.get("staged_at"),
                writer=found.get("writer"),
                expires_at=found.get("expires_at"),
                after_expiring=found.get("after_expiring") is True,
                version=found["version"],
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
