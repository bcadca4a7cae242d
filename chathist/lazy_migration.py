"""Lazy migration: an event log that takes over a session's list-layout item on its first write.

Reading: the legacy item's messages come first, then the events; a clear among the events hides
the legacy messages. A legacy item that is absent, has no list, or carries the migration mark is
ignored.

The first write (``add_messages`` or ``clear``) is committed as ONE ``TransactWriteItems``:

- the events of the legacy messages followed by the new entries (for a clear: the tombstone
  only), each a conditional put at the session's next free sequence numbers, as every
  event-layout append is; and
- the legacy item's retirement: a ``Delete`` (``delete_legacy=True``) or an ``Update`` that sets
  `MIGRATED_ATTRIBUTE`, on condition that the item is still what was read (same counter, or same
  list length) and not already retired.

So either both happen or neither. Two writers racing: both read the legacy item; the first
transaction commits; the second fails (its numbers are taken, or the legacy item is gone or
marked), re-reads, finds no legacy item, and appends only its own entries after the first
writer's: the legacy messages move exactly once. A writer that changed the legacy item in
between (LangChain's class, during a rolling switch) makes the condition fail too, and the
migration is redone from a fresh read. A write larger than one transaction is staged first; the
plan leaves room in the final transaction for the retirement (one item, 400 KB).

A clear retires the legacy item too (it reads it afresh), in the transaction of its tombstone, and
its write id starts with `LEGACY_AWARE`. So a legacy item found while the latest clear among the
events is such a clear was written after it (LangChain's class, in a mixed fleet): its messages
read after the events and move there on the next write, never deleted unmoved. A clear written
by a history without the legacy options hides the legacy messages (they are older). (A window
read filled by the events before it meets the clear shows the events only, until the next write
moves such a legacy item: it does not read the legacy item once the window is full.)

Limits. Give every writer of a session the legacy location until its data is migrated: the
moved messages go at the end of the event sequence, so events written before the migration by a
history without the legacy options would end up before them. LangChain's class writing the
legacy item after it was migrated writes a new legacy item that a later write migrates again,
after the events; with ``delete_legacy=False`` such writes to a marked item are ignored.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

from langchain_core.messages import BaseMessage

from chathist.core.codec import Payload
from chathist.core.fold import TailFold
from chathist.core.listformat import messages_from_legacy
from chathist.core.plan import CLEAR, Limits
from chathist.core.retry import RetryRule
from chathist.core.sizes import ITEM_LIMIT
from chathist.core.steps import Steps, sleep
from chathist.dynamo.event_store import SequenceTaken
from chathist.dynamo.list_store import MIGRATED_ATTRIBUTE, ListItem, ListStore
from chathist.dynamo.translate import TransactionCanceled
from chathist.errors import ConcurrencyError, OutcomeUnknownError
from chathist.event_log import Completion, Entry, EventLog

__all__ = ["LEGACY_AWARE", "MIGRATED_ATTRIBUTE", "LazyMigration"]

LEGACY_AWARE = "lm-"
"""The start of the write id of every write of a lazy migration: on a clear, it says that the
legacy item was retired (or absent) when the tombstone was written."""


class LazyMigration:
    """An `EventLog` together with the session's list-layout item, which it migrates on the
    first write."""

    def __init__(self, log: EventLog, legacy: ListStore, *, delete_legacy: bool = True) -> None:
        self.log = log
        self.legacy = legacy
        self.delete_legacy = delete_legacy
        self.retired = False
        """Set once a consistent read found no legacy item (or this writer migrated it)."""

    # -- reading --------------------------------------------------------------------------------

    def read(self) -> Steps[list[BaseMessage]]:
        """The legacy messages (unless a clear hides them), then the events' messages."""
        return (yield from self.log.read(self._after_legacy))

    def _after_legacy(self) -> Completion:
        """The completion of one read attempt: notes, before the attempt reads the events,
        whether a legacy item is still expected (a migration by this very object, in another
        thread or coroutine, may retire it while the events are read)."""
        expected = not self.retired

        def complete(
            tail: TailFold, found: list[BaseMessage], final: bool
        ) -> Steps[list[BaseMessage] | None]:
            return self._with_legacy(tail, found, final, expected)

        return complete

    def _with_legacy(
        self, tail: TailFold, found: list[BaseMessage], final: bool, expected: bool
    ) -> Steps[list[BaseMessage] | None]:
        after_clear = tail.cleared_at is not None
        if after_clear and not (tail.cleared_by or "").startswith(LEGACY_AWARE):
            return found  # a clear that did not retire the legacy item hides it
        if tail.done and not after_clear:
            return found  # the window is full; the legacy messages are older
        item = yield from self._pending(consistent=self.legacy.consistent_read)
        if item is None:
            if expected and self.retired and not final:
                return None  # migrated between reading the events and the legacy item
            return found
        assert item.entries is not None
        legacy = messages_from_legacy(item.entries)
        # Written after the latest clear retired the legacy item: after the events.
        combined = [*found, *legacy] if after_clear else [*legacy, *found]
        window = self.log.settings.window
        return combined[-window:] if window else combined

    def _pending(self, *, consistent: bool = True) -> Steps[ListItem | None]:
        """The legacy item, unless there is none (or it was retired) any more."""
        if self.retired:
            return None
        item = yield from self.legacy.read(consistent=consistent)
        if item.expired(time.time()):
            return None  # expired: nothing to show or to move (not retired: it may be rewritten)
        if item.entries is None or item.migrated:
            # Only a strongly consistent read proves it gone (an eventual one may lag).
            self.retired = self.retired or consistent
            return None
        return item

    # -- writing --------------------------------------------------------------------------------

    def append(self, messages: Sequence[BaseMessage]) -> Steps[None]:
        """Append ``messages``, moving the legacy messages first if they are still there."""
        payloads = self.log.encode(messages)
        if payloads and (yield from self.migrate(payloads)) is None:
            yield from self.log.write(payloads)

    def clear(self) -> Steps[None]:
        """Clear the session: retire the legacy item with the tombstone, or clear the events."""
        self.retired = False  # LangChain's class may have written it since: read it afresh
        tombstone = yield from self.migrate([CLEAR])
        if tombstone is None:
            yield from self.log.clear(tag=LEGACY_AWARE)
        else:
            yield from self.log.erase_below(tombstone)

    def repair(self, older_than: float | None = None) -> Steps[int]:
        """Repair the event log (see `EventLog.repair`)."""
        return (yield from self.log.repair(older_than))

    def settle(self, error: OutcomeUnknownError) -> Steps[bool]:
        """Settle an append of the event log (see `EventLog.settle`)."""
        return (yield from self.log.settle(error))

    def migrate(self, entries: Sequence[Entry]) -> Steps[int | None]:
        """Write ``entries`` together with the move of the legacy messages into events (for a
        clear, only the retirement of the legacy item); return the sequence number of the last
        entry, or None if there is no legacy item to migrate (then nothing was written)."""
        if self.retired:
            return None
        log = self.log
        clearing = any(entry is CLEAR for entry in entries)
        attempts = log.settings.append_rule.start()
        for attempt in attempts:
            item = yield from self._pending()
            if item is None:
                return None
            assert item.entries is not None
            moved: list[Payload] = []
            if not clearing and not (yield from self._hidden_by_clear()):
                moved = log.encode(messages_from_legacy(item.entries))
            plan = log.plan([*moved, *entries], self._limits(), tag=LEGACY_AWARE)
            planned = yield from log.stage(plan)
            final = yield from log.place(plan)
            retire = self.legacy.retire_action(item, delete=self.delete_legacy, now=int(planned))
            try:
                yield from log.insert(final, extra=[retire])  # resent while answers are lost
            except (SequenceTaken, TransactionCanceled):
                log.remember(None)  # the winner may have taken those numbers
                yield from sleep(RetryRule.backoff(attempt))
                continue
            self.retired = True
            log.remember(final[-1].seq + 1, final[-1].expires_at)
            return final[-1].seq
        raise ConcurrencyError(
            f"session {log.session!r}: the legacy item kept changing while it was migrated"
            f" ({attempts.spent}); nothing was appended"
        )

    def _limits(self) -> Limits:
        """Limits that leave room in the final transaction for the legacy item's action."""
        limits = self.log.limits
        return replace(
            limits,
            transaction_items=limits.transaction_items - 1,
            transaction_bytes=limits.transaction_bytes - ITEM_LIMIT,
        )

    def _hidden_by_clear(self) -> Steps[bool]:
        """Whether the latest clear among the session's events hides the legacy messages: it
        was written by a history without the legacy options (a lazy migration's clear retired
        the legacy item, so one found now was written after it)."""
        names = self.log.store.items.names
        kind, writer = names["kind"], names["writer"]
        cursor = self.log.store.sequence(self.log.session, projection=[kind, writer])
        while (page := (yield from cursor.next_page())) is not None:
            for raw in page:
                if raw.get(kind, {}).get("S") == "clear":
                    return not str(raw.get(writer, {}).get("S", "")).startswith(LEGACY_AWARE)
        return False
