"""Write planning: turn one append into numbered events grouped into requests. Pure code.

An append of n entries starting at sequence number ``start`` becomes consecutive events
``start, start+1, ...``: a message whose payload fits one item is one event; a larger one is its
parts followed by its message header. The events go out in as few requests as DynamoDB allows
(100 items and ~4 MB a transaction). When they need more than one transaction, every event names
the commit event that ends the last transaction, and readers ignore them until it exists, so a
reader never sees part of an append, and no other writer's event can land inside it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Final

from chathist.codec import CODEC_JSON, Payload
from chathist.errors import MessageTooLargeError
from chathist.events import Event

__all__ = [
    "CLEAR",
    "ITEM_LIMIT",
    "MAX_MESSAGE_BYTES",
    "Limits",
    "event_size",
    "plan_write",
]

ITEM_LIMIT: Final = 409_600
"""DynamoDB's item size limit, in bytes (attribute names and values)."""
TRANSACTION_BYTES: Final = 4_000_000
"""A little under DynamoDB's 4 MB limit on the items of one transaction."""
TRANSACTION_ITEMS: Final = 100
MAX_MESSAGE_BYTES: Final = 32 * 1024 * 1024
"""Largest encoded (and compressed) message payload chathist stores."""
NUMBER_BYTES: Final = 21
"""Most bytes DynamoDB counts for one number attribute value of ours."""


class _Clear:
    def __repr__(self) -> str:
        return "CLEAR"


CLEAR: Final = _Clear()
"""An entry of `plan_write` that stands for a clear (a tombstone)."""


@dataclass(frozen=True)
class Limits:
    """Sizes that bound a plan; ``overhead`` is the most bytes of an item besides its payload."""

    overhead: int
    item_bytes: int = ITEM_LIMIT
    transaction_bytes: int = TRANSACTION_BYTES
    transaction_items: int = TRANSACTION_ITEMS
    max_message_bytes: int = MAX_MESSAGE_BYTES

    @property
    def chunk_bytes(self) -> int:
        """Payload bytes one part item holds."""
        return self.item_bytes - self.overhead


def item_overhead(attribute_names: Sequence[str], session: str, writer_bytes: int = 32) -> int:
    """Upper bound of an event item's size without its payload (names, keys, numbers)."""
    names = sum(len(name.encode("utf-8")) for name in attribute_names)
    return names + len(session.encode("utf-8")) + 20 + writer_bytes + 16 + 6 * NUMBER_BYTES


def event_size(event: Event, overhead: int) -> int:
    """Upper bound of ``event``'s item size."""
    body = event.body
    if body is None:
        return overhead
    return overhead + (len(body.encode("utf-8")) if isinstance(body, str) else len(body))


def _events_for(entry: Payload | _Clear, seq: int, writer: str, limits: Limits) -> list[Event]:
    if isinstance(entry, _Clear):
        return [Event(seq, "clear", writer=writer)]
    data = entry.data
    if len(data) > limits.max_message_bytes:
        raise MessageTooLargeError(
            f"message payload is {len(data):,} bytes encoded; the most chathist stores is"
            f" {limits.max_message_bytes:,}"
        )
    if len(data) + limits.overhead <= limits.item_bytes:
        body: bytes | str = data.decode("utf-8") if entry.codec == CODEC_JSON else data
        return [Event(seq, "message", codec=entry.codec, body=body, writer=writer)]
    chunk = limits.chunk_bytes
    count = math.ceil(len(data) / chunk)
    header = seq + count
    parts = [
        Event(
            seq + i,
            "part",
            body=data[i * chunk : (i + 1) * chunk],
            message_seq=header,
            writer=writer,
        )
        for i in range(count)
    ]
    return [*parts, Event(header, "message", codec=entry.codec, parts=count, writer=writer)]


def plan_write(
    entries: Sequence[Payload | _Clear],
    start: int,
    writer: str,
    limits: Limits,
    *,
    expires_at: int | None = None,
) -> list[list[Event]]:
    """The requests (each a list of events) that append ``entries`` at sequence ``start``.

    Raises `MessageTooLargeError` before planning anything if an entry is too large.
    """
    events: list[Event] = []
    for entry in entries:
        events.extend(_events_for(entry, start + len(events), writer, limits))
    if expires_at is not None:
        events = [e if e.kind == "clear" else replace(e, expires_at=expires_at) for e in events]
    groups = _group(events, limits)
    if len(groups) <= 1:
        return groups
    commit_seq = start + len(events)
    events = [replace(e, commit_seq=commit_seq) for e in events]
    commit = Event(commit_seq, "commit", count=len(events), writer=writer, expires_at=expires_at)
    return _group([*events, commit], limits)


def _group(events: list[Event], limits: Limits) -> list[list[Event]]:
    groups: list[list[Event]] = []
    size = 0
    for event in events:
        bytes_ = event_size(event, limits.overhead)
        if (
            not groups
            or len(groups[-1]) >= limits.transaction_items
            or size + bytes_ > limits.transaction_bytes
        ):
            groups.append([])
            size = 0
        groups[-1].append(event)
        size += bytes_
    return groups
