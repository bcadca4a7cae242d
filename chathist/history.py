"""`DynamoDBChatMessageHistory`: LangChain's chat history interface over the event layout."""

from __future__ import annotations

import random
import threading
import time
import uuid
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import BaseMessage

from chathist.capacity import Capacity, CapacityMeter
from chathist.codec import DEFAULT_COMPRESS_THRESHOLD, Payload, encode_message
from chathist.errors import (
    ConcurrencyError,
    ConfigurationError,
    CorruptHistoryError,
    InvalidSessionIdError,
    TableSchemaError,
    UnsupportedValueError,
)
from chathist.events import Event, sort_key
from chathist.fold import TailFold
from chathist.legacy import ListItem, ListStore, Outcome, commit_migration, messages_from_legacy
from chathist.models import INTERNAL_NAMES, Binding, event_model
from chathist.store import EventStore, SequenceTaken
from chathist.tables import check_event_schema, describe_key_schema, move_sessions
from chathist.writes import CLEAR, ITEM_LIMIT, Limits, Plan, item_overhead, plan_write

if TYPE_CHECKING:
    import boto3

__all__ = ["DynamoDBChatMessageHistory", "Layout", "validate_session_id"]

Layout = Literal["auto", "events", "list"]

_warned_tables: set[Binding] = set()
_warned_lock = threading.Lock()


def _warn_list_layout(binding: Binding, reason: str, stacklevel: int) -> None:
    """Warn (once per table and process) that ``layout="auto"`` chose the list layout."""
    with _warned_lock:
        if binding in _warned_tables:
            return
        _warned_tables.add(binding)
    name = binding.table_name
    warnings.warn(
        f"table {name!r}: {reason}, so chathist uses LangChain's list layout, one item per"
        " session, which cannot grow past DynamoDB's 400 KB item limit. To move its sessions to"
        f" the event layout: {move_sessions(name, f'{name}-events')}",
        UserWarning,
        stacklevel=stacklevel + 1,
    )


MAX_KEY_BYTES = 2048
"""DynamoDB's limit on a partition key value, in UTF-8 bytes."""
ABANDONED_AFTER = 3600
"""Seconds after which `clear` deletes a stage that was never committed."""
ERASED_TTL = 7 * 24 * 3600
"""Seconds after which an ``erased`` event may expire (where the table has TTL turned on)."""
READ_ATTEMPTS = 3
"""Reads of a session before an inconsistency (a clear or a migration meeting the read) is
reported rather than read again."""
TRUST_NEXT_SEQ = 300
"""Seconds a history trusts the next sequence number it remembers before reading it again."""


def validate_session_id(session_id: object) -> str:
    """Return ``session_id`` if it can be a partition key value, else raise."""
    if not isinstance(session_id, str):
        raise InvalidSessionIdError(f"session_id must be a str, got {type(session_id).__name__}")
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


def _message_list(messages: object) -> list[BaseMessage]:
    """``add_messages``' argument as a list; `UnsupportedValueError` if it is not a sequence
    (one message would otherwise be iterated as its fields, and a string as its characters)."""
    if isinstance(messages, BaseMessage):
        raise UnsupportedValueError(
            "add_messages takes a sequence of messages, got a single"
            f" {type(messages).__name__}; use add_message"
        )
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Iterable):
        raise UnsupportedValueError(
            f"add_messages takes a sequence of messages, got {type(messages).__name__}"
        )
    return list(messages)


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

    ``layout`` (keyword-only) picks the storage format:

    - ``"events"``: chathist's event layout, one item per event (no size limit).
    - ``"list"``: LangChain's list layout, one item per session holding the list of messages,
      read and written exactly as ``langchain_community`` does (see `chathist.legacy`), but with
      atomic appends, numbers read back as int/float, and `ItemTooLargeError` at 400 KB.
    - ``"auto"`` (default): the list layout when ``key`` is given or the table has only a hash
      key (then a warning, once per table and process, names the migration command); the event
      layout on a table with a sort key. Decided on first use (the key schema is looked up once
      per process); the constructor does no I/O.

    The positional arguments are those of ``langchain_community``'s
    ``DynamoDBChatMessageHistory``. In the list layout they mean what they mean there
    (``history_size`` keeps only the latest N messages in the item; ``coerce_float_to_decimal``
    must be True to store floats). In the event layout they mean:

    - ``table_name``: a table with a string hash key ``primary_key_name`` and a string range key
      ``sort_key_name`` (see `create_table`).
    - ``session_id``: the partition key value; every event of the session is stored under it.
    - ``endpoint_url``, ``boto3_session``: where and as whom to connect (``region_name`` too).
    - ``primary_key_name``: the name of the table's hash key (default ``SessionId``).
    - ``key``: addresses a single item, which the event layout does not use: refused with
      ``layout="events"``, selects the list layout otherwise.
    - ``kms_key_id``: client-side encryption is not supported yet: refused. Use encryption at
      rest with a customer managed key instead (``create_table(..., kms_key_id=...)``).
    - ``ttl``: every item written expires ``ttl`` seconds after it was written (attribute
      ``ttl_key_name``); expired items are never returned, even before DynamoDB deletes them.
      Tombstones of ``clear()`` never expire, so cleared messages cannot come back.
    - ``history_size``: ``messages`` returns only the latest N messages, reading about N items.
      All messages stay stored (``clear()`` removes them). None or 0 (in both layouts, as in
      LangChain's class): every message.
    - ``history_messages_key``: the attribute holding each event's (uncompressed) payload.
    - ``coerce_float_to_decimal``: accepted for compatibility; floats are always stored exactly,
      as JSON, and read back as floats, so there is nothing to coerce.

    Keyword-only options: ``sort_key_name``, ``region_name``, ``consistent_read`` (default True:
    a writer reads its own writes), ``compress_threshold`` (bytes; None never compresses),
    ``max_append_attempts`` and ``append_timeout`` (seconds): an append that has lost this many
    races for the next sequence number, or for this long, raises `ConcurrencyError` having
    written nothing visible; ``capacity_meter``: a `CapacityMeter` to add this history's
    consumed capacity to (share one between histories for application-wide totals).
    The names ``primary_key_name``, ``sort_key_name``, ``history_messages_key`` and
    ``ttl_key_name`` must differ from each other and from chathist's own attribute names
    (`chathist.models.INTERNAL_NAMES`: event, v, w, codec, blob, parts, msg, count, stage, at).

    Lazy migration from the list layout (event layout only): ``legacy_table_name`` (default: this
    table) and ``legacy_key`` (default ``{primary_key_name: session_id}``) locate the session's
    list-layout item, ``legacy_messages_key`` its list attribute (default
    ``history_messages_key``). Until the first write, ``messages`` are the legacy messages
    followed by the events (a clear among the events hides the legacy ones). The first
    ``add_messages``/``clear`` moves the legacy messages into events in the same transaction that
    removes the legacy item, or, with ``delete_legacy=False``, marks it migrated (chathist then
    ignores it; LangChain's class still reads it). Concurrent writers neither lose nor duplicate
    messages; see `chathist.legacy` for the design.
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
        max_append_attempts: int = 1000,
        append_timeout: float = 30.0,
        capacity_meter: CapacityMeter | None = None,
        layout: Layout = "auto",
        legacy_table_name: str | None = None,
        legacy_key: dict[str, Any] | None = None,
        legacy_messages_key: str | None = None,
        delete_legacy: bool = True,
    ) -> None:
        if not isinstance(table_name, str) or not table_name:
            raise ConfigurationError("table_name must be a non-empty str")
        self.session_id = validate_session_id(session_id)
        if layout not in ("auto", "events", "list"):
            raise ConfigurationError(f"layout must be 'auto', 'events' or 'list', got {layout!r}")
        if key is not None and layout == "events":
            raise ConfigurationError(
                "key addresses one item per session (LangChain's list layout); the event layout"
                " stores one item per event under session_id: drop key, or use layout='list'"
            )
        migrating = legacy_table_name is not None or legacy_key is not None
        if migrating and (layout == "list" or key is not None):
            raise ConfigurationError(
                "legacy_table_name/legacy_key migrate a list-layout session into the event"
                " layout; they do not apply to layout='list' or with key"
            )
        if kms_key_id is not None:
            raise ConfigurationError(
                "kms_key_id (client-side encryption) is not supported yet; encrypt the table at"
                " rest with a customer managed key: create_table(..., kms_key_id=...)"
            )
        if not history_messages_key:
            raise ConfigurationError("history_messages_key must be a non-empty str")
        names = {primary_key_name, sort_key_name, history_messages_key, ttl_key_name}
        if key is None and len(names) < 4:
            raise ConfigurationError(
                "primary_key_name, sort_key_name, history_messages_key and ttl_key_name must differ"
            )
        clashes = sorted(names & INTERNAL_NAMES)
        if key is None and layout != "list" and clashes:
            raise ConfigurationError(
                f"attribute name(s) {clashes} are used by chathist's event items; choose others"
            )
        if max_append_attempts < 1 or append_timeout <= 0:
            raise ConfigurationError("max_append_attempts and append_timeout must be positive")
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
        self.append_timeout = append_timeout
        self.meter = capacity_meter if capacity_meter is not None else CapacityMeter()
        self._binding = Binding(table_name, endpoint_url, region_name, boto3_session)
        model = event_model(
            self._binding, primary_key_name, sort_key_name, history_messages_key, ttl_key_name
        )
        self._store = EventStore(model, consistent_read=consistent_read, meter=self.meter)
        self._limits = Limits(item_overhead(self._store.attribute_names, self.session_id))
        self._next_seq: int | None = None
        self._next_seq_at = 0.0
        self._lock = threading.RLock()
        self._checked = False
        self._layout: Layout | None = "list" if key is not None or layout == "list" else None
        if layout == "events":
            self._layout = "events"
        self._list: ListStore | None = None
        if self._layout == "list":
            self._list = self._list_store(key or {primary_key_name: self.session_id})
        if key is not None and layout == "auto":
            _warn_list_layout(self._binding, "a key dict addresses one item", stacklevel=2)
        self._legacy: ListStore | None = None
        self._legacy_retired = False
        self.delete_legacy = delete_legacy
        if migrating:
            legacy_binding = Binding(
                legacy_table_name or table_name, endpoint_url, region_name, boto3_session
            )
            legacy_key = legacy_key or {primary_key_name: self.session_id}
            if legacy_binding == self._binding and legacy_key.get(primary_key_name) == session_id:
                raise ConfigurationError(
                    "legacy_key must not be in the session's own partition of the event table"
                )
            self._legacy = ListStore(
                legacy_binding,
                legacy_key,
                history_key=legacy_messages_key or history_messages_key,
                meter=self.meter,
            )

    # -- reading --------------------------------------------------------------------------------

    @property
    def messages(self) -> list[BaseMessage]:
        """The session's messages (the latest ``history_size`` of them), oldest first."""
        if self._list_layout():
            assert self._list is not None
            return self._list.messages()
        self._check_table()
        for attempt in range(READ_ATTEMPTS):
            final = attempt == READ_ATTEMPTS - 1
            legacy_expected = self._legacy is not None and not self._legacy_retired
            try:
                tail, found = self._read_tail()
            except CorruptHistoryError:
                if final:
                    raise
                continue  # a clear may have removed a stage this read was about to read
            if tail.erased_seen and not final:
                continue  # a clear ran during the read: its tombstone stops the next one
            result = self._after_legacy(tail, found)
            if legacy_expected and self._legacy_retired and not tail.done and not final:
                continue  # migrated between reading the events and the legacy item
            return result
        raise AssertionError("unreachable")

    @messages.setter
    def messages(self, value: list[BaseMessage]) -> None:
        raise NotImplementedError("assign no messages; use add_messages() or clear()")

    def _read_tail(self) -> tuple[TailFold, list[BaseMessage]]:
        """Fold the session's events, newest first, until the window or the latest clear;
        return the fold and its messages."""
        window = self.history_size
        tail = TailFold(limit=window, now=time.time())
        event: Event | None = None
        try:
            if not tail.done:
                page = None if window is None else window + 2
                for event in self._store.select_events(self.session_id, page_size=page):
                    staged: Iterator[Event] = iter(())
                    if event.kind == "commit" and event.stage is not None:
                        # lazy: no query unless the fold takes the stage
                        staged = self._store.select_staged(
                            self.session_id, event.stage, page_size=page
                        )
                    if tail.feed(event, staged):
                        break
            return tail, tail.messages
        except CorruptHistoryError as exc:
            if exc.key is not None or (event is None and exc.at is None):
                raise
            if exc.at is not None:
                stage, seq = exc.at
                event = Event(seq, "message", stage=stage)
            assert event is not None
            key = {self.primary_key_name: self.session_id, self.sort_key_name: sort_key(event)}
            raise CorruptHistoryError(f"session {self.session_id!r}: {exc}", key=key) from exc

    # -- writing --------------------------------------------------------------------------------

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Append ``messages`` atomically and contiguously: all or none, in this order."""
        messages = _message_list(messages)
        if self._list_layout():
            assert self._list is not None
            self._list.append(messages)
            return
        payloads = [encode_message(m, compress_threshold=self.compress_threshold) for m in messages]
        if payloads and self._migrate(payloads) is None:
            self._append(payloads)

    def clear(self) -> None:
        """Clear the session: a tombstone first (readers see nothing from then on), then
        delete every item below it in batches. If deletion is interrupted, readers still see an
        empty history, and the next ``clear()`` deletes what is left."""
        if self._list_layout():
            assert self._list is not None
            self._list.delete()
            return
        self._check_table()
        with self._lock:
            tombstone = self._migrate([CLEAR])
            if tombstone is None:
                if self._next_seq is None and self._store.last_seq(self.session_id) is None:
                    return
                tombstone = self._append([CLEAR])
        self._delete_below(tombstone)

    def repair(self, older_than: float | None = None) -> int:
        """Delete what interrupted writes left behind: the staged events of writes that never
        committed, staged more than ``older_than`` seconds ago (default and minimum:
        `ABANDONED_AFTER`; a writer re-stages anything older than half of it before its commit,
        so no younger stage can still be committed). Returns how many items it deleted.
        Readers never see such leftovers; this only frees their storage (``clear()`` does it
        too). Event layout only."""
        if self._list_layout():
            raise ConfigurationError("repair() applies to the event layout only")
        older_than = ABANDONED_AFTER if older_than is None else older_than
        if older_than < ABANDONED_AFTER:
            raise ConfigurationError(
                f"older_than must be at least {ABANDONED_AFTER} s: a younger stage may belong"
                " to a write still in progress"
            )
        self._check_table()
        committed = {
            stage
            for _, _, stage in self._store.select_kinds(self.session_id, None)
            if stage is not None
        }
        return self._delete_stages(committed, older_than)

    def _delete_below(self, tombstone: int) -> None:
        """Erase what the tombstone at ``tombstone`` hides: overwrite the events numbered below it
        with content-free ``erased`` events (their numbers must stay taken), and delete the
        stages of their commits and stages abandoned more than `ABANDONED_AFTER` ago."""
        committed: set[str] = set()

        def to_erase() -> Iterator[int]:
            for seq, kind, stage in self._store.select_kinds(self.session_id, tombstone):
                if stage is not None:
                    committed.add(stage)
                if kind != "erased":
                    yield seq

        expires_at = int(time.time()) + ERASED_TTL
        self._store.erase(self.session_id, to_erase(), expires_at=expires_at)
        self._delete_stages(committed, ABANDONED_AFTER, uncommitted_only=False)

    def _delete_stages(
        self, committed: set[str], older_than: float, *, uncommitted_only: bool = True
    ) -> int:
        """Delete staged items of uncommitted stages staged over ``older_than`` seconds ago,
        and (unless ``uncommitted_only``) those of the ``committed`` stages."""
        abandoned = time.time() - older_than
        staged = (
            key
            for key, stage, staged_at in self._store.select_stage_keys(self.session_id)
            if (stage in committed and not uncommitted_only)
            or (stage not in committed and (staged_at is None or staged_at < abandoned))
        )
        return self._store.delete_keys(self.session_id, staged)

    def _start_seq(self) -> int:
        """The next sequence number: remembered (for up to `TRUST_NEXT_SEQ` seconds), else
        read from the end of the sequence."""
        if self._next_seq is None or time.monotonic() - self._next_seq_at > TRUST_NEXT_SEQ:
            last = self._store.last_seq(self.session_id)
            self._remember(0 if last is None else last + 1)
        assert self._next_seq is not None
        return self._next_seq

    def _remember(self, next_seq: int | None) -> None:
        self._next_seq = next_seq
        self._next_seq_at = time.monotonic()

    def _attempts(self, what: str) -> Iterator[int]:
        """Attempt numbers, until `max_append_attempts` or `append_timeout` runs out; then
        `ConcurrencyError`."""
        deadline = time.monotonic() + self.append_timeout
        for attempt in range(self.max_append_attempts):
            if attempt and time.monotonic() > deadline:
                break
            yield attempt
        raise ConcurrencyError(
            f"session {self.session_id!r}: {what} (gave up after {attempt + 1} attempts,"
            f" {self.append_timeout:g} s budget); nothing was appended"
        )

    def _plan(self, entries: Sequence[Payload | object], limits: Limits) -> tuple[Plan, float]:
        """Plan a write and store its staged requests; return the plan and when it was made."""
        now = int(time.time())
        plan = plan_write(
            entries,  # type: ignore[arg-type]
            uuid.uuid4().hex,
            limits,
            expires_at=now + self.ttl if self.ttl else None,
            now=now,
        )
        for request in plan.staged:  # keyed by the write's id: no other writer competes
            self._store.insert_events(self.session_id, request)
        return plan, time.time()

    def _append(self, entries: Sequence[Payload | object]) -> int:
        """Write ``entries`` at the end of the session; return the sequence number of the last."""
        self._check_table()
        plan, planned = self._plan(entries, self._limits)
        with self._lock:
            for attempt in self._attempts("other writers kept taking the next sequence number"):
                if plan.staged and time.time() - planned > ABANDONED_AFTER / 2:
                    # A clear elsewhere may soon delete this stage as abandoned: stage anew.
                    plan, planned = self._plan(entries, self._limits)
                final = plan.at(self._start_seq())
                try:
                    self._store.insert_events(self.session_id, final)
                except SequenceTaken as lost:
                    # Taken numbers always form a prefix 0..n (each write goes right after a
                    # number known to be taken), so try right after the highest one seen.
                    # Every few losses, back off and read where the end really is.
                    if attempt % 4 == 3:
                        self._remember(None)
                        time.sleep(random.uniform(0, min(0.2, 0.004 * 2 ** (attempt // 4))))
                    else:
                        self._remember(max(lost.taken + 1, final[0].seq))
                    continue
                self._remember(final[-1].seq + 1)
                return final[-1].seq
        raise AssertionError("unreachable: _attempts raises when it runs out")

    # -- layouts --------------------------------------------------------------------------------

    def _list_store(self, key: dict[str, Any]) -> ListStore:
        return ListStore(
            self._binding,
            key,
            history_key=self.history_messages_key,
            ttl=self.ttl,
            ttl_key_name=self.ttl_key_name,
            history_size=self.history_size,
            coerce_float_to_decimal=self.coerce_float_to_decimal,
            meter=self.meter,
            max_attempts=self.max_append_attempts,
            consistent_read=self.consistent_read,
        )

    def _list_layout(self) -> bool:
        """Whether this history uses the list layout; with ``layout="auto"``, decided on first
        use from the table's (cached) key schema."""
        if self._layout is None:
            schema = describe_key_schema(self._binding)
            if schema.composite:
                self._layout = "events"
            else:
                if self._legacy is not None:
                    raise ConfigurationError(
                        f"table {self.table_name!r} has only a hash key ({schema}), so it is used"
                        " in the list layout; legacy_table_name/legacy_key need an event table"
                    )
                if schema.hash_key != self.primary_key_name:
                    raise TableSchemaError(
                        f"table {self.table_name!r} has key schema {schema}; pass"
                        f" primary_key_name={schema.hash_key!r}"
                    )
                _warn_list_layout(self._binding, "it has only a hash key", stacklevel=4)
                self._list = self._list_store({self.primary_key_name: self.session_id})
                self._layout = "list"
        return self._layout == "list"

    # -- lazy migration -------------------------------------------------------------------------

    def _pending_legacy(self, *, consistent: bool = True) -> ListItem | None:
        """The legacy item, unless there is none (or it was retired) any more."""
        if self._legacy is None or self._legacy_retired:
            return None
        item = self._legacy.read(consistent=consistent)
        if item.entries is None or item.migrated:
            # Only a strongly consistent read proves it gone (an eventual one may lag).
            self._legacy_retired = self._legacy_retired or consistent
            return None
        return item

    def _after_legacy(self, tail: TailFold, found: list[BaseMessage]) -> list[BaseMessage]:
        """The events' messages ``found``, after the legacy ones unless a clear or the window
        hides them."""
        if tail.done:
            return found
        item = self._pending_legacy(consistent=self.consistent_read)
        if item is None:
            return found
        assert item.entries is not None
        combined = [*messages_from_legacy(item.entries), *found]
        return combined[-self.history_size :] if self.history_size else combined

    def _events_cleared(self) -> bool:
        """Whether the session's events hold a clear (which hides the legacy messages)."""
        return any(e.kind == "clear" for e in self._store.select_events(self.session_id))

    def _migrate(self, entries: Sequence[Payload | object]) -> int | None:
        """Write ``entries`` together with the move of the legacy messages into events (or, for
        a clear, only the retirement of the legacy item); return the sequence number of the
        last entry, or None if there is no legacy item to migrate (then nothing was written)."""
        legacy = self._legacy
        if legacy is None or self._legacy_retired:
            return None
        self._check_table()
        clearing = any(entry is CLEAR for entry in entries)
        with self._lock:
            for attempt in self._attempts("the legacy item kept changing while it was migrated"):
                item = self._pending_legacy()
                if item is None:
                    return None
                assert item.entries is not None
                moved: list[Payload] = []
                if not clearing and not self._events_cleared():
                    moved = [
                        encode_message(m, compress_threshold=self.compress_threshold)
                        for m in messages_from_legacy(item.entries)
                    ]
                plan, planned = self._plan([*moved, *entries], self._migration_limits)
                now = int(planned)
                final = plan.at(self._start_seq())
                retire = legacy.retire_action(item, delete=self.delete_legacy, now=now)
                outcome = commit_migration(self._store, self.session_id, final, retire)
                if outcome is Outcome.DONE:
                    self._legacy_retired = True
                    self._remember(final[-1].seq + 1)
                    return final[-1].seq
                self._remember(None)  # the winner may have taken those numbers
                time.sleep(random.uniform(0, min(0.2, 0.004 * 2**attempt)))
        raise AssertionError("unreachable: _attempts raises when it runs out")

    @property
    def _migration_limits(self) -> Limits:
        """Limits that leave room in the final transaction for the legacy item's action."""
        return replace(
            self._limits,
            transaction_items=self._limits.transaction_items - 1,
            transaction_bytes=self._limits.transaction_bytes - ITEM_LIMIT,
        )

    # -- the rest -------------------------------------------------------------------------------

    @property
    def consumed_capacity(self) -> Capacity:
        """Running totals of read units, write units and requests this history has used (with a
        shared ``capacity_meter``: every history that shares it)."""
        return self.meter.total

    def reset_consumed_capacity(self) -> Capacity:
        """Zero the running totals; return what they were (atomically)."""
        return self.meter.reset()

    def _check_table(self) -> None:
        if not self._checked:
            schema = describe_key_schema(self._binding)
            check_event_schema(schema, self.table_name, self.primary_key_name, self.sort_key_name)
            self._checked = True

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(table_name={self.table_name!r}, session_id={self.session_id!r})"
