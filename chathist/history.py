"""`DynamoDBChatMessageHistory`: LangChain's chat history interface over the event layout."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import BaseMessage

from chathist.capacity import Capacity, CapacityMeter
from chathist.codec import DEFAULT_COMPRESS_THRESHOLD, Payload, encode_message
from chathist.errors import ConcurrencyError, ConfigurationError, InvalidSessionIdError
from chathist.events import Event, format_seq
from chathist.fold import TailFold
from chathist.models import Binding, event_model
from chathist.store import EventStore, SequenceTaken
from chathist.tables import check_event_schema, describe_key_schema
from chathist.writes import CLEAR, Limits, item_overhead, plan_write

if TYPE_CHECKING:
    import boto3

__all__ = ["DynamoDBChatMessageHistory", "validate_session_id"]

MAX_KEY_BYTES = 2048
"""DynamoDB's limit on a partition key value, in UTF-8 bytes."""
ABANDONED_AFTER = 3600
"""Seconds after which `clear` deletes a stage that was never committed."""


def validate_session_id(session_id: object) -> str:
    """Return ``session_id`` if it can be a partition key value, else raise."""
    if not isinstance(session_id, str):
        raise InvalidSessionIdError(f"session_id must be a str, got a {type(session_id).__name__}")
    if not session_id:
        raise InvalidSessionIdError("session_id must not be empty")
    try:
        size = len(session_id.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidSessionIdError("session_id is not valid Unicode (lone surrogate)") from exc
    if size > MAX_KEY_BYTES:
        raise InvalidSessionIdError(
            f"session_id is {size} bytes in UTF-8; DynamoDB keys hold at most {MAX_KEY_BYTES}"
        )
    return session_id


def _optional_count(name: str, value: object) -> int | None:
    """LangChain treats 0 and None alike ("no limit"); negative numbers are refused."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"{name} must be an int or None, got {value!r}")
    if value < 0:
        raise ConfigurationError(f"{name} must not be negative, got {value}")
    return value or None


class DynamoDBChatMessageHistory(BaseChatMessageHistory):
    """Chat message history in DynamoDB, one item per event; a drop-in for LangChain's class.

    The positional arguments are those of ``langchain_community``'s
    ``DynamoDBChatMessageHistory``. In the event layout they mean:

    - ``table_name``: a table with a string hash key ``primary_key_name`` and a string range key
      ``sort_key_name`` (see `create_table`).
    - ``session_id``: the partition key value; every event of the session is stored under it.
    - ``endpoint_url``, ``boto3_session``: where and as whom to connect (``region_name`` too).
    - ``primary_key_name``: the name of the table's hash key (default ``SessionId``).
    - ``key``: addresses a single item, which the event layout does not use: refused.
    - ``kms_key_id``: client-side encryption is not supported yet: refused. Use encryption at
      rest with a customer managed key instead (``create_table(..., kms_key_id=...)``).
    - ``ttl``: every item written expires ``ttl`` seconds after it was written (attribute
      ``ttl_key_name``); expired items are never returned, even before DynamoDB deletes them.
      Tombstones of ``clear()`` never expire, so cleared messages cannot come back.
    - ``history_size``: ``messages`` returns only the latest N messages, reading about N items.
      All messages stay stored (``clear()`` removes them).
    - ``history_messages_key``: the attribute holding each event's (uncompressed) payload.
    - ``coerce_float_to_decimal``: accepted for compatibility; floats are always stored exactly,
      as JSON, and read back as floats, so there is nothing to coerce.

    Keyword-only options: ``sort_key_name``, ``region_name``, ``consistent_read`` (default True:
    a writer reads its own writes), ``compress_threshold`` (bytes; None never compresses) and
    ``max_append_attempts`` (conditional-write races lost before `ConcurrencyError`).
    """

    def __init__(
        self,
        table_name: str,
        session_id: str,
        endpoint_url: str | None = None,
        primary_key_name: str = "SessionId",
        key: dict[str, str] | None = None,
        boto3_session: boto3.Session | None = None,
        kms_key_id: str | None = None,
        ttl: int | None = None,
        ttl_key_name: str = "expireAt",
        history_size: int | None = None,
        history_messages_key: str | None = "History",
        *,
        coerce_float_to_decimal: bool = False,
        sort_key_name: str = "SK",
        region_name: str | None = None,
        consistent_read: bool = True,
        compress_threshold: int | None = DEFAULT_COMPRESS_THRESHOLD,
        max_append_attempts: int = 64,
    ) -> None:
        if not isinstance(table_name, str) or not table_name:
            raise ConfigurationError("table_name must be a non-empty str")
        self.session_id = validate_session_id(session_id)
        if key is not None:
            raise ConfigurationError(
                "key addresses one item per session (LangChain's list layout); the event layout"
                " stores one item per event under session_id: drop key, or use layout='list'"
            )
        if kms_key_id is not None:
            raise ConfigurationError(
                "kms_key_id (client-side encryption) is not supported yet; encrypt the table at"
                " rest with a customer managed key: create_table(..., kms_key_id=...)"
            )
        if not history_messages_key:
            raise ConfigurationError("history_messages_key must be a non-empty str")
        names = {primary_key_name, sort_key_name, history_messages_key, ttl_key_name}
        if len(names) < 4:
            raise ConfigurationError(
                "primary_key_name, sort_key_name, history_messages_key and ttl_key_name must differ"
            )
        if max_append_attempts < 1:
            raise ConfigurationError("max_append_attempts must be at least 1")
        self.table_name = table_name
        self.ttl = _optional_count("ttl", ttl)
        self.ttl_key_name = ttl_key_name
        self.history_size = _optional_count("history_size", history_size)
        self.history_messages_key = history_messages_key
        self.coerce_float_to_decimal = coerce_float_to_decimal
        self.primary_key_name = primary_key_name
        self.sort_key_name = sort_key_name
        self.consistent_read = consistent_read
        self.compress_threshold = compress_threshold
        self.max_append_attempts = max_append_attempts
        self.meter = CapacityMeter()
        self._binding = Binding(table_name, endpoint_url, region_name, boto3_session)
        model = event_model(
            self._binding, primary_key_name, sort_key_name, history_messages_key, ttl_key_name
        )
        self._store = EventStore(model, consistent_read=consistent_read, meter=self.meter)
        self._limits = Limits(item_overhead(self._store.attribute_names, self.session_id))
        self._next_seq: int | None = None
        self._lock = threading.RLock()
        self._checked = False

    # -- reading --------------------------------------------------------------------------------

    @property
    def messages(self) -> list[BaseMessage]:
        """The session's messages (the latest ``history_size`` of them), oldest first."""
        self._check_table()
        window = self.history_size
        tail = TailFold(limit=window, now=time.time())
        if not tail.done:
            page = None if window is None else window + 2
            for event in self._store.select_events(self.session_id, page_size=page):
                staged: Iterator[Event] = iter(())
                if event.kind == "commit" and event.stage is not None:
                    staged = self._store.select_staged(self.session_id, event.stage, page_size=page)
                if tail.feed(event, staged):
                    break
        return tail.messages

    @messages.setter
    def messages(self, value: list[BaseMessage]) -> None:
        raise NotImplementedError("assign no messages; use add_messages() or clear()")

    # -- writing --------------------------------------------------------------------------------

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Append ``messages`` atomically and contiguously: all or none, in this order."""
        payloads = [encode_message(m, compress_threshold=self.compress_threshold) for m in messages]
        if payloads:
            self._append(payloads)

    def clear(self) -> None:
        """Clear the session: a tombstone first (readers see nothing from then on), then
        delete every item below it in batches. If deletion is interrupted, readers still see an
        empty history, and the next ``clear()`` deletes what is left."""
        self._check_table()
        with self._lock:
            if self._next_seq is None and self._store.last_seq(self.session_id) is None:
                return
            tombstone = self._append([CLEAR])
        self._delete_below(tombstone)

    def _delete_below(self, tombstone: int) -> None:
        """Delete every item the tombstone at ``tombstone`` hides: the events numbered below it,
        the stages of their commits, and stages abandoned more than `ABANDONED_AFTER` ago."""
        committed: set[str] = set()

        def sequence_keys() -> Iterator[str]:
            for seq, stage in self._store.select_commit_stages(self.session_id, tombstone):
                if stage is not None:
                    committed.add(stage)
                yield format_seq(seq)

        self._store.delete_keys(self.session_id, sequence_keys())
        abandoned = time.time() - ABANDONED_AFTER
        staged = (
            key
            for key, stage, staged_at in self._store.select_stage_keys(self.session_id)
            if stage in committed or (staged_at is not None and staged_at < abandoned)
        )
        self._store.delete_keys(self.session_id, staged)

    def _append(self, entries: Sequence[Payload | object]) -> int:
        """Write ``entries`` at the end of the session; return the sequence number of the last."""
        self._check_table()
        now = int(time.time())
        plan = plan_write(
            entries,  # type: ignore[arg-type]
            uuid.uuid4().hex,
            self._limits,
            expires_at=now + self.ttl if self.ttl else None,
            now=now,
        )
        for request in plan.staged:  # keyed by the write's id: no other writer competes
            self._store.insert_events(self.session_id, request)
        with self._lock:
            for attempt in range(self.max_append_attempts):
                if self._next_seq is None:
                    last = self._store.last_seq(self.session_id)
                    self._next_seq = 0 if last is None else last + 1
                final = plan.at(self._next_seq)
                try:
                    self._store.insert_events(self.session_id, final)
                except SequenceTaken as lost:
                    # Taken numbers always form a prefix 0..n (each write goes right after a
                    # number known to be taken), so try right after the highest one seen.
                    # Every few losses, back off and read where the end really is.
                    if attempt % 4 == 3:
                        self._next_seq = None
                        time.sleep(random.uniform(0, min(0.2, 0.004 * 2 ** (attempt // 4))))
                    else:
                        self._next_seq = max(lost.taken + 1, final[0].seq)
                    continue
                self._next_seq = final[-1].seq + 1
                return final[-1].seq
        raise ConcurrencyError(
            f"session {self.session_id!r}: other writers took the next sequence number"
            f" {self.max_append_attempts} times in a row"
        )

    # -- the rest -------------------------------------------------------------------------------

    @property
    def consumed_capacity(self) -> Capacity:
        """Running totals of read units, write units and requests this history has used."""
        return self.meter.total

    def _check_table(self) -> None:
        if not self._checked:
            schema = describe_key_schema(self._binding)
            check_event_schema(schema, self.table_name, self.primary_key_name, self.sort_key_name)
            self._checked = True

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(table_name={self.table_name!r}, session_id={self.session_id!r})"
