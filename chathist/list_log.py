"""A session in LangChain's list layout: read, append, clear, as steps.

An append is one ``UpdateItem`` (``list_append``), which DynamoDB applies atomically, so
concurrent appends all land. With ``history_size`` the same update is tried on condition that the
list stays within the limit; when it would not, the list is read, cut to the latest
``history_size`` entries and written back on condition that nobody wrote in between, retried
under the append `RetryRule` (then `ConcurrencyError`). A write that would take the item past
400 KB is refused by DynamoDB before anything changes (`ItemTooLargeError`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence

from langchain_core.messages import BaseMessage

from chathist.core.listformat import messages_from_legacy, messages_to_legacy
from chathist.core.retry import RetryRule
from chathist.core.steps import Steps, sleep
from chathist.dynamo.list_store import ListStore
from chathist.errors import ConcurrencyError, ConfigurationError, OutcomeUnknownError

__all__ = ["ListLog"]


class ListLog:
    """The list-layout item of one session as a `chathist.session.SessionLog`."""

    def __init__(
        self,
        store: ListStore,
        *,
        window: int | None,
        coerce_float_to_decimal: bool,
        append_rule: RetryRule,
    ) -> None:
        self.store = store
        self.window = window
        self.coerce_float_to_decimal = coerce_float_to_decimal
        self.append_rule = append_rule

    def read(self) -> Steps[list[BaseMessage]]:
        """The stored messages (the latest ``window`` of them), oldest first."""
        item = yield from self.store.read()
        if item.expired(time.time()):
            return []  # expired: DynamoDB's TTL has not deleted it yet
        messages = messages_from_legacy(item.entries or [])
        return messages[-self.window :] if self.window else messages

    def append(self, messages: Sequence[BaseMessage]) -> Steps[None]:
        """Append ``messages`` atomically (all or none; no concurrent append is lost)."""
        entries = messages_to_legacy(messages, coerce_float_to_decimal=self.coerce_float_to_decimal)
        if not entries:
            return
        write_id = uuid.uuid4().hex
        limit = self.window
        if limit is None or len(entries) <= limit:
            room = None if limit is None else limit - len(entries)
            if (yield from self.store.list_append(self.store.serialize(entries), room, write_id)):
                return
        attempts = self.append_rule.start()
        for attempt in attempts:
            current = yield from self.store.read()
            kept = [] if current.expired(time.time()) else current.entries or []
            combined = [*kept, *entries]
            if limit is not None:
                combined = combined[-limit:]
            if (yield from self.store.replace(current, combined, write_id)):
                return
            yield from sleep(RetryRule.backoff(attempt))
        raise ConcurrencyError(
            f"list-layout session {self.store.key}: other writers kept changing it while a"
            f" truncating write was retried ({attempts.spent}); nothing was written"
        )

    def clear(self) -> Steps[None]:
        """Delete the session's item (as LangChain's ``clear`` does)."""
        yield from self.store.delete()

    def repair(self, older_than: float | None = None) -> Steps[int]:
        """Nothing to repair in the list layout."""
        raise ConfigurationError("repair() applies to the event layout only")
        yield  # pragma: no cover - makes this a generator

    def settle(self, error: OutcomeUnknownError) -> Steps[bool]:
        """The list layout raises no `OutcomeUnknownError`."""
        raise ConfigurationError("settle() applies to the event layout only")
        yield  # pragma: no cover - makes this a generator
