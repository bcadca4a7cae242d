"""Events: what one stored item of the event layout means.

A session is a sequence of events numbered 0, 1, 2, ... (the item's sort key, zero-padded to
`SEQ_WIDTH` digits so that string order is numeric order). Numbers are never reused, not even
after a clear. The kinds:

``message``  a message added (or several: ``count`` messages written together in one payload);
             its payload inline, or in ``parts`` part items directly below it.
``part``     one slice of a large message's payload; ``message_seq`` names its message.
``clear``    a tombstone: every event below it is cleared.
``commit``   appends the ``count`` events of stage ``stage`` at this point of the sequence.
``erased``   what ``clear()`` leaves of an event below its tombstone: no content, only the key,
             so that the number stays taken (a writer holding a stale "next number" must never
             be able to write into the cleared range, where no reader would see it).

A write too large for one transaction (100 items, 4 MB) is *staged*: its events are stored first
under sort keys ``!<stage>#<index>`` (which sort before every sequence number, so a read of the
sequence never meets them), then one ``commit`` event is appended at the end of the sequence like
any message. Readers see the whole write at the commit, or nothing; a staged write that never
committed stays invisible (and `clear` removes it). Only the commit competes with other writers
for the next sequence number, so a large write is retried cheaply and cannot be starved.
"""

from __future__ import annotations

from typing import Final, Literal, NamedTuple

__all__ = [
    "FORMAT_VERSION",
    "MAX_SEQ",
    "PLAIN_VERSION",
    "SEQ_WIDTH",
    "Event",
    "EventKind",
    "format_seq",
    "parse_key",
    "parse_seq",
    "sort_key",
    "stage_prefix",
]

FORMAT_VERSION: Final = 2
"""Newest version of the item format this chathist writes and reads (2: a message event may
hold several messages); an item of a newer version is refused."""
PLAIN_VERSION: Final = 1
"""The version of every event but a message of several: what chathist before version 2 reads
too, so sessions written one message per call stay readable by older readers."""
SEQ_WIDTH: Final = 20
"""Digits of a sort key: enough for every unsigned 64-bit number."""
MAX_SEQ: Final = 2**64 - 1

EventKind = Literal["message", "part", "clear", "commit", "erased"]
KINDS: Final = frozenset({"message", "part", "clear", "commit", "erased"})


def format_seq(seq: int) -> str:
    """The sort key of sequence number ``seq``."""
    if not 0 <= seq <= MAX_SEQ:
        raise ValueError(f"sequence number {seq} is outside 0..2**64-1")
    return f"{seq:0{SEQ_WIDTH}d}"


def parse_seq(key: str) -> int:
    """The sequence number of sort key ``key``; `ValueError` if it is not one."""
    if len(key) != SEQ_WIDTH or not key.isascii() or not key.isdigit():
        raise ValueError(f"sort key {key!r} is not a {SEQ_WIDTH}-digit sequence number")
    return int(key)


def stage_prefix(stage: str) -> str:
    """The common start of the sort keys of stage ``stage``."""
    return f"!{stage}#"


def parse_key(key: str) -> tuple[str | None, int]:
    """(stage, index) of a staged event's sort key, or (None, seq) of a sequence number's."""
    if key.startswith("!"):
        stage, sep, index = key[1:].rpartition("#")
        if not sep or not stage:
            raise ValueError(f"sort key {key!r} is not a staged event's key")
        return stage, parse_seq(index)
    return None, parse_seq(key)


class Event(NamedTuple):
    """One event of a session, as stored (payloads still encoded). Immutable; a named tuple
    rather than a frozen dataclass because a read makes one per item, and a frozen dataclass
    takes five times as long to build (each field set through ``object.__setattr__``). Change
    a field with ``_replace``."""

    seq: int
    kind: EventKind
    codec: str | None = None
    """For a ``message``: how its payload is encoded (see `chathist.codec`)."""
    body: bytes | str | None = None
    """A ``message``'s inline payload (None when in parts), or a ``part``'s slice."""
    parts: int = 0
    """For a ``message``: how many part items hold its payload, directly below it."""
    message_seq: int | None = None
    """For a ``part``: the sequence number of its message."""
    count: int = 0  # type: ignore[assignment]  # (shadows tuple.count, unused here)
    """For a ``commit``: how many events below it it makes visible. For a ``message`` of
    several: how many messages its payload holds (0 for one)."""
    stage: str | None = None
    """For a staged event (then ``seq`` is its index in the stage), and for a ``commit``: the
    stage's id."""
    staged_at: int | None = None
    """For a staged event: epoch seconds when it was staged (to tell abandoned stages)."""
    writer: str | None = None
    """The id of the write that stored this event (to recognise a retried write)."""
    expires_at: int | None = None
    """Epoch seconds after which the event is expired (TTL)."""
    after_expiring: bool = False
    """Set on an event that does not expire itself, written right above one that does: once
    DynamoDB's TTL deletes that one, the gap below this event is legitimate (a session whose
    writers changed their ``ttl``)."""
    version: int = PLAIN_VERSION

    @property
    def messages(self) -> int:
        """How many messages a ``message`` event holds."""
        return max(self.count, 1)


def sort_key(event: Event) -> str:
    """The sort key that stores ``event``."""
    if event.stage is not None and event.kind != "commit":
        return stage_prefix(event.stage) + format_seq(event.seq)
    return format_seq(event.seq)
