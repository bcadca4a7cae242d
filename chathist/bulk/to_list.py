"""Event layout -> list layout: `rollback_events_to_list` and its per-thread worker.

Every event-layout session that fits one item is written back as LangChain's list item, on
the list store (`chathist.dynamo.list_store`): the target's item is read first, and written only
if it is still the item read (none, or one that holds other messages when ``overwrite`` is
given). Larger sessions are reported and left as events, never truncated.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from typing import Any

from langchain_core.messages import BaseMessage

from chathist.bulk.compare import compare_messages, read_session
from chathist.bulk.config import MigrationConfig
from chathist.bulk.report import Counts, Problem, ProgressCallback, Report
from chathist.bulk.schemas import CHECK_SOURCE, estimated_items, event_key_names, key_schema
from chathist.bulk.segments import Run, Worker
from chathist.core.events import sort_key
from chathist.core.fold import fold
from chathist.core.listformat import messages_from_legacy, messages_to_legacy
from chathist.core.plan import event_size
from chathist.core.sizes import ITEM_LIMIT, item_size, write_units
from chathist.dynamo.binding import Binding
from chathist.dynamo.event_store import EventStore
from chathist.dynamo.items import event_items
from chathist.dynamo.list_store import ListItem, ListStore
from chathist.dynamo.tables import KeySchema
from chathist.errors import (
    ChatHistoryError,
    ConfigurationError,
    ItemTooLargeError,
    TableSchemaError,
)

__all__ = ["rollback_events_to_list"]


class _RollbackWorker(Worker):
    """The per-thread worker of `rollback_events_to_list`."""

    def __init__(
        self,
        run: Run,
        source: Binding,
        target: Binding,
        store: EventStore,
        target_key: KeySchema,
        seen: set[str],
        seen_lock: threading.Lock,
    ) -> None:
        super().__init__(run, source, target, store)
        self.target_key = target_key
        self.seen = seen
        self.seen_lock = seen_lock

    def segment(self, segment: int) -> None:
        params = {
            "TableName": self.config.source,
            "FilterExpression": "attribute_exists(#ev)",
            "ProjectionExpression": "#h",
            "ExpressionAttributeNames": {
                "#h": self.store.hash_name,
                "#ev": self.store.items.names["kind"],
            },
        }
        for raw in self.run.scan(self.source, params, segment):
            session = raw[self.store.hash_name]["S"]
            with self.seen_lock:
                if session in self.seen:
                    continue
                self.seen.add(session)
            self.handle(session, partial(self._rollback, session))
            self.run.progress()

    def _legacy(self, session: str) -> ListStore:
        """The list store of the session's item in the target."""
        key: dict[str, Any] = {self.target_key.hash_key: session}
        if self.target_key.range_key:
            key[self.target_key.range_key] = self.config.legacy_sort_value
        return ListStore(
            self.config.target,
            key,
            history_key=self.config.history_key,
            ttl_key_name=self.config.ttl_key_name,
        )

    def _rollback(self, session: str) -> None:
        config, report = self.config, self.report
        events, stages = self.source.run(read_session(self.store, session))
        messages = fold(events, stages=stages, now=time.time())
        if not messages:
            expired = bool(events) and bool(fold(events, stages=stages))
            report.add(Counts(expired=1) if expired else Counts(empty=1))
            return
        stored = [*events, *(e for stage in stages.values() for e in stage)]
        expiries = [e.expires_at for e in stored if e.kind == "message"]
        expires_at = None if None in expiries or not expiries else max(e for e in expiries if e)
        legacy = self._legacy(session)
        entries = messages_to_legacy(messages, coerce_float_to_decimal=True)
        item = legacy.to_item(entries, expires_at=expires_at)
        size = item_size(item)
        report.add(Counts(source_bytes=sum(event_size(e, 0) for e in stored)))
        if size > ITEM_LIMIT:
            report.problem(
                Problem.TOO_LARGE,
                session,
                f"{len(messages)} messages need about {size:,} bytes in one item (limit"
                f" {ITEM_LIMIT:,}); left in the event layout",
            )
            return
        current = self.target.run(legacy.read())
        difference = self._difference(messages, current) if current.exists else None
        if difference is not None and not config.overwrite:
            report.problem(
                Problem.CONFLICT,
                session,
                f"the target's list item differs ({difference}); --overwrite replaces it",
            )
            return
        written = Counts(migrated=1, messages=len(messages), items_written=1, payload_bytes=size)
        if current.exists and difference is None:
            report.add(Counts(already=1))
        elif config.dry_run:
            report.add(replace(written, estimated_wcu=write_units(size)))
            if difference is not None:
                report.problem(
                    Problem.OVERWRITTEN,
                    session,
                    f"would replace the list item, which differs ({difference})",
                )
            return
        else:
            if not self._put(session, legacy, item, size, current):
                return
            report.add(written)
            if difference is not None:
                report.problem(
                    Problem.OVERWRITTEN,
                    session,
                    f"replaced the list item, which differed ({difference})",
                )
        if config.verify or config.delete_source:
            found = self._difference(messages, self.target.run(legacy.read()))
            if found is not None:
                report.problem(Problem.DIFFERENCE, session, f"the list item differs: {found}")
                return
            report.add(Counts(verified=1))
        if config.delete_source and not config.dry_run:
            keys = [sort_key(e) for e in stored]
            self.run.write(self.source, float(len(keys)), self.store.delete_keys(session, keys))
            report.add(Counts(deleted_sources=1))

    def _difference(self, messages: Sequence[BaseMessage], current: ListItem) -> str | None:
        """None if the list item ``current`` holds exactly ``messages``, else how it differs
        (a missing item differs too)."""
        if not current.exists:
            return "no list item"
        if current.entries is None:
            return f"no {self.config.history_key} list"
        try:
            found = messages_from_legacy(current.entries)
        except (ChatHistoryError, ValueError, TypeError, KeyError) as exc:
            return f"unreadable: {exc}"
        return compare_messages(messages, found)

    def _put(
        self, session: str, legacy: ListStore, item: dict[str, Any], size: int, current: ListItem
    ) -> bool:
        """Write ``item`` (``size`` bytes) if the target still holds ``current``; False (and
        reported) if not."""
        estimate = float(write_units(size))
        try:
            written = self.run.write(self.target, estimate, legacy.put(item, current))
        except ItemTooLargeError as exc:
            self.report.problem(Problem.TOO_LARGE, session, f"DynamoDB refused the item: {exc}")
            return False
        if not written:
            self.report.problem(
                Problem.CONFLICT,
                session,
                "the target's list item changed while the rollback ran; left alone (run again"
                " to retry)",
            )
            return False
        self.report.add(Counts(estimated_wcu=estimate))
        return True


def rollback_events_to_list(
    config: MigrationConfig, *, on_progress: ProgressCallback | None = None
) -> Report:
    """Write every event-layout session of ``config.source`` that fits one item back as a
    LangChain list item in ``config.target``; larger sessions are reported, never truncated."""
    report = Report("events-to-list", config.source, config.target, config.dry_run, config.verify)
    source, target = config.binding(config.source), config.binding(config.target)
    hash_name, range_name = event_key_names(source, CHECK_SOURCE, config.sort_key_name)
    key_name = config.primary_key_name or "SessionId"
    option = "" if key_name == "SessionId" else f" --primary-key-name {key_name}"
    target_key = key_schema(
        target,
        "a rollback writes LangChain's list layout, into a table with a string hash key only:"
        f" create it with `chathist create-table {config.target} --layout list{option}`",
    )
    if config.primary_key_name and config.primary_key_name != target_key.hash_key:
        raise TableSchemaError(
            f"table {config.target!r} has key schema {target_key}; --primary-key-name"
            f" {config.primary_key_name!r} is not its hash key"
        )
    if target_key.range_key and config.legacy_sort_value is None:
        raise ConfigurationError(
            f"table {config.target!r} has a range key {target_key.range_key!r}: give the range"
            " key value of the list items (--legacy-sort-value, e.g. langchain_history)"
        )
    if target_key.hash_type != "S" or (target_key.range_key and target_key.range_type != "S"):
        raise TableSchemaError(f"table {config.target!r} needs string keys, has {target_key}")
    run = Run(config, report, on_progress)
    items = event_items(
        config.source, hash_name, range_name, config.history_key, config.ttl_key_name
    )
    store = EventStore(items, consistent_read=True)
    seen: set[str] = set()
    lock = threading.Lock()
    workers = [
        _RollbackWorker(run, source, target, store, target_key, seen, lock)
        for _ in range(config.segments)
    ]
    report.estimated_items = estimated_items(workers[0].source)
    run.run_segments(lambda segment: workers[segment].segment(segment))
    return report
