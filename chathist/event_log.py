"""A session in the event layout: read, append, clear and repair, as steps.

`EventLog` is one of the three `chathist.session.SessionLog` implementations (with the list
layout's and the lazy migration's). Its rules:

- **Append** plans the write (`chathist.core.plan`), stores any staged requests under the write's
  own id, then puts the final request (the events, or one commit) at the session's next sequence
  number on condition that the numbers are free. A lost race tries right after the highest
  number seen taken (a write of several items over 256 KB that loses twice is staged, so that
  only its commit competes); every fourth loss it backs off and reads where the end is. It
  gives up under the append `RetryRule` (attempts and a time budget) having made nothing
  visible.
- **Read** queries the sequence newest first and folds (`chathist.core.fold.TailFold`) until the
  window is full or the latest clear; a commit's stage is fetched only if the fold takes it. A
  read that meets signs of a concurrent clear (an erased event, a stage gone) reads again.
- **Clear** appends a tombstone, then overwrites every event below it with a content-free
  ``erased`` event (numbers stay taken) and deletes their stages.
- **Repair** deletes stages of writes that never committed.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from langchain_core.messages import BaseMessage

from chathist.core.codec import Payload, encode_message
from chathist.core.events import Event, sort_key
from chathist.core.fold import TailFold, erased_above_clear
from chathist.core.plan import CLEAR, Limits, Plan, item_overhead, plan_write
from chathist.core.retry import RetryRule
from chathist.core.steps import Steps, sleep
from chathist.dynamo.event_store import EventStore, SequenceTaken
from chathist.dynamo.translate import TransactionCanceled
from chathist.errors import (
    ClearIncompleteError,
    ConcurrencyError,
    ConfigurationError,
    CorruptHistoryError,
    DecryptionError,
    OutcomeUnknownError,
    StorageError,
)

__all__ = [
    "ABANDONED_AFTER",
    "ERASED_TTL",
    "READ_RULE",
    "TRUST_NEXT_SEQ",
    "EventLog",
    "LogSettings",
    "PendingWrite",
    "resend",
]

T = TypeVar("T")

ABANDONED_AFTER: Final = 3600
"""Seconds after which a stage that was never committed counts as abandoned."""
ERASED_TTL: Final = 7 * 24 * 3600
"""Seconds after which an ``erased`` event may expire (where the table has TTL turned on)."""
READ_RULE: Final = RetryRule(attempts=3)
"""Reads of a session before an inconsistency (a clear or a migration meeting the read) is
reported rather than read again."""
TRUST_NEXT_SEQ: Final = 300
"""Seconds a log trusts the next sequence number it remembers before reading it again."""
EXPIRY_MARGIN: Final = 60
"""Seconds before the expiry of the event below a remembered next number at which the number
stops being trusted: once that event may be deleted by TTL, the number may no longer be the end
of the sequence (a session whose items all expired starts again lower down)."""

RESEND_RULE: Final = RetryRule(attempts=12, timeout=30.0)
"""Resends of the final request of a write whose answer was lost (a dropped connection, a
server error), with backoff, before `OutcomeUnknownError`. botocore resends too, but its retry
quota is refunded only by successful answers, and a resend of an applied conditional put ends
in a failed condition (chathist's own success): on a lossy network the quota drains and
botocore stops resending. A resend is never stored twice: the put's condition fails on the
write's own items, which count as done."""
AMBIGUOUS_CODES: Final = frozenset({None, "InternalServerError", "ServiceUnavailable"})
"""`StorageError` codes after which a write may have been applied: no answer at all (None,
unless no connection was made), or a server error."""

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
class PendingWrite:
    """The final request of a write whose outcome is unknown (`OutcomeUnknownError.pending`)."""

    events: list[Event]
    extra: list[dict[str, Any]]
    """The transaction's other actions (a lazy migration's retirement of the legacy item)."""


def resend(
    send: Callable[[], Steps[T]], unknown: Callable[[StorageError, str], StorageError]
) -> Steps[T]:
    """Run ``send()`` (a request whose resend is harmless: a conditional write recognised by
    its writer id, or an idempotent batch) again under `RESEND_RULE` while its outcome is
    unknown (`AMBIGUOUS_CODES`); raise ``unknown(last error, attempts spent)`` if no resend got
    an answer. A first refusal (or a request never sent) is raised as it is: nothing was
    stored. The one resend loop of the event layout."""
    attempts = RESEND_RULE.start()  # (its budget includes the first send)
    try:
        return (yield from send())
    except OutcomeUnknownError:
        raise
    except StorageError as exc:
        if exc.code not in AMBIGUOUS_CODES or exc.unsent:
            raise  # refused, or never sent: nothing was stored
        error = exc
    for attempt in attempts:
        if not attempt:
            continue  # (the first send, above)
        yield from sleep(RetryRule.backoff(attempt + 4))
        try:
            return (yield from send())
        except OutcomeUnknownError:
            raise
        except StorageError as exc:
            if exc.code not in AMBIGUOUS_CODES and not exc.unsent:
                raise unknown(exc, attempts.spent) from exc
            error = exc  # unknown, or unsent after an unknown: resend
    raise unknown(error, attempts.spent) from error


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
        self._before: int | None = None
        """The expiry of the event numbered ``_next_seq - 1`` (None: it never expires)."""

    # -- reading --------------------------------------------------------------------------------

    def read(self, completer: Completer | None = None) -> Steps[list[BaseMessage]]:
        """The session's messages (the latest ``window``), oldest first."""
        erased_before: int | None = None
        for attempt in READ_RULE.start():
            final = attempt == READ_RULE.attempts - 1
            complete = None if completer is None else completer()
            try:
                tail = yield from self.read_tail(writers=completer is not None)
                found = self._messages(tail)
            except CorruptHistoryError as exc:
                if final or isinstance(exc, DecryptionError):
                    raise  # a clear does not make an item fail authentication: no read again
                continue  # a clear may have removed a stage this read was about to read
            if tail.erased_at is not None:
                if erased_before is not None and tail.erased_at <= erased_before:
                    # A clear during the first read would have put its tombstone above this
                    # event for the second: no clear did, so the item itself is wrong.
                    raise self._name_item(erased_above_clear(tail.erased_at), None)
                erased_before = tail.erased_at
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

    def read_tail(self, *, writers: bool = False) -> Steps[TailFold]:
        """One read: fold the events newest first until the window is full or a clear
        (``writers``: read each event's write id too, for `TailFold.cleared_by`).

        The first item of the read is the newest event, so the read also tells the next
        sequence number: an append right after it (a LangChain turn) needs no query of its own.
        """
        window = self.settings.window
        tail = TailFold(limit=window, now=time.time())
        cursor = self.store.tail(self.session, writers=writers)
        to_event = self.store.items.to_event  # (`EventStore.event`, looked up once a read)
        feed = tail.feed
        event: Event | None = None
        newest: Event | None = None
        first_page = True
        fewest = 1 << 30  # fewest messages a message item of this read held (a window's)
        try:
            # Pages of as many items as the fold can still take: a window of N messages reads
            # at most N items, plus the parts of a large message in it. Where this process read
            # the session before and its items held several messages each, the first page asks
            # for as many items as that takes (a later page fetches what it did not cover).
            while not tail.done:
                wanted = tail.wanted
                if first_page and wanted is not None:
                    wanted = _DENSITY.first_page(self.store.table_name, self.session, wanted)
                page = yield from cursor.next_page_of(wanted)
                if page is None:
                    break
                if first_page:
                    first_page = False
                    if not page and cursor.done:
                        self.remember(0)  # nothing stored yet
                for raw in page:
                    event = to_event(raw)
                    if newest is None:  # the first event read is the newest
                        newest = event
                        self.remember(event.seq + 1, event.expires_at)
                    if event.count < fewest and event.kind == "message" and not event.parts:
                        fewest = event.count  # (0 for one message: `Event.messages`)
                    if event.kind == "commit" and event.stage is not None:
                        if tail.start_stage(event):
                            yield from self._feed_stage(tail, event.stage)
                        if tail.done:
                            break
                    elif feed(event):
                        break
        except CorruptHistoryError as exc:
            named = self._name_item(exc, event)
            if named is exc:
                raise  # already names its item (never its own cause)
            raise named from exc
        if window is not None and fewest != 1 << 30:
            _DENSITY.remember(self.store.table_name, self.session, max(fewest, 1))
        return tail

    def _feed_stage(self, tail: TailFold, stage: str) -> Steps[None]:
        cursor = self.store.staged(self.session, stage)
        while not tail.done and (page := (yield from cursor.next_page_of(tail.wanted))) is not None:
            for raw in page:
                if tail.feed_staged(self.store.event(raw)):
                    break
        tail.end_stage()

    def _messages(self, tail: TailFold) -> list[BaseMessage]:
        try:
            return tail.messages
        except CorruptHistoryError as exc:
            named = self._name_item(exc, None)
            if named is exc:
                raise  # already names its item (never its own cause)
            raise named from exc

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

    def write(self, entries: Sequence[Entry], *, tag: str = "") -> Steps[int]:
        """Write ``entries`` at the end of the session; return the sequence number of the last.
        ``tag`` starts the write's id (see `chathist.lazy_migration.LEGACY_AWARE`)."""
        limits = self.limits
        plan = self.plan(entries, limits, tag=tag)
        planned = (yield from self.stage(plan)) if plan.staged else 0.0
        attempts = self.settings.append_rule.start()
        for attempt in attempts:
            if attempt > 1 and not plan.staged and plan.size > limits.contended_bytes > 0:
                # A long direct write lost the race twice, the second time right after the
                # highest number it saw taken (the first loss may only have been a stale next
                # number): from now on only its commit competes.
                limits = limits.contended()
                plan = self.plan(entries, limits, tag=tag)
                planned = yield from self.stage(plan)
            if plan.staged and time.time() - planned > ABANDONED_AFTER / 2:
                # A clear elsewhere may soon delete this stage as abandoned: stage anew.
                plan = self.plan(entries, limits, tag=tag)
                planned = yield from self.stage(plan)
            final = yield from self.place(plan)
            before = self._before  # the expiry of the event below final[0]
            try:
                yield from self.insert(final)
            except SequenceTaken as lost:
                # Taken numbers form a prefix 0..n (each write goes right after a number known
                # to be taken), so try right after the highest one seen. Every few losses, back
                # off and read where the end really is.
                if attempt % 4 == 3:
                    self.remember(None)
                    yield from sleep(RetryRule.backoff(attempt // 4))
                elif lost.taken >= final[0].seq:
                    self.remember(lost.taken + 1, lost.expires)
                else:
                    self.remember(final[0].seq, before)
                continue
            self.remember(final[-1].seq + 1, final[-1].expires_at)
            return final[-1].seq
        raise ConcurrencyError(
            f"session {self.session!r}: other writers kept taking the next sequence number"
            f" ({attempts.spent}); nothing was appended"
        )

    def insert(self, final: list[Event], extra: Sequence[dict[str, Any]] = ()) -> Steps[None]:
        """Store the final request of a write (with ``extra`` transaction actions: a lazy
        migration's retirement of the legacy item); resend it (`resend`) while its outcome is
        unknown. Raises `SequenceTaken` if another writer holds its numbers (it is then not
        stored, and never will be), `OutcomeUnknownError` if no resend got an answer."""
        yield from resend(
            lambda: self.store.insert_events(self.session, final, extra),
            lambda exc, spent: self._unknown(PendingWrite(final, list(extra)), exc, spent),
        )

    def _unknown(self, pending: PendingWrite, exc: StorageError, spent: str) -> StorageError:
        return OutcomeUnknownError(
            f"session {self.session!r}: the write at sequence number {pending.events[0].seq}"
            f" may or may not be stored: its answers were lost ({spent}; last: {exc}). It is"
            " stored whole or not at all; call settle(error) to find out without storing it"
            " twice",
            session=self.session,
            seq=pending.events[0].seq,
            pending=pending,
            code=exc.code,
        )

    def settle(self, error: OutcomeUnknownError) -> Steps[bool]:
        """Finish or rule out the write of ``error``: resend it (never stored twice); True if it
        is stored, False if another writer holds its number, or the legacy item it retires
        changed (it never will be stored)."""
        pending = error.pending
        if error.session != self.session or not isinstance(pending, PendingWrite):
            raise ConfigurationError("settle() takes an OutcomeUnknownError of this session")
        try:
            yield from self.insert(pending.events, pending.extra)
        except (SequenceTaken, TransactionCanceled):
            self.remember(None)
            return False
        self.remember(None)
        return True

    def plan(self, entries: Sequence[Entry], limits: Limits, *, tag: str = "") -> Plan:
        """Plan a write of ``entries`` under a new write id (``tag`` + random)."""
        now = int(time.time())
        ttl = self.settings.ttl
        return plan_write(
            entries,  # type: ignore[arg-type]
            tag + os.urandom(16).hex(),  # a random id (uuid4's 122 bits, a fifth of its cost)
            limits,
            expires_at=now + ttl if ttl else None,
            now=now,
        )

    def stage(self, plan: Plan) -> Steps[float]:
        """Store ``plan``'s staged requests; return when (epoch seconds)."""
        for request in plan.staged:  # keyed by the write's id: no other writer competes
            yield from self.store.insert_events(self.session, request)
        return time.time()

    def read_next_seq(self) -> Steps[int]:
        """Read the next sequence number from the end of the sequence, and remember it."""
        newest = yield from self.store.newest(self.session)
        if newest is None:
            self.remember(0)
            return 0
        self.remember(newest[0] + 1, newest[2])
        return newest[0] + 1

    def trusted_next_seq(self) -> int | None:
        """The remembered next sequence number (None: none), while it can be trusted: for up to
        `TRUST_NEXT_SEQ` seconds, and only while the event below it cannot have been deleted
        by TTL (`EXPIRY_MARGIN` before its expiry). DynamoDB never deletes an item before it
        expires, so until then that event holds its number and the remembered one is right
        above the end of the sequence, never a number given up when a session's items all
        expired."""
        before = self._before
        if (before is not None and before <= time.time() + EXPIRY_MARGIN) or (
            time.monotonic() - self._next_seq_at > TRUST_NEXT_SEQ
        ):
            return None
        return self._next_seq

    def place(self, plan: Plan) -> Steps[list[Event]]:
        """``plan``'s final request at the next sequence number; its first event marked
        ``after_expiring`` if it does not expire and the event below it does (so that the gap
        TTL leaves there reads as TTL's, not as a lost event)."""
        start = self.trusted_next_seq()
        if start is None:
            start = yield from self.read_next_seq()
        return plan.at(start, below_expires=self._before is not None)

    def remember(self, next_seq: int | None, before: int | None = None) -> None:
        """Remember the next sequence number and the expiry of the event below it (None: it
        never expires; a next number of None: read it before the next write)."""
        self._next_seq = next_seq
        self._before = before
        self._next_seq_at = time.monotonic()

    # -- clearing -------------------------------------------------------------------------------

    def clear(self, *, tag: str = "") -> Steps[None]:
        """A tombstone first (readers see nothing from then on), then erase everything below
        it. If erasing is interrupted, readers still see an empty history, and the next
        ``clear()`` erases what is left."""
        if self._next_seq in (None, 0) and (yield from self.store.newest(self.session)) is None:
            # No event: at most the stages of first writes that never committed are left.
            yield from self._erasing(lambda: self.delete_stages(set(), ABANDONED_AFTER))
            return
        tombstone = yield from self.write([CLEAR], tag=tag)
        yield from self.erase_below(tombstone)

    def erase_below(self, tombstone: int) -> Steps[None]:
        """Delete the stages of the commits below ``tombstone`` and stages abandoned more than
        `ABANDONED_AFTER` ago, then overwrite the events numbered below it with content-free
        ``erased`` events (their numbers must stay taken). In that order: if any step fails,
        every commit not yet erased still names its stage for the next clear."""
        names = self.store.items.names
        cursor = self.store.sequence(
            self.session,
            newest_first=False,
            below=tombstone,
            projection=[names["kind"], names["stage"]],
        )
        committed: set[str] = set()
        to_erase: list[int] = []
        stray: list[str] = []
        while (page := (yield from cursor.next_page())) is not None:
            for raw in page:
                kind, stage = _text(raw, names["kind"]), _text(raw, names["stage"])
                if stage is not None:
                    committed.add(stage)
                try:
                    seq = self.store.seq_of(raw)
                except CorruptHistoryError:  # a stray key below the tombstone: cleared too
                    stray.append(raw[self.store.range_name]["S"])
                    continue
                if kind != "erased":
                    to_erase.append(seq)
        # The stages go first: erasing a commit drops its link to its stage, so a clear that
        # fails after erasing would leave a stage the next clear could no longer find.
        yield from self._erasing(
            lambda: self.delete_stages(committed, ABANDONED_AFTER, uncommitted_only=False)
        )
        expires_at = int(time.time()) + ERASED_TTL
        yield from self._erasing(
            lambda: self.store.erase(self.session, to_erase, expires_at=expires_at)
        )
        yield from self._erasing(lambda: self.store.delete_keys(self.session, stray))

    def _erasing(self, send: Callable[[], Steps[int]]) -> Steps[int]:
        """Run one of a clear's batch writes (idempotent: deleting or erasing twice leaves the
        same items), resending it while its answer is lost; `ClearIncompleteError` if none
        came back."""
        return (yield from resend(send, self._clear_incomplete))

    def _clear_incomplete(self, exc: StorageError, spent: str) -> StorageError:
        return ClearIncompleteError(
            f"session {self.session!r}: the clear is in effect (no read returns what it"
            f" cleared), but erasing the cleared items lost its answers ({spent}; last: {exc});"
            " call clear() again to finish erasing them",
            code=exc.code,
        )

    def repair(self, older_than: float | None = None) -> Steps[int]:
        """Delete the staged events of writes that never committed, staged more than
        ``older_than`` seconds ago (default and minimum `ABANDONED_AFTER`: a writer re-stages
        anything older than half of it before its commit, so no younger stage can still be
        committed), and the items whose sort key is no key chathist writes (every read and
        write of the session meets them and raises). Return how many items were deleted."""
        older_than = ABANDONED_AFTER if older_than is None else older_than
        if older_than < ABANDONED_AFTER:
            raise ConfigurationError(
                f"older_than must be at least {ABANDONED_AFTER} s: a younger stage may belong"
                " to a write still in progress"
            )
        stage_name = self.store.items.names["stage"]
        cursor = self.store.sequence(self.session, newest_first=False, projection=[stage_name])
        committed: set[str] = set()
        stray: list[str] = []
        while (page := (yield from cursor.next_page())) is not None:
            for raw in page:
                try:
                    self.store.seq_of(raw)
                except CorruptHistoryError:  # "1", a 21-digit key: no write or read owns it
                    stray.append(raw[self.store.range_name]["S"])
                    continue
                if (stage := _text(raw, stage_name)) is not None:
                    committed.add(stage)
        removed = yield from self.store.delete_keys(self.session, stray)
        return removed + (yield from self.delete_stages(committed, older_than))

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


class _Density:
    """Per process: the fewest messages an item held in the last window read of a session, so
    that the next window read of it (by a new history object, as LangChain makes every turn)
    asks for no more items than the window needs. Only a page size: a wrong guess costs one
    more query, never a wrong answer. Bounded (forgets everything at `SIZE` sessions). No lock:
    each dict operation is atomic, and a guess lost to a race costs at most a query."""

    SIZE: Final = 65_536

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], int] = {}

    def first_page(self, table: str, session: str, wanted: int) -> int:
        """Items to ask for first, for ``wanted`` messages."""
        per_item = self._seen.get((table, session), 1)
        return min(wanted, math.ceil(wanted / per_item) + 1) if per_item > 1 else wanted

    def remember(self, table: str, session: str, per_item: int) -> None:
        seen = self._seen
        if len(seen) >= self.SIZE:
            seen.clear()
        seen[(table, session)] = per_item


_DENSITY = _Density()


def _text(raw: dict[str, Any], name: str) -> str | None:
    value = raw.get(name)
    return value.get("S") if isinstance(value, dict) else None
