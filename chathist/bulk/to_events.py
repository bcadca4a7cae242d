"""List layout -> event layout: `migrate_list_to_events` and its per-thread worker.

A session's events are planned deterministically (`plan_session`: from sequence 0, the source
item's TTL on every event) and written with conditional puts under a writer id that is a
fingerprint of the planned content. Re-running after a kill finds our own events (same
fingerprint) and finishes or skips them. A session migrated by an earlier run whose legacy list
grew since (LangChain's class still writing) is caught up: the new tail is appended under an id
of its legacy position (`_Migrator._catch_up`). Anything else in the partition is a conflict
that is reported and never overwritten or duplicated. Source items are recognised by the type of the
history attribute (a list) and the absence of the event attribute, so the target may be the
source table itself when it has a composite key.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Final

from boto3.dynamodb.types import TypeDeserializer
from langchain_core.messages import BaseMessage

from chathist.bulk.compare import (
    SessionState,
    Stored,
    compare_messages,
    held_by_others,
    migrated_part,
    probe_state,
    read_session,
    state_of,
)
from chathist.bulk.config import MigrationConfig
from chathist.bulk.report import Counts, Problem, ProgressCallback, Report
from chathist.bulk.schemas import CHECK_SOURCE, estimated_items, event_key_names, key_schema
from chathist.bulk.segments import Run, Worker
from chathist.core.codec import Payload, encode_message
from chathist.core.events import Event
from chathist.core.fold import fold
from chathist.core.listformat import messages_from_legacy
from chathist.core.plan import Limits, event_size, item_overhead, plan_write
from chathist.core.sizes import item_size, write_units
from chathist.dynamo.binding import Binding
from chathist.dynamo.client import kms_scope
from chathist.dynamo.encryption import Encryption, KmsKeyring
from chathist.dynamo.event_store import EventStore, SequenceTaken
from chathist.dynamo.items import event_items
from chathist.dynamo.list_store import ListItem, ListStore
from chathist.dynamo.tables import KeySchema
from chathist.errors import (
    ChatHistoryError,
    ConfigurationError,
    CorruptHistoryError,
    TableSchemaError,
)
from chathist.options import validate_session_id

__all__ = ["WRITER_PREFIX", "SessionPlan", "fingerprint", "migrate_list_to_events", "plan_session"]

WRITER_PREFIX: Final = "mig1."
"""The start of the writer id of every event a bulk migration writes."""

_deserializer = TypeDeserializer()


def fingerprint(
    session: str,
    payloads: Sequence[Payload],
    expires_at: int | None,
    *,
    blind: bool = False,
    start: int = 0,
) -> str:
    """The writer id of a session's migration: a digest of what it writes (31 characters).
    ``blind`` (an encrypting run): of the payloads' codecs and sizes only, which the stored
    items show anyway, since a digest of the content stored in clear would let anyone who
    guesses a message confirm it. ``start``: the legacy position of the first message (a
    catch-up's new tail), so each tail has its own id and a re-run finds its own write."""
    digest = hashlib.blake2b(digest_size=13)
    digest.update(f"{len(session)}:{session}|{expires_at}|{'blind' if blind else ''}".encode())
    if start:  # 0 leaves the ids of migrations written before catch-up existed unchanged
        digest.update(f"@{start}".encode())
    for payload in payloads:
        digest.update(f"{payload.codec}:{len(payload.data)}:".encode())
        if not blind:
            digest.update(payload.data)
    return WRITER_PREFIX + digest.hexdigest()


@dataclass(frozen=True)
class SessionPlan:
    """The deterministic requests that store one legacy session as events from sequence 0."""

    writer: str
    requests: list[list[Event]]
    """Staged requests (if any), then the final request numbered from 0."""
    payload_bytes: int
    overhead: int

    @property
    def last_seq(self) -> int:
        return self.requests[-1][-1].seq

    @property
    def items(self) -> int:
        return sum(len(r) for r in self.requests)

    def written(self, messages: int) -> Counts:
        """What storing this plan of ``messages`` messages adds to a report."""
        return Counts(messages=messages, items_written=self.items, payload_bytes=self.payload_bytes)

    def estimate(self, request: Sequence[Event]) -> float:
        """Write units of one request (a transaction costs twice)."""
        units = sum(write_units(event_size(e, self.overhead)) for e in request)
        return float(units if len(request) == 1 else 2 * units)


def plan_session(
    session: str,
    messages: Sequence[BaseMessage],
    expires_at: int | None,
    attribute_names: Sequence[str],
    sealing_overhead: int = 0,
    *,
    start: int = 0,
    at: int = 0,
    below_expires: bool = False,
) -> SessionPlan:
    """Plan ``messages`` as the events 0, 1, ... of ``session`` (large sessions staged first),
    under a writer id that fingerprints the content, so the plan is the same on every run.
    ``sealing_overhead``: the bytes client-side encryption adds to an item. A catch-up plans
    the legacy messages from position ``start`` as the events from sequence number ``at``
    (``below_expires``: the event below ``at`` carries an expiry, see `Plan.at`)."""
    payloads = [encode_message(m) for m in messages]
    limits = Limits(item_overhead(attribute_names, session) + sealing_overhead)
    writer = fingerprint(session, payloads, expires_at, blind=sealing_overhead > 0, start=start)
    plan = plan_write(payloads, writer, limits, expires_at=expires_at, now=int(time.time()))
    final = plan.at(at, below_expires=below_expires)
    return SessionPlan(
        writer, [*plan.staged, final], sum(len(p.data) for p in payloads), limits.overhead
    )


def _expiry(value: Any) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError, ArithmeticError):
        return None


def _describe_key(raw: dict[str, Any], schema: KeySchema) -> str:
    names = [schema.hash_key] + ([schema.range_key] if schema.range_key else [])
    values = []
    for name in names:
        value = raw.get(name, {})
        values.append(str(next(iter(value.values()), "?")) if value else "?")
    return "/".join(values)


class _Migrator(Worker):
    """The per-thread worker of `migrate_list_to_events`."""

    def __init__(
        self, run: Run, source: Binding, target: Binding, source_key: KeySchema, store: EventStore
    ) -> None:
        super().__init__(run, source, target, store)
        self.source_key = source_key
        self.session_key = self.config.primary_key_name or source_key.hash_key

    def scan_params(self) -> dict[str, Any]:
        return {
            "TableName": self.config.source,
            "FilterExpression": "attribute_type(#hist, :list) AND attribute_not_exists(#ev)",
            "ExpressionAttributeNames": {
                "#hist": self.config.history_key,
                "#ev": self.store.items.names["kind"],  # every event item has it
            },
            "ExpressionAttributeValues": {":list": {"S": "L"}},
        }

    def segment(self, segment: int) -> None:
        for raw in self.run.scan(self.source, self.scan_params(), segment):
            self.handle(self._name(raw), partial(self._migrate, raw))
            self.run.progress()

    def _session_id(self, raw: dict[str, Any]) -> str:
        """The session id of the source item ``raw`` (`InvalidSessionIdError` if unusable)."""
        stored = raw.get(self.session_key)
        return validate_session_id(None if stored is None else _deserializer.deserialize(stored))

    def _name(self, raw: dict[str, Any]) -> str:
        """The session's name in the report: its id, or its item's key if it has no usable id."""
        try:
            return self._session_id(raw)
        except (ChatHistoryError, ValueError, TypeError):
            return _describe_key(raw, self.source_key)

    def _legacy(self, raw: dict[str, Any]) -> ListStore:
        """The list store of the source item ``raw``."""
        names = [self.source_key.hash_key]
        if self.source_key.range_key:
            names.append(self.source_key.range_key)
        key = {name: _deserializer.deserialize(raw[name]) for name in names}
        return ListStore(self.config.source, key, history_key=self.config.history_key)

    def _migrate(self, raw: dict[str, Any]) -> None:
        config, report = self.config, self.report
        session = self._session_id(raw)
        legacy = self._legacy(raw)
        item = legacy.parse(raw)
        ttl = raw.get(config.ttl_key_name)
        expires_at = _expiry(None if ttl is None else _deserializer.deserialize(ttl))
        report.add(Counts(source_bytes=item_size(raw)))
        if expires_at is not None and expires_at <= time.time():
            report.add(Counts(expired=1))
            return
        messages = messages_from_legacy(item.entries or [])
        if not messages:
            report.add(Counts(empty=1))
            return
        plan = self._plan(session, messages, expires_at)
        checking = config.verify or config.delete_source
        stored: Stored | None = None
        if checking:
            try:  # one read serves both the state and the check of a finished session
                stored = self.target.run(read_session(self.store, session))
            except CorruptHistoryError as exc:
                report.problem(Problem.DIFFERENCE, session, f"unreadable: {exc}")
                return
            state = state_of(stored[0], plan.last_seq, plan.writer)
        else:
            state = self.target.run(probe_state(self.store, session, plan.last_seq, plan.writer))
        if state is SessionState.CONFLICT:
            self._catch_up(session, raw, legacy, item, messages, expires_at, stored)
            return
        written = replace(plan.written(len(messages)), migrated=1)
        if state is SessionState.DONE:
            report.add(Counts(already=1))
        elif config.dry_run:
            report.add(replace(written, estimated_wcu=sum(map(plan.estimate, plan.requests))))
            return  # nothing stored to verify or delete
        else:
            if not self._write(session, plan):
                return
            report.add(written)
            stored = None  # read back what was written
        check = partial(self._verify, session, messages, expires_at, plan, stored)
        self._finish(session, raw, legacy, item, check if checking else None)

    def _finish(
        self,
        session: str,
        raw: dict[str, Any],
        legacy: ListStore,
        item: ListItem,
        check: Callable[[], str | None] | None,
    ) -> None:
        """Run the session's ``check`` (None: not checking), then delete its source item if
        asked, unless the check found a difference."""
        if check is not None:
            difference = check()
            if difference is not None:
                self.report.problem(Problem.DIFFERENCE, session, difference)
                return
            self.report.add(Counts(verified=1))
        if self.config.delete_source and not self.config.dry_run:
            self._delete_source(session, raw, legacy, item)

    def _plan(
        self,
        session: str,
        messages: Sequence[BaseMessage],
        expires_at: int | None,
        **where: Any,
    ) -> SessionPlan:
        """`plan_session` with this run's item names and sealing (``where``: a catch-up's
        ``start``, ``at`` and ``below_expires``)."""
        return plan_session(
            session,
            messages,
            expires_at,
            self.store.items.attribute_names,
            self.store.encryption.overhead,
            **where,
        )

    def _write(self, session: str, plan: SessionPlan) -> bool:
        """Store ``plan``'s requests in order; False (reported as a conflict) if another writer
        took a sequence number first: nothing of the final request is stored then."""
        try:
            for request in plan.requests:
                estimate = plan.estimate(request)
                self.run.write(self.target, estimate, self.store.insert_events(session, request))
                self.report.add(Counts(estimated_wcu=estimate))
        except SequenceTaken as exc:
            self.report.problem(
                Problem.CONFLICT,
                session,
                f"another writer took a sequence number: {exc}; run again to retry",
            )
            return False
        return True

    def _catch_up(
        self,
        session: str,
        raw: dict[str, Any],
        legacy: ListStore,
        item: ListItem,
        messages: Sequence[BaseMessage],
        expires_at: int | None,
        stored: Stored | None,
    ) -> None:
        """A partition holding other events than this run's plan. Migrated by an earlier run
        (events of `WRITER_PREFIX` writers) whose legacy list grew since: move the new tail,
        once, under an id of its legacy position. Cleared since: move nothing (the clear's
        erasing removed the record of what was migrated, and the legacy messages it covered
        must not come back). Never migrated by a bulk run: the messages may already be there
        (lazy migration, the application), else a conflict."""
        config, report = self.config, self.report
        checking = config.verify or config.delete_source
        try:
            if stored is None:
                stored = self.target.run(read_session(self.store, session))
            part = migrated_part(stored, WRITER_PREFIX)
        except CorruptHistoryError as exc:
            report.problem(Problem.DIFFERENCE, session, f"unreadable: {exc}")
            return
        if part.cleared:
            report.problem(
                Problem.CLEARED,
                session,
                f"cleared in {config.target!r}; its {len(messages)} legacy messages are not moved",
            )
            return
        if not part.events:
            if not self._holds_source(session, messages, stored):
                report.problem(
                    Problem.CONFLICT, session, "the target partition already holds other events"
                )
                return
            # Another writer (lazy migration, or the application) already stored these messages.
            report.add(Counts(already=1, verified=int(checking)))
            if config.delete_source and not config.dry_run:
                self._delete_source(session, raw, legacy, item)
            return
        done = len(part.messages)
        difference = compare_messages(part.messages, messages[:done])
        if difference is not None:
            report.problem(
                Problem.DIVERGED,
                session,
                f"the legacy list no longer starts with the {done} migrated messages"
                f" ({difference}); left alone",
            )
            return
        tail = messages[done:]
        try:
            held = held_by_others(stored, WRITER_PREFIX, tail)
        except CorruptHistoryError as exc:
            report.problem(Problem.DIFFERENCE, session, f"unreadable: {exc}")
            return
        if held is not None:
            report.problem(
                Problem.CONFLICT,
                session,
                f"new legacy message {done + held} is already stored by another writer (was the"
                " session rolled back to this item?); left alone",
            )
            return
        if tail:
            newest = stored[0][-1]
            plan = self._plan(
                session,
                tail,
                expires_at,
                start=done,
                at=newest.seq + 1,
                below_expires=newest.expires_at is not None,
            )
            moved = plan.written(len(tail))
            if config.dry_run:
                report.add(replace(moved, estimated_wcu=sum(map(plan.estimate, plan.requests))))
                report.problem(Problem.CAUGHT_UP, session, f"would move {len(tail)} new messages")
                return
            if not self._write(session, plan):
                return
            report.add(moved)
            report.problem(
                Problem.CAUGHT_UP,
                session,
                f"moved {len(tail)} new messages after the {done} migrated before",
            )
        else:
            report.add(Counts(already=1))
        check = partial(self._verify_catch_up, session, messages, expires_at)
        self._finish(session, raw, legacy, item, check if checking else None)

    def _verify_catch_up(
        self, session: str, messages: Sequence[BaseMessage], expires_at: int | None
    ) -> str | None:
        """None if the migration's writes, read back, hold the source's messages and those it
        wrote last carry the source's expiry (LangChain's class moves a session's expiry with
        each write; each event keeps the one it was migrated with), else why not."""
        try:
            part = migrated_part(self.target.run(read_session(self.store, session)), WRITER_PREFIX)
        except CorruptHistoryError as exc:
            return f"unreadable: {exc}"
        difference = compare_messages(messages, part.messages)
        if difference is not None:
            return difference
        last = part.events[-1].writer
        for event in part.events:
            if event.writer == last and event.expires_at != expires_at:
                return f"event {event.seq} expires at {event.expires_at}, source at {expires_at}"
        return None

    def _holds_source(
        self, session: str, messages: Sequence[BaseMessage], stored: Stored | None
    ) -> bool:
        """True if the partition's history starts with exactly the source's messages."""
        try:
            if stored is None:
                stored = self.target.run(read_session(self.store, session))
            events, stages = stored
            found = fold(events, stages=stages)
        except CorruptHistoryError:
            return False
        return compare_messages(messages, found[: len(messages)]) is None

    def _verify(
        self,
        session: str,
        messages: Sequence[BaseMessage],
        expires_at: int | None,
        plan: SessionPlan,
        stored: Stored | None,
    ) -> str | None:
        """None if the session's events up to the plan's last equal the source, else why not."""
        try:
            if stored is None:
                events, stages = self.target.run(read_session(self.store, session, plan.last_seq))
            else:
                events = [e for e in stored[0] if e.seq <= plan.last_seq]
                stages = {e.stage: stored[1][e.stage] for e in events if e.stage in stored[1]}
            found = fold(events, stages=stages)
        except CorruptHistoryError as exc:
            return f"unreadable: {exc}"
        difference = compare_messages(messages, found)
        if difference is not None:
            return difference
        for event in [*events, *(e for staged in stages.values() for e in staged)]:
            if event.expires_at != expires_at:
                return f"event {event.seq} expires at {event.expires_at}, source at {expires_at}"
        return None

    def _delete_source(
        self, session: str, raw: dict[str, Any], legacy: ListStore, item: ListItem
    ) -> None:
        """Delete the source item, if it is still the one read."""
        estimate = float(write_units(item_size(raw)))
        if not self.run.write(self.source, estimate, legacy.delete_unchanged(item)):
            self.report.problem(
                Problem.CONFLICT, session, "source item changed after it was read; not deleted"
            )
            return
        self.report.add(Counts(deleted_sources=1))


def migrate_list_to_events(
    config: MigrationConfig, *, on_progress: ProgressCallback | None = None
) -> Report:
    """Move every list-layout session of ``config.source`` into events in ``config.target``."""
    if config.overwrite:
        raise ConfigurationError("overwrite= applies to a rollback; a migration never overwrites")
    report = Report("list-to-events", config.source, config.target, config.dry_run, config.verify)
    names = ""
    if config.primary_key_name:
        names += f" --primary-key-name {config.primary_key_name}"
    if config.sort_key_name:
        names += f" --sort-key-name {config.sort_key_name}"
    source, target = config.binding(config.source), config.binding(config.target)
    hash_name, range_name = event_key_names(
        target,
        f"create the event table with `chathist create-table {config.target}{names}`",
        config.sort_key_name,
    )
    source_key = key_schema(source, CHECK_SOURCE)
    session_key = config.primary_key_name or source_key.hash_key
    if session_key != source_key.hash_key:
        raise TableSchemaError(
            f"table {config.source!r} has key schema {source_key}; --primary-key-name"
            f" {session_key!r} is not its hash key"
        )
    if source_key.hash_type != "S":
        raise TableSchemaError(
            f"table {config.source!r} has key schema {source_key}: its hash key is not a string,"
            " and the event layout keys sessions by string ids; nothing was migrated"
        )
    run = Run(config, report, on_progress)
    items = event_items(
        config.target, hash_name, range_name, config.history_key, config.ttl_key_name
    )
    keyring = None if config.kms_key_id is None else KmsKeyring(config.kms_key_id)
    encryption = Encryption(items, keyring, partition=kms_scope(target))
    store = EventStore(items, consistent_read=True, encryption=encryption)
    workers = [_Migrator(run, source, target, source_key, store) for _ in range(config.segments)]
    report.estimated_items = estimated_items(workers[0].source)
    if config.source != config.target:
        report.estimated_sessions = report.estimated_items
    run.run_segments(lambda segment: workers[segment].segment(segment))
    return report
