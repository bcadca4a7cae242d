"""The fold: events in, messages out. Pure code, no I/O.

The reader reads a session newest-first and feeds each event to a `TailFold`, which says when no
older event can change the result: at the latest clear, or once it holds the ``limit`` newest
messages. Each event fed must be numbered one below the previous one; a duplicate or an event out
of order is corruption, and so is a gap, unless it can be TTL's doing: DynamoDB's TTL deletes
expired items, and only those, so a gap is legitimate when an event beside it carries an expiry,
or when the event above it was written right above an expiring one (``after_expiring``: a
session whose writers changed their ``ttl``). Expired messages are skipped. One message event
may hold several messages (``count``); a window counts messages, not events, and takes only the
newest messages of the oldest event it needs. A ``commit`` is fed with
the events of its stage, newest first, which must be numbered ``count``-1 down to 0: either as
an iterable (`TailFold.feed`) or one by one between `TailFold.start_stage` and
`TailFold.end_stage`, so a reader fetching them page by page stops inside a large stage once the
window is full, as it does in the sequence.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import BaseMessage

from chathist.core.codec import CODEC_JSON, messages_from_dicts, payload_dicts
from chathist.core.events import FORMAT_VERSION, KINDS, Event
from chathist.errors import CorruptHistoryError

__all__ = ["TailFold", "erased_above_clear", "fold"]


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
        self._found: list[Event] = []  # message events kept, newest first, payloads inline
        self._oldest_take: int | None = None  # messages taken of the oldest, if not all
        self._held = 0  # messages in _found
        self._previous: Event | None = None
        self._pending: _Pending | None = None
        self._stage: tuple[Event, int] | None = None  # (open commit, next expected index)
        self.erased_at: int | None = None
        """Sequence number of the first (newest) ``erased`` event fed, if any: erased events lie
        only below a tombstone, so a reader meets one only if a clear ran while it was reading
        (it should read again), or if the item is corrupt (a read again meets it again)."""
        self.cleared_at: int | None = None
        """Sequence number of the clear the fold stopped at, if any."""
        self.cleared_by: str | None = None
        """The write id of that clear (None where the reader did not read write ids)."""
        self.done = limit == 0

    def feed(self, event: Event, staged: Iterable[Event] = ()) -> bool:
        """Take the next older event (with its stage's events, newest first, if it is a
        commit); return True once older events cannot change the result."""
        kind = event.kind
        if (  # the common event, a whole message: `_check_feed` and `_take`, inline
            kind == "message"
            and not self.done
            and self._stage is None
            and self._pending is None
            and event.version <= FORMAT_VERSION
            and not event.parts
            and event.codec is not None
            and event.body is not None
        ):
            previous = self._previous
            if previous is not None and event.seq != previous.seq - 1:
                self._check_order(event)
            self._previous = event
            self._keep(event)
            return self.done
        if kind == "commit" and self._pending is None:
            if self.start_stage(event):
                for item in staged:
                    if self.feed_staged(item):
                        break
                self.end_stage()
            return self.done
        self._check_feed(event)
        self._take(event)
        return self.done

    def start_stage(self, commit: Event) -> bool:
        """Take a ``commit``; return True if its stage's events must be fed next
        (`feed_staged`, newest first, then `end_stage`), False if it is expired and skipped."""
        self._check_feed(commit)
        if self._expired(commit):
            return False  # its staged events expire with it; TTL may already have deleted some
        self._stage = (commit, commit.count - 1)
        return True

    def feed_staged(self, event: Event) -> bool:
        """Take the next older event of the open stage; return True once older events (of the
        stage or the sequence) cannot change the result."""
        if self._stage is None:
            raise ValueError("no stage is open; call start_stage first")
        commit, expected = self._stage
        if event.seq != expected or event.stage != commit.stage:
            raise CorruptHistoryError(
                f"commit {commit.seq} expects event {expected} of stage {commit.stage!r},"
                f" found event {event.seq} of stage {event.stage!r}"
            )
        self._stage = (commit, expected - 1)
        try:
            self._take(event)
        except CorruptHistoryError as exc:
            raise CorruptHistoryError(f"stage of commit {commit.seq}: {exc}") from exc
        return self.done

    def end_stage(self) -> None:
        """Close the open stage: every event of it was fed, unless the fold is done."""
        if self._stage is None:
            raise ValueError("no stage is open")
        commit, expected = self._stage
        self._stage = None
        if self.done:
            return
        if expected != -1 or commit.count < 1:
            raise CorruptHistoryError(
                f"commit {commit.seq} expects {commit.count} events of stage {commit.stage!r};"
                f" events 0..{expected} are missing"
            )
        if self._pending is not None:
            raise CorruptHistoryError(f"stage of commit {commit.seq} ends inside a message")

    def _check_feed(self, event: Event) -> None:
        if self.done:
            raise ValueError("the fold is done; feed no more events")
        if self._stage is not None:
            raise ValueError("a stage is open; feed its events, then call end_stage")
        previous = self._previous
        if previous is not None and event.seq != previous.seq - 1:
            self._check_order(event)
        self._previous = event

    def _take(self, event: Event) -> None:
        if event.version > FORMAT_VERSION:
            raise CorruptHistoryError(
                f"event {event.seq} has format version {event.version}; this chathist reads up"
                f" to {FORMAT_VERSION}: upgrade chathist"
            )
        if self._pending is not None:
            self._take_part(event)
        elif event.kind == "erased":
            if self.erased_at is None:
                self.erased_at = event.seq
        elif event.kind not in KINDS or event.kind == "commit":
            raise CorruptHistoryError(f"event {event.seq} has unexpected kind {event.kind!r}")
        elif event.kind == "clear":
            self.cleared_at = event.seq
            self.cleared_by = event.writer
            self.done = True
        elif event.kind == "part":
            raise CorruptHistoryError(f"part {event.seq} has no message above it")
        else:
            self._take_message(event)

    @property
    def erased_seen(self) -> bool:
        """Whether an ``erased`` event was fed (see `erased_at`)."""
        return self.erased_at is not None

    @property
    def messages(self) -> list[BaseMessage]:
        """The messages found so far, oldest first."""
        if self._pending is not None:
            header = self._pending.header
            raise CorruptHistoryError(f"message {header.seq} is missing some of its parts")
        found = self._found
        dicts: list[object] = []
        loads = json.loads
        take = self._oldest_take  # for the first event (the oldest), then all
        for event in reversed(found):
            body: Any = event.body  # never None: `_keep` takes only events with a payload
            if event.codec == CODEC_JSON and event.count <= 1:
                take = None
                try:  # one message in plain JSON (`payload_dicts`, inline: the common item)
                    dicts.append(loads(body))
                    continue
                except ValueError:
                    pass  # payload_dicts says what is wrong
            try:
                dicts += payload_dicts(event.codec or "", body, event.count, take)
            except CorruptHistoryError as exc:
                raise _in_event(exc, event) from exc
            take = None
        try:
            return messages_from_dicts(dicts)  # one LangChain call for the whole read
        except CorruptHistoryError:
            take = self._oldest_take
            for event in reversed(found):  # which event holds it
                body = event.body
                try:
                    messages_from_dicts(payload_dicts(event.codec or "", body, event.count, take))
                except CorruptHistoryError as inner:
                    raise _in_event(inner, event) from inner
                take = None
            raise

    def _check_order(self, event: Event) -> None:
        previous = self._previous
        if previous is None or event.seq == previous.seq - 1:
            return
        if event.seq == previous.seq:
            raise CorruptHistoryError(f"sequence number {event.seq} appears twice")
        if event.seq > previous.seq:
            raise CorruptHistoryError(f"event {event.seq} came after event {previous.seq}")
        if event.expires_at is None and previous.expires_at is None and not previous.after_expiring:
            raise CorruptHistoryError(
                f"events {event.seq + 1}..{previous.seq - 1} are missing (a gap in the history)"
            )

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
        self._keep(event)

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
            self._keep(header._replace(body=b"".join(reversed(pending.chunks)), parts=0))

    def _keep(self, event: Event) -> None:
        """Keep a message event whose payload is inline (``body``)."""
        expiry = event.expires_at
        if expiry is not None and self.now is not None and expiry <= self.now:
            return  # expired (`_expired`, inline: this runs for every message)
        count = event.count
        take = count if count > 1 else 1  # `Event.messages`
        limit = self.limit
        if limit is not None and take > limit - self._held:
            take = limit - self._held  # the oldest event kept: the window is full with it
            self._oldest_take = take
        self._found.append(event)
        self._held += take
        if limit is not None and self._held >= limit:
            self.done = True

    @property
    def wanted(self) -> int | None:
        """Most events the fold can still take before it is done (None: no limit): the
        messages still missing from the window, plus the parts of a message being collected.
        A reader asks for pages of this many items."""
        if self.limit is None:
            return None
        pending = self._pending
        parts = 0 if pending is None else pending.header.parts - len(pending.chunks)
        return max(1, self.limit - self._held + parts)


def _in_event(exc: CorruptHistoryError, header: Event) -> CorruptHistoryError:
    """``exc`` saying which event's payload it is about."""
    return CorruptHistoryError(f"event {header.seq}: {exc}", at=(header.stage, header.seq))


def fold(
    events: Iterable[Event],
    *,
    stages: Mapping[str, Sequence[Event]] | None = None,
    limit: int | None = None,
    now: float | None = None,
) -> list[BaseMessage]:
    """Fold events given oldest-first (and the staged events of each stage) into the session's
    (latest ``limit``) messages. The events are a complete snapshot (no clear can run during
    it), so an ``erased`` event above every tombstone is corruption."""
    stages = stages or {}
    tail = TailFold(limit=limit, now=now)
    if not tail.done:
        for event in reversed(list(events)):
            staged = stages.get(event.stage, ()) if event.stage is not None else ()
            if tail.feed(event, reversed(staged)):
                break
    if tail.erased_at is not None:
        raise CorruptHistoryError(_erased_above_clear(tail.erased_at), at=(None, tail.erased_at))
    return tail.messages


def _erased_above_clear(seq: int) -> str:
    return (
        f"event {seq} is erased but no clear lies above it (erased events lie only below a"
        " tombstone): the item was edited or restored outside chathist"
    )


def erased_above_clear(seq: int) -> CorruptHistoryError:
    """The error for an ``erased`` event that two reads in a row met above every tombstone (a
    concurrent clear would have put its tombstone above it for the second read)."""
    return CorruptHistoryError(_erased_above_clear(seq), at=(None, seq))
