"""A session in the event layout: read, append, clear and repair, as steps.

`EventLog` is one of the three `chathist.session.SessionLog` implementations (with the list
layout's and the lazy migration's). Its rules:

- **Append** plans the write (`chathist.core.plan`), stores any staged requests under the write's
  own id, then puts the final request (the events, or one commit) at the session's next sequence
  number on condition that the numbers are free. A lost race tries right after the highest
  number seen taken; every fourth loss it backs off and reads where the end is. It gives up
  under the append `RetryRule` (attempts and a time budget) having made nothing visible.
- **Read** queries the sequence newest first and folds (`chathist.core.fold.TailFold`) until the
  window is full or the latest clear; a commit's stage is fetched only if the fold takes it. A
  read that meets signs of a concurrent clear (an erased event, a stage gone) reads again.
- **Clear** appends a tombstone, then overwrites every event below it with a content-free
  ``erased`` event (numbers stay taken) and deletes their stages.
- **Repair** deletes stages of writes that never committed.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from langchain_core.messages import BaseMessage

from chathist.core.codec import Payload, encode_message
from chathist.core.events import Event, sort_key
from chathist.core.fold import TailFold
from chathist.core.plan import CLEAR, Limits, Plan, item_overhead, plan_write
from chathist.core.retry import RetryRule
from chathist.core.steps import Steps, sleep
from chathist.dynamo.event_store import EventStore, SequenceTaken
from chathist.errors import (
    ConcurrencyError,
    ConfigurationError,
    CorruptHistoryError,
    DecryptionError,
)

__all__ = [
    "ABANDONED_AFTER",
    "ERASED_TTL",
    "READ_RULE",
    "TRUST_NEXT_SEQ",
    "EventLog",
    "LogSettings",
]

ABANDONED_AFTER: Final = 3600
"""Seconds after which a stage that was never committed counts as abandoned."""
ERASED_TTL: Final = 7 * 24 * 3600
"""Seconds after which an ``erased`` event may expire (where the table has TTL turned on)."""
READ_RULE: Final = RetryRule(attempts=3)
"""Reads of a session before an inconsistency (a clear or a migration meeting the read) is
reported rather than read again."""
TRUST_NEXT_SEQ: Final = 300
"""Seconds a log trusts the next sequence number it remembers before reading it again."""

DEFAULT_APPEND_RULE: Final = RetryRule(attempts=1000, timeout=30.0)
"""An append gives up after 1000 lost races or 30 s (``max_append_attempts``,
``append_timeout``)."""

Entry = Payload | object
"""What a write carries: encoded messages, or `CLEAR`."""
Completion = Callable[[TailFold, list[BaseMessage], bool], Steps[list[BaseMessage] | None]]
"""Finishes a read from the fold and its messages (the last argument: this is the final
attempt); None asks for another read."""
Completer = Callable[[], Completion]
"""Makes the completion of one read attempt, before the attempt reads anything (so it can
note the state the read starts from)."""


@dataclass(frozen=True)
class LogSettings:
    """What an event log needs to know besides where it is."""

    window: int | None = None
    """Messages a read returns (the latest N); None: all."""
    ttl: int | None = None
    """Seconds after which written messages expire."""
    compress_threshold: int | None = None
    append_rule: RetryRule = DEFAULT_APPEND_RULE


class EventLog:
    """The events of one session."""

    def __init__(self, store: EventStore, session: str, settings: LogSettings) -> None:
        self.store = store
        self.session = session
        self.settings = settings
        overhead = item_overhead(store.items.attribute_names, session)
        self.limits = Limits(overhead + store.encryption.overhead)
        self._next_seq: int | None = None
        self._next_seq_at = 0.0

    # -- reading --------------------------------------------------------------------------------

    def read(self, completer: Completer | None = None) -> Steps[list[BaseMessage]]:
        """The session's messages (the latest ``window``), oldest first."""
        for attempt in READ_RULE.start():
            final = attempt == READ_RULE.attempts - 1
            complete = None if completer is None else completer()
            try:
                tail = yield from self.read_tail()
                found = self._messages(tail)
            except CorruptHistoryError as exc:
                if final or isinstance(exc, DecryptionError):
                    raise  # a clear does not make an item fail authentication: no read again
                continue  # a clear may have removed a stage this read was about to read
            if tail.erased_seen:
                if not final:
                    continue  # a clear ran during the read: its tombstone stops the next one
                raise ConcurrencyError(
                    f"session {self.session!r} was cleared while it was read,"
                    f" {READ_RULE.attempts} reads in a row; nothing of what they saw is returned"
                    " (it would be a history that never existed)"
                )
            if complete is None:
                return found
            result = yield from complete(tail, found, final)
            if result is not None:
                return result
        raise AssertionError("unreachable: the final attempt returns or raises")

    def read_tail(self) -> Steps[TailFold]:
        """One read: fold the events newest first until the window is full or a clear.

        The first item of the read is the newest event, so the read also tells the next
        sequence number: an append right after it (a LangChain turn) needs no query of its own.
        """
        window = self.settings.window
        tail = TailFold(limit=window, now=time.time())
        page_size = None if window is None else window + 2
        cursor = self.store.sequence(self.session, page_size=page_size)
        event: Event | None = None
        first_page = True
        try:
            while not tail.done and (page := (yield from cursor.next_page())) is not None:
                if first_page:
                    first_page = False
                    if page:
                        self.remember(self.store.seq_of(page[0]) + 1)
                    elif cursor.done:
                        self.remember(0)  # nothing stored yet
                for raw in page:
                    event = self.store.event(raw)
                    if event.kind == "commit" and event.stage is not None:
                        if tail.start_stage(event):
                            yield from self._feed_stage(tail, event.stage, page_size)
                    else:
                        tail.feed(event)
                    if tail.done:
                        break
        except CorruptHistoryError as exc:
            raise self._name_item(exc, event) from exc
        return tail

    def _feed_stage(self, tail: TailFold, stage: str, page_size: int | None) -> Steps[None]:
        cursor = self.store.staged(self.session, stage, page_size=page_size)
        while not tail.done and (page := (yield from cursor.next_page())) is not None:
            for raw in page:
                if tail.feed_staged(self.store.event(raw)):
                    break
        tail.end_stage()

    def _messages(self, tail: TailFold) -> list[BaseMessage]:
        try:
            return tail.messages
        except CorruptHistoryError as exc:
            raise self._name_item(exc, None) from exc

    def _name_item(self, exc: CorruptHistoryError, event: Event | None) -> CorruptHistoryError:
        """``exc`` naming the item it is about (the session and sort key)."""
        if exc.key is not None:
            return exc
        if exc.at is not None:
            stage, seq = exc.at
            event = Event(seq, "message", stage=stage)
        if event is None:
            return exc
        key = self.store.items.key_of(self.store.items.key(self.session, sort_key(event)))
        return CorruptHistoryError(f"session {self.session!r}: {exc}", key=key)

    # -- writing --------------------------------------------------------------------------------

    def append(self, messages: Sequence[BaseMessage]) -> Steps[None]:
        """Append ``messages`` atomically and contiguously: all or none, in this order."""
        payloads = self.encode(messages)
        if payloads:
            yield from self.write(payloads)

    def encode(self, messages: Sequence[BaseMessage]) -> list[Payload]:
        """``messages`` encoded for storage (raises before anything is sent)."""
        threshold = self.settings.compress_threshold
        return [encode_message(m, compress_threshold=threshold) for m in messages]

    def write(self, entries: Sequence[Entry]) -> Steps[int]:
        """Write ``entries`` at the end of the session; return the sequence number of the last."""
        plan, planned = yield from self.stage(entries, self.limits)
        attempts = self.settings.append_rule.start()
        for attempt in attempts:
            if plan.staged and time.time() - planned > ABANDONED_AFTER / 2:
                # A clear elsewhere may soon delete this stage as abandoned: stage anew.
                plan, planned = yield from self.stage(entries, self.limits)
            final = plan.at((yield from self.next_seq()))
            try:
                yield from self.store.insert_events(self.session, final)
            except SequenceTaken as lost:
                # Taken numbers form a prefix 0..n (each write goes right after a number known
                # to be taken), so try right after the highest one seen. Every few losses, back
                # off and read where the end really is.
                if attempt % 4 == 3:
                    self.remember(None)
                    yield from sleep(RetryRule.backoff(attempt // 4))
                else:
                    self.remember(max(lost.taken + 1, final[0].seq))
                continue
            self.remember(final[-1].seq + 1)
            return final[-1].seq
        raise ConcurrencyError(
            f"session {self.session!r}: other writers kept taking the next sequence number"
            f" ({attempts.spent}); nothing was appended"
        )

    def stage(self, entries: Sequence[Entry], limits: Limits) -> Steps[tuple[Plan, float]]:
        """Plan a write and store its staged requests; return the plan and when it was made."""
        now = int(time.time())
        ttl = self.settings.ttl
        plan = plan_write(
            entries,  # type: ignore[arg-type]
            uuid.uuid4().hex,
            limits,
            expires_at=now + ttl if ttl else None,
            now=now,
        )
        for request in plan.staged:  # keyed by the write's id: no other writer competes
            yield from self.store.insert_events(self.session, request)
        return plan, time.time()

    def next_seq(self) -> Steps[int]:
        """The next sequence number: remembered (for up to `TRUST_NEXT_SEQ` seconds), else read
        from the end of the sequence."""
        if self._next_seq is None or time.monotonic() - self._next_seq_at > TRUST_NEXT_SEQ:
            newest = yield from self.store.newest(self.session)
            self.remember(0 if newest is None else newest[0] + 1)
        assert self._next_seq is not None
        return self._next_seq

    def remember(self, next_seq: int | None) -> None:
        """Remember the next sequence number (None: read it before the next write)."""
        self._next_seq = next_seq
        self._next_seq_at = time.monotonic()

    # -- clearing -------------------------------------------------------------------------------

    def clear(self) -> Steps[None]:
        """A tombstone first (readers see nothing from then on), then erase everything below
        it. If erasing is interrupted, readers still see an empty history, and the next
        ``clear()`` erases what is left."""
        if self._next_seq is None and (yield from self.store.newest(self.session)) is None:
            # No event: at most the stages of first writes that never committed are left.
            yield from self.delete_stages(set(), ABANDONED_AFTER)
            return
        tombstone = yield from self.write([CLEAR])
        yield from self.erase_below(tombstone)

    def erase_below(self, tombstone: int) -> Steps[None]:
        """Overwrite the events numbered below ``tombstone`` with content-free ``erased``
        events (their numbers must stay taken), and delete their commits' stages and stages
        abandoned more than `ABANDONED_AFTER` ago."""
        names = self.store.items.names
        cursor = self.store.sequence(
            self.session,
            newest_first=False,
            below=tombstone,
            projection=[names["kind"], names["stage"]],
        )
        committed: set[str] = set()
        to_erase: list[int] = []
        while (page := (yield from cursor.next_page())) is not None:
            for raw in page:
                kind, stage = _text(raw, names["kind"]), _text(raw, names["stage"])
                if stage is not None:
                    committed.add(stage)
                if kind != "erased":
                    to_erase.append(self.store.seq_of(raw))
        yield from self.store.erase(
            self.session, to_erase, expires_at=int(time.time()) + ERASED_TTL
        )
        yield from self.delete_stages(committed, ABANDONED_AFTER, uncommitted_only=False)

    def repair(self, older_than: float | None = None) -> Steps[int]:
        """Delete the staged events of writes that never committed, staged more than
        ``older_than`` seconds ago (default and minimum `ABANDONED_AFTER`: a writer re-stages
        anything older than half of it before its commit, so no younger stage can still be
        committed). Return how many items were deleted."""
        older_than = ABANDONED_AFTER if older_than is None else older_than
        if older_than < ABANDONED_AFTER:
            raise ConfigurationError(
                f"older_than must be at least {ABANDONED_AFTER} s: a younger stage may belong"
                " to a write still in progress"
            )
        stage_name = self.store.items.names["stage"]
        cursor = self.store.sequence(self.session, newest_first=False, projection=[stage_name])
        committed: set[str] = set()
        while (page := (yield from cursor.next_page())) is not None:
            committed.update(s for raw in page if (s := _text(raw, stage_name)) is not None)
        return (yield from self.delete_stages(committed, older_than))

    def delete_stages(
        self, committed: set[str], older_than: float, *, uncommitted_only: bool = True
    ) -> Steps[int]:
        """Delete the staged items of uncommitted stages staged over ``older_than`` seconds
        ago, and (unless ``uncommitted_only``) those of the ``committed`` stages. Items among
        the staged keys that are no staged event (a stray ``!`` key, a staging time that is no
        number) belong to no write and no reader: they go too, so a clear or a repair is never
        stopped by them."""
        abandoned = time.time() - older_than
        cursor = self.store.staged(self.session)
        doomed: list[str] = []
        while (page := (yield from cursor.next_page())) is not None:
            for raw in page:
                try:
                    key, stage, staged_at = self.store.stage_of(raw)
                except CorruptHistoryError:
                    doomed.append(raw[self.store.range_name]["S"])
                    continue
                if (stage in committed and not uncommitted_only) or (
                    stage not in committed and (staged_at is None or staged_at < abandoned)
                ):
                    doomed.append(key)
        return (yield from self.store.delete_keys(self.session, doomed))


def _text(raw: dict[str, Any], name: str) -> str | None:
    value = raw.get(name)
    return value.get("S") if isinstance(value, dict) else None
