"""The fold: events in, messages out. Pure code, no I/O.

The reader reads a session newest-first and feeds each event to a `TailFold`, which says when no
older event can change the result: at the latest clear, or once it holds the ``limit`` newest
messages. Each event fed must be numbered one below the previous one; a duplicate or an event out
of order is corruption, and so is a gap, unless an event beside it carries an expiry (DynamoDB's
TTL deletes expired items, leaving gaps). Expired events are skipped. Events of a
multi-transaction write whose commit is missing are skipped (the write never finished).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from langchain_core.messages import BaseMessage

from chathist.codec import decode_message
from chathist.errors import CorruptHistoryError
from chathist.events import FORMAT_VERSION, KINDS, Event

__all__ = ["TailFold", "fold"]


@dataclass(slots=True)
class _Pending:
    """A large message whose parts are being collected (newest part first)."""

    header: Event
    chunks: list[bytes]


class TailFold:
    """Folds events fed newest-first into the newest messages of a session."""

    def __init__(self, *, limit: int | None = None, now: float | None = None) -> None:
        if limit is not None and limit < 0:
            raise ValueError("limit must be >= 0")
        self.limit = limit
        self.now = now
        self._found: list[tuple[int, str, bytes | str]] = []  # (seq, codec, payload), newest first
        self._previous: Event | None = None
        self._pending: _Pending | None = None
        self._commits: dict[int, int] = {}  # commit seq -> lowest seq it covers
        self.cleared_at: int | None = None
        """Sequence number of the clear the fold stopped at, if any."""
        self.done = limit == 0

    def feed(self, event: Event) -> bool:
        """Take the next older event; return True once older events cannot change the result."""
        if self.done:
            raise ValueError("the fold is done; feed no more events")
        self._check_order(event)
        self._previous = event
        if event.version > FORMAT_VERSION:
            raise CorruptHistoryError(
                f"event {event.seq} has format version {event.version}; this chathist reads up"
                f" to {FORMAT_VERSION}: upgrade chathist"
            )
        if event.kind not in KINDS:
            raise CorruptHistoryError(f"event {event.seq} has unknown kind {event.kind!r}")
        if self._pending is not None:
            self._take_part(event)
        elif event.commit_seq is not None and not self._committed(event):
            pass  # written by a multi-transaction write that never committed
        elif event.kind == "clear":
            self.cleared_at = event.seq
            self.done = True
        elif event.kind == "commit":
            if event.count < 1 or event.count > event.seq:
                raise CorruptHistoryError(f"commit {event.seq} covers {event.count} events")
            self._commits[event.seq] = event.seq - event.count
        elif event.kind == "part":
            raise CorruptHistoryError(f"part {event.seq} has no message above it")
        else:
            self._take_message(event)
        return self.done

    @property
    def messages(self) -> list[BaseMessage]:
        """The messages found so far, oldest first."""
        if self._pending is not None:
            header = self._pending.header
            raise CorruptHistoryError(f"message {header.seq} is missing some of its parts")
        result = []
        for seq, codec, payload in reversed(self._found):
            try:
                result.append(decode_message(codec, payload))
            except CorruptHistoryError as exc:
                raise CorruptHistoryError(f"event {seq}: {exc}") from exc
        return result

    def _check_order(self, event: Event) -> None:
        previous = self._previous
        if previous is None or event.seq == previous.seq - 1:
            return
        if event.seq == previous.seq:
            raise CorruptHistoryError(f"sequence number {event.seq} appears twice")
        if event.seq > previous.seq:
            raise CorruptHistoryError(f"event {event.seq} came after event {previous.seq}")
        if event.expires_at is None and previous.expires_at is None:
            raise CorruptHistoryError(
                f"events {event.seq + 1}..{previous.seq - 1} are missing (a gap in the history)"
            )

    def _committed(self, event: Event) -> bool:
        low = self._commits.get(event.commit_seq)  # type: ignore[arg-type]
        return low is not None and event.seq >= low

    def _expired(self, event: Event) -> bool:
        expiry = event.expires_at
        return self.now is not None and expiry is not None and expiry <= self.now

    def _take_message(self, event: Event) -> None:
        if event.codec is None:
            raise CorruptHistoryError(f"message {event.seq} has no codec")
        if event.parts:
            if event.parts < 0 or event.parts > event.seq:
                raise CorruptHistoryError(f"message {event.seq} claims {event.parts} parts")
            self._pending = _Pending(event, [])
            return
        if event.body is None:
            raise CorruptHistoryError(f"message {event.seq} has no payload")
        self._keep(event, event.body)

    def _take_part(self, event: Event) -> None:
        pending = self._pending
        assert pending is not None
        header = pending.header
        if event.kind != "part" or event.message_seq != header.seq or event.body is None:
            raise CorruptHistoryError(
                f"message {header.seq} expects part {len(pending.chunks) + 1} at {event.seq},"
                f" found a {event.kind} event"
            )
        body = event.body.encode("utf-8") if isinstance(event.body, str) else event.body
        pending.chunks.append(body)
        if len(pending.chunks) == header.parts:
            self._pending = None
            self._keep(header, b"".join(reversed(pending.chunks)))

    def _keep(self, header: Event, payload: bytes | str) -> None:
        if self._expired(header):
            return
        assert header.codec is not None
        self._found.append((header.seq, header.codec, payload))
        if self.limit is not None and len(self._found) >= self.limit:
            self.done = True


def fold(
    events: Iterable[Event], *, limit: int | None = None, now: float | None = None
) -> list[BaseMessage]:
    """Fold events given oldest-first into the session's (latest ``limit``) messages."""
    tail = TailFold(limit=limit, now=now)
    if not tail.done:
        for event in reversed(list(events)):
            if tail.feed(event):
                break
    return tail.messages
