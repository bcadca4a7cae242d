"""Write planning: turn one append into events grouped into requests. Pure code.

An append becomes consecutive events: consecutive small messages (plain JSON) that fit one item
together are *packed* into one message event (`chathist.core.codec.pack_payloads`), so a turn of
two messages is one item and one conditional put; any other message whose payload fits one item
is one event; a larger one is its parts followed by its message header. A write that fits one
transaction (100 items, ~4 MB) is one request, numbered from the session's next sequence number
when it is sent (`Plan.at`): readers find its events in the sequence itself. A larger one, or one
of several items over `Limits.contended_bytes` (256 KB) that lost the race for the end of the
sequence twice (`Limits.contended`), is *staged* (see `chathist.events`) in as few transactions
as DynamoDB allows, and its final request is a single commit event: what competes with other
writers is then small and quick, and a reader follows the commit with one more query. Either way
the write becomes visible all at once, and no other writer's event can land inside it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Final, NamedTuple

from chathist.core.codec import (
    CODEC_JSON,
    CODEC_JSON_LIST,
    Payload,
    pack_payloads,
    packed_size,
)
from chathist.core.events import FORMAT_VERSION, PLAIN_VERSION, Event
from chathist.core.sizes import (
    ITEM_LIMIT,
    MAX_NUMBER_BYTES,
    TRANSACTION_BYTES,
    TRANSACTION_ITEMS,
    text_size,
)
from chathist.errors import MessageTooLargeError

__all__ = [
    "CLEAR",
    "MAX_MESSAGE_BYTES",
    "Limits",
    "Plan",
    "event_size",
    "plan_write",
]

MAX_MESSAGE_BYTES: Final = 32 * 1024 * 1024
"""Largest encoded (and compressed) message payload chathist stores."""


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
    direct_items: int = TRANSACTION_ITEMS
    """Most events a write appends directly at the end of the sequence (more are staged)."""
    direct_bytes: int = TRANSACTION_BYTES
    """Most bytes a write appends directly at the end of the sequence (more are staged): a
    write that fits one transaction goes out as one, so that readers find it in the sequence
    (a staged write costs every reader that reaches its commit one more query)."""
    contended_bytes: int = 256 * 1024
    """Most bytes of a direct write of several items that is sent again after it lost the race
    for the end of the sequence twice; a larger one is staged instead (`contended`). A request this
    large takes long enough that a busy session's other writers keep taking its number
    (tests/test_history.py, a writer appending every 10 ms against 2 MB in one call); staged,
    it competes with them only with its small commit."""
    pack: bool = True
    """Whether consecutive small messages of one write share an item."""

    @property
    def chunk_bytes(self) -> int:
        """Payload bytes one part item holds."""
        return self.item_bytes - self.overhead

    def contended(self) -> Limits:
        """These limits for a write that lost the race for the end of the sequence: direct
        only up to `contended_bytes`."""
        return replace(self, direct_bytes=min(self.direct_bytes, self.contended_bytes))


def item_overhead(attribute_names: Sequence[str], session: str, writer_bytes: int = 32) -> int:
    """Upper bound of an event item's size without its payload (names, keys, numbers)."""
    names = sum(text_size(name) for name in attribute_names)
    return names + text_size(session) + 20 + writer_bytes + 16 + 6 * MAX_NUMBER_BYTES


def event_size(event: Event, overhead: int) -> int:
    """Upper bound of ``event``'s item size."""
    body = event.body
    if body is None:
        return overhead
    return overhead + (len(body.encode("utf-8")) if isinstance(body, str) else len(body))


TEXT_CODECS: Final = frozenset({CODEC_JSON, CODEC_JSON_LIST})
"""Codecs whose payload is stored as text (readable in the console), not binary."""


def _events_for(entry: Payload | _Clear, seq: int, writer: str, limits: Limits) -> list[Event]:
    if isinstance(entry, _Clear):
        return [Event(seq, "clear", writer=writer)]
    data = entry.data
    if len(data) > limits.max_message_bytes:
        raise MessageTooLargeError(
            f"message payload is {len(data):,} bytes encoded; the most chathist stores is"
            f" {limits.max_message_bytes:,}"
        )
    # several messages in one payload: counted, and a format older readers refuse clearly
    count, version = (entry.count, FORMAT_VERSION) if entry.count > 1 else (0, PLAIN_VERSION)
    if len(data) + limits.overhead <= limits.item_bytes:
        body: bytes | str = data.decode("utf-8") if entry.codec in TEXT_CODECS else data
        return [
            Event(
                seq,
                "message",
                codec=entry.codec,
                body=body,
                writer=writer,
                count=count,
                version=version,
            )
        ]
    chunk = limits.chunk_bytes
    pieces = math.ceil(len(data) / chunk)
    header = seq + pieces
    parts = [
        Event(
            seq + i,
            "part",
            body=data[i * chunk : (i + 1) * chunk],
            message_seq=header,
            writer=writer,
        )
        for i in range(pieces)
    ]
    return [
        *parts,
        Event(
            header,
            "message",
            codec=entry.codec,
            parts=len(parts),
            writer=writer,
            count=count,
            version=version,
        ),
    ]


class Plan(NamedTuple):
    """The requests of one write: ``staged`` ones first (any order), then the final one. (A
    named tuple: every append makes one.)"""

    staged: list[list[Event]]
    final: list[Event]
    """The request that appends at the end of the sequence, numbered from 0."""
    size: int = 0
    """Upper bound of the final request's bytes."""

    def at(self, start: int, *, below_expires: bool = False) -> list[Event]:
        """The final request numbered from sequence number ``start``. ``below_expires``: the
        event numbered ``start - 1`` carries an expiry; then a first event that does not is
        marked ``after_expiring`` (the gap TTL leaves below it is TTL's, not a lost event)."""
        final = [
            e._replace(seq=start + e.seq)
            if e.message_seq is None
            else e._replace(seq=start + e.seq, message_seq=start + e.message_seq)
            for e in self.final
        ]
        if below_expires and final[0].expires_at is None:
            final[0] = final[0]._replace(after_expiring=True)
        return final

    @property
    def requests(self) -> int:
        return len(self.staged) + 1


def _packed(entries: Sequence[Payload | _Clear], limits: Limits) -> list[Payload | _Clear]:
    """``entries`` with each run of consecutive plain-JSON payloads that fit one item together
    packed into one payload (greedily, in order)."""
    room = limits.item_bytes - limits.overhead
    result: list[Payload | _Clear] = []
    run: list[Payload] = []

    def flush() -> None:
        if len(run) > 1:
            result.append(pack_payloads(run))
        else:
            result.extend(run)
        run.clear()

    for entry in entries:
        if isinstance(entry, _Clear) or entry.codec != CODEC_JSON or len(entry.data) > room:
            flush()
            result.append(entry)
            continue
        if packed_size([*(len(p.data) for p in run), len(entry.data)]) > room:
            flush()
        run.append(entry)
    flush()
    return result


def plan_write(
    entries: Sequence[Payload | _Clear],
    writer: str,
    limits: Limits,
    *,
    expires_at: int | None = None,
    now: int = 0,
) -> Plan:
    """Plan the write of ``entries``; ``writer`` is the write's unique id (and stage id).

    ``now`` (epoch seconds) is recorded on staged events. Raises `MessageTooLargeError` before
    planning anything if an entry is too large.
    """
    events: list[Event] = []
    for entry in _packed(entries, limits) if limits.pack and len(entries) > 1 else entries:
        events.extend(_events_for(entry, len(events), writer, limits))
    if expires_at is not None:
        events = [e if e.kind == "clear" else e._replace(expires_at=expires_at) for e in events]
    size = sum(event_size(e, limits.overhead) for e in events)
    direct_items = min(limits.direct_items, limits.transaction_items)
    direct_bytes = min(limits.direct_bytes, limits.transaction_bytes)
    if len(events) == 1 or (len(events) <= direct_items and size <= direct_bytes):
        return Plan([], events, size)  # one request (a single put is quick at any item size)
    groups = _group(events, limits)
    staged = [[e._replace(stage=writer, staged_at=now) for e in group] for group in groups]
    commit = Event(
        0, "commit", count=len(events), stage=writer, writer=writer, expires_at=expires_at
    )
    return Plan(staged, [commit], event_size(commit, limits.overhead))


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
