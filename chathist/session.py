"""One storage protocol for a session, and the choice of its implementation.

A `SessionLog` reads, appends, clears and repairs one session, as steps. Three implement it:
`chathist.event_log.EventLog` (the event layout), `chathist.list_log.ListLog` (LangChain's list
layout) and `chathist.lazy_migration.LazyMigration` (an event log taking over a list item).
`open_session` picks one from the options and, with ``layout="auto"``, the table's key schema
(looked up once per process).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from langchain_core.messages import BaseMessage

from chathist.core.steps import Steps
from chathist.dynamo.binding import Binding
from chathist.dynamo.client import kms_scope
from chathist.dynamo.encryption import Encryption, Keyring, KmsKeyring, LocalKeyring
from chathist.dynamo.event_store import EventStore
from chathist.dynamo.items import EventItems, event_items
from chathist.dynamo.tables import (
    KeySchema,
    check_event_schema,
    check_item_key,
    key_schema,
    known_key_schema,
    learn_key_schema,
    move_sessions,
)
from chathist.errors import (
    ConfigurationError,
    OutcomeUnknownError,
    StorageError,
    TableSchemaError,
)
from chathist.event_log import EventLog, LogSettings
from chathist.options import HistoryOptions, list_layout_encryption_error

if TYPE_CHECKING:  # the list layout's modules load boto3's type (de)serializer: only when used
    from chathist.dynamo.list_store import ListStore
    from chathist.lazy_migration import LazyMigration
    from chathist.list_log import ListLog

__all__ = ["SessionLog", "encryption_of", "list_layout_warning", "open_session"]


class SessionLog(Protocol):
    """What a history asks of its storage."""

    def read(self) -> Steps[list[BaseMessage]]:
        """The session's messages (the latest ``history_size``), oldest first."""
        ...

    def append(self, messages: Sequence[BaseMessage]) -> Steps[None]:
        """Append ``messages`` atomically and contiguously."""
        ...

    def clear(self) -> Steps[None]:
        """Remove every message of the session."""
        ...

    def repair(self, older_than: float | None = None) -> Steps[int]:
        """Delete what interrupted writes left behind; return how many items."""
        ...

    def settle(self, error: OutcomeUnknownError) -> Steps[bool]:
        """Whether the write of ``error`` is stored, storing it if it can still be."""
        ...


_warned: set[Binding] = set()
_warned_lock = threading.Lock()


def list_layout_warning(binding: Binding, reason: str) -> str | None:
    """The warning that ``layout="auto"`` chose the list layout for ``binding``'s table, the
    first time in this process; None after that."""
    with _warned_lock:
        if binding in _warned:
            return None
        _warned.add(binding)
    name = binding.table_name
    return (
        f"table {name!r}: {reason}, so chathist uses LangChain's list layout, one item per"
        " session, which cannot grow past DynamoDB's 400 KB item limit. To move its sessions to"
        f" the event layout: {move_sessions(name, f'{name}-events')}"
    )


def open_session(options: HistoryOptions) -> Steps[tuple[SessionLog, str | None]]:
    """The session's storage for ``options``, and a warning to show (or None). The table's key
    schema (looked up once per process) decides ``layout="auto"`` and is checked against the
    layout, so a mismatch is a `TableSchemaError` saying what to do, before any other request."""
    binding = options.binding
    if known_key_schema(binding) is None and options.key is None and options.layout != "list":
        probed = yield from _probe_event_layout(options)
        if probed is not None:
            return probed, None
    schema = yield from key_schema(binding)
    warning = None
    auto_list = options.key is None and options.layout == "auto" and not schema.composite
    if auto_list and options.migrating:
        raise ConfigurationError(
            f"table {binding.table_name!r} has only a hash key ({schema}), so it is used in"
            " the list layout; legacy_table_name/legacy_key need an event table"
        )
    if auto_list and options.encrypting:
        raise list_layout_encryption_error(binding.table_name)
    if options.key is not None or options.layout == "list" or auto_list:
        log = _list_log(options, options.key or {options.primary_key_name: options.session_id})
        check_item_key(schema, binding.table_name, _key_types(log.store))
        if auto_list:  # usable as it is: say how to move it
            warning = list_layout_warning(binding, "it has only a hash key")
        return log, warning
    check_event_schema(schema, binding.table_name, options.primary_key_name, options.sort_key_name)
    event_log = _event_log(options)
    if not isinstance(event_log, EventLog) and options.legacy_binding is not None:
        legacy_schema = yield from key_schema(options.legacy_binding)
        check_item_key(
            legacy_schema, options.legacy_binding.table_name, _key_types(event_log.legacy)
        )
    return event_log, None


def _probe_event_layout(options: HistoryOptions) -> Steps[EventLog | None]:
    """The event log of a table whose key schema this process does not know yet, learned
    without DescribeTable (~20 ms, where a query takes ~1): the query for the session's newest
    event names the hash and range keys as strings, so DynamoDB answers it only on a table of
    the event layout's key schema, and refuses it (ValidationException) on any other. Its
    answer also tells the next sequence number, so a first append needs no query of its own.
    None when the table refused it (then DescribeTable says what the table is) or the history
    is a lazy migration (which checks the legacy table's schema too)."""
    if options.migrating:
        return None
    log = _event_log(options)
    assert isinstance(log, EventLog)
    try:
        newest = yield from log.store.newest(options.session_id)
    except TableSchemaError:
        return None
    except StorageError as exc:
        if exc.code == "ValidationException":
            return None
        raise
    learn_key_schema(
        options.binding,
        KeySchema(options.primary_key_name, "S", options.sort_key_name, "S"),
    )
    log.remember(0 if newest is None else newest[0] + 1)
    return log


def _key_types(store: ListStore) -> dict[str, str]:
    """The DynamoDB type of each attribute of a list item's key (``{"SessionId": "S"}``)."""
    return {name: next(iter(value)) for name, value in store.raw_key.items()}


def _list_log(options: HistoryOptions, key: Mapping[str, object]) -> ListLog:
    from chathist.dynamo.list_store import ListStore
    from chathist.list_log import ListLog

    store = ListStore(
        options.binding.table_name,
        key,
        history_key=options.history_messages_key,
        ttl=options.ttl,
        ttl_key_name=options.ttl_key_name,
        consistent_read=options.consistent_read,
    )
    return ListLog(
        store,
        window=options.history_size,
        coerce_float_to_decimal=options.coerce_float_to_decimal,
        append_rule=options.append_rule,
    )


def encryption_of(options: HistoryOptions, items: EventItems) -> Encryption:
    """The client-side encryption of a history's event items: sealing under its KMS key or
    local key, if it has one; opening sealed items always."""
    keyring: Keyring | None = None
    if options.kms_key_id is not None:
        keyring = KmsKeyring(options.kms_key_id)
    elif options.local_key is not None:
        keyring = LocalKeyring(options.local_key)
    return Encryption(items, keyring, partition=kms_scope(options.binding))


def _event_log(options: HistoryOptions) -> EventLog | LazyMigration:
    items = event_items(
        options.binding.table_name,
        options.primary_key_name,
        options.sort_key_name,
        options.history_messages_key,
        options.ttl_key_name,
    )
    settings = LogSettings(
        window=options.history_size,
        ttl=options.ttl,
        compress_threshold=options.compress_threshold,
        append_rule=options.append_rule,
    )
    store = EventStore(
        items, consistent_read=options.consistent_read, encryption=encryption_of(options, items)
    )
    log = EventLog(store, options.session_id, settings)
    if options.legacy_binding is None or options.legacy_key is None:
        return log
    from chathist.dynamo.list_store import ListStore
    from chathist.lazy_migration import LazyMigration

    legacy = ListStore(
        options.legacy_binding.table_name,
        options.legacy_key,
        history_key=options.legacy_messages_key,
        ttl_key_name=options.ttl_key_name,
        consistent_read=options.consistent_read,
    )
    return LazyMigration(log, legacy, delete_legacy=options.delete_legacy)
