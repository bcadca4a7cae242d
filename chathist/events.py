"""Events: what one stored item of the event layout means.

A session is a sequence of events numbered 0, 1, 2, ... (the item's sort key, zero-padded to
`SEQ_WIDTH` digits so that string order is numeric order). Numbers are never reused, not even
after a clear. The kinds:

``message``  a message added; its payload inline, or in ``parts`` part items directly below it.
``part``     one slice of a large message's payload; ``message_seq`` names its message.
``clear``    a tombstone: every event below it is cleared.
``commit``   makes the ``count`` events below it visible; written last by a write that needed
             more than one transaction. Those events carry ``commit_seq`` and stay invisible
             until their commit exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "FORMAT_VERSION",
    "MAX_SEQ",
    "SEQ_WIDTH",
    "Event",
    "EventKind",
    "format_seq",
    "parse_seq",
]

FORMAT_VERSION: Final = 1
"""Version of the item format this chathist writes; an item of a newer version is refused."""
SEQ_WIDTH: Final = 20
"""Digits of a sort key: enough for every unsigned 64-bit number."""
MAX_SEQ: Final = 2**64 - 1

EventKind = Literal["message", "part", "clear", "commit"]
KINDS: Final = frozenset({"message", "part", "clear", "commit"})


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


@dataclass(frozen=True, slots=True)
class Event:
    """One event of a session, as stored (payloads still encoded)."""

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
    count: int = 0
    """For a ``commit``: how many events below it it makes visible."""
    commit_seq: int | None = None
    """For an event written by a multi-transaction write: the sequence number of its commit."""
    writer: str | None = None
    """The id of the write that stored this event (to recognise a retried write)."""
    expires_at: int | None = None
    """Epoch seconds after which the event is expired (TTL)."""
    version: int = FORMAT_VERSION
