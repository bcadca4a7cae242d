"""Bulk migration between LangChain's list layout and chathist's event layout.

`migrate_list_to_events` scans a list-style table (one item per session holding a ``History``
list) in parallel segments and writes each session as events; `rollback_events_to_list` does the
reverse for sessions that fit one item. Both are idempotent and resumable:

- A session's events are planned deterministically (`chathist.writes.plan_write` from sequence 0,
  the legacy item's TTL on every event) and written with conditional puts under a writer id that
  is a fingerprint of the planned content. Re-running after a kill finds our own events (same
  fingerprint) and finishes or skips them; anything else in the partition is a conflict that is
  reported and never overwritten or duplicated.
- Source items are recognised by the type of the history attribute (a list) and the absence of
  the event attribute, so the target may be the source table itself when it has a composite key.
- ``verify`` reads each migrated session back (consistent reads, chathist's fold) and compares
  it with its source message for message; ``delete_source`` deletes a source item only after
  that check passed, and only if it is unchanged (a conditional delete).
- ``max_wcu`` caps the write rate with a token bucket debited by the write units DynamoDB
  reports for each request.
- ``overwrite`` (rollback only) replaces a target list item that holds other messages (a session
  changed after it was migrated), on condition that the item is still the one read.
- A KeyboardInterrupt (Ctrl-C) lets the workers finish the sessions they are on, then raises
  `MigrationInterrupted`, whose ``report`` counts what was done; a re-run resumes.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from typing import TYPE_CHECKING, Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError
from langchain_core.messages import BaseMessage, message_to_dict

from chathist.capacity import Capacity, CapacityMeter
from chathist.codec import Payload, encode_message, write_units
from chathist.errors import (
    ChatHistoryError,
    ConfigurationError,
    TableError,
    TableNotFoundError,
    TableSchemaError,
)
from chathist.events import FORMAT_VERSION, Event, sort_key
from chathist.fold import fold
from chathist.history import validate_session_id
from chathist.legacy import messages_from_legacy, messages_to_legacy
from chathist.models import Binding, dynamodb_client, event_model
from chathist.store import EventStore, SequenceTaken
from chathist.tables import KeySchema, check_event_schema, describe_key_schema
from chathist.writes import ITEM_LIMIT, Limits, Plan, event_size, item_overhead, plan_write

if TYPE_CHECKING:
    import boto3

__all__ = [
    "MigrationConfig",
    "MigrationInterrupted",
    "ProgressCallback",
    "Report",
    "WriteLimiter",
    "compare_messages",
    "item_size",
    "migrate_list_to_events",
    "rollback_events_to_list",
]

EVENT_ATTRIBUTE = "event"
"""The attribute every event item has (its kind); a list-layout item never has it."""
WRITER_PREFIX = "mig1."
MAX_LISTED = 1000
"""Most sessions a report lists per problem kind (all are counted)."""

_deserializer = TypeDeserializer()
_serializer = TypeSerializer()

ProgressCallback = Callable[["Report"], None]


# -- configuration and report -------------------------------------------------------------------


@dataclass(frozen=True)
class MigrationConfig:
    """What to migrate, where, and how. ``None`` key names are read from the tables' schemas."""

    source: str
    target: str
    endpoint_url: str | None = None
    region_name: str | None = None
    boto3_session: boto3.Session | None = None
    primary_key_name: str | None = None
    """Hash key of the list-layout table (the session id). Default: that table's hash key."""
    sort_key_name: str | None = None
    """Range key of the event-layout table. Default: that table's range key."""
    history_key: str = "History"
    """The list attribute of a list-layout item, and the payload attribute of an event item."""
    ttl_key_name: str = "expireAt"
    legacy_sort_value: str | None = None
    """Rollback into a composite-key table: the range key value of each session's list item."""
    segments: int = 8
    dry_run: bool = False
    verify: bool = False
    delete_source: bool = False
    max_wcu: float | None = None
    overwrite: bool = False
    """Rollback: replace a target list item holding other messages, if it is still the one read."""

    def binding(self, table: str) -> Binding:
        return Binding(table, self.endpoint_url, self.region_name, self.boto3_session)


@dataclass
class Report:
    """Counters of a run (updated by every worker thread) and the sessions with problems."""

    direction: str
    source: str
    target: str
    dry_run: bool = False
    verify: bool = False
    format_version: int = FORMAT_VERSION
    estimated_items: int | None = None
    """The scanned table's item count as DynamoDB last refreshed it (every few hours)."""
    estimated_sessions: int | None = None
    """Sessions expected (the list table's item count, when it holds nothing else)."""
    scanned_items: int = 0
    sessions: int = 0
    """Sessions seen in the source (every outcome)."""
    migrated: int = 0
    """Sessions written by this run (or, in a dry run, that would be)."""
    already: int = 0
    """Sessions found complete in the target (nothing written)."""
    expired: int = 0
    empty: int = 0
    conflicts: int = 0
    failures: int = 0
    too_large: int = 0
    verified: int = 0
    differences: int = 0
    deleted_sources: int = 0
    overwritten: int = 0
    """Rollback with ``overwrite``: sessions whose differing list item was replaced."""
    interrupted: bool = False
    """The run was stopped (Ctrl-C) before it saw every session."""
    messages: int = 0
    items_written: int = 0
    payload_bytes: int = 0
    source_bytes: int = 0
    estimated_wcu: float = 0.0
    capacity: Capacity = field(default_factory=Capacity)
    limiter_units: float = 0.0
    limiter_wait_seconds: float = 0.0
    started: float = field(default_factory=time.monotonic)
    elapsed: float = 0.0
    problems: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    """Sessions listed by kind (conflicts, failures, too_large, differences, overwritten)."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: float) -> None:
        """Add to counters, thread-safely."""
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def problem(self, kind: str, session: str, detail: str) -> None:
        """Count a session under ``kind`` (conflicts, overwritten, ...) and list it."""
        with self._lock:
            setattr(self, kind, getattr(self, kind) + 1)
            listed = self.problems.setdefault(kind, [])
            if len(listed) < MAX_LISTED:
                listed.append((session, detail))

    @property
    def ok(self) -> bool:
        return not (self.conflicts or self.failures or self.too_large or self.differences)

    def as_dict(self) -> dict[str, Any]:
        """The report as plain JSON-able data."""
        names = [
            "direction",
            "source",
            "target",
            "dry_run",
            "verify",
            "format_version",
            "estimated_items",
            "estimated_sessions",
            "scanned_items",
            "sessions",
            "migrated",
            "already",
            "expired",
            "empty",
            "conflicts",
            "failures",
            "too_large",
            "verified",
            "differences",
            "deleted_sources",
            "overwritten",
            "interrupted",
            "messages",
            "items_written",
            "payload_bytes",
            "source_bytes",
            "estimated_wcu",
            "limiter_units",
            "limiter_wait_seconds",
            "elapsed",
        ]
        data: dict[str, Any] = {name: getattr(self, name) for name in names}
        data["consumed_wcu"] = self.capacity.write_units
        data["consumed_rcu"] = self.capacity.read_units
        data["requests"] = self.capacity.requests
        data["problems"] = {k: [list(p) for p in v] for k, v in self.problems.items()}
        return data


class MigrationInterrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C once its workers finished their sessions; ``report`` counts what
    was done (running the same migration again resumes it)."""

    def __init__(self, report: Report) -> None:
        super().__init__("interrupted")
        self.report = report


# -- write-rate limiter ---------------------------------------------------------------------------


class WriteLimiter:
    """A token bucket of write units: on average at most ``rate`` WCU per second.

    `acquire` takes a request's estimated units before it is sent (waiting while the bucket is
    short), `settle` corrects by what DynamoDB reported. Bursts are bounded by ``burst`` units
    (default: one second's worth). ``clock`` and ``sleep`` can be replaced in tests.
    """

    def __init__(
        self,
        rate: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ConfigurationError("max_wcu must be positive")
        self.rate = float(rate)
        self.burst = float(burst) if burst is not None else max(self.rate, 1.0)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = self.burst
        self._stamp = clock()
        self.started = self._stamp
        self.consumed = 0.0
        """Write units DynamoDB reported for the requests this limiter let through."""
        self.waited = 0.0
        self.largest = 0.0
        """The largest single request estimate or report seen (bounds the overshoot)."""

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def acquire(self, units: float) -> None:
        """Wait until the bucket allows a request estimated at ``units``, and debit them."""
        while True:
            with self._lock:
                self._refill()
                need = min(units, self.burst)
                if self._tokens >= need - 1e-6:  # (float rounding must not stall it)
                    self._tokens -= units
                    self.largest = max(self.largest, units)
                    return
                delay = (need - self._tokens) / self.rate
                self.waited += delay
            self._sleep(delay)

    def settle(self, estimated: float, actual: float) -> None:
        """Replace a request's estimate by what it really consumed."""
        with self._lock:
            self._tokens += estimated - actual
            self.consumed += actual
            self.largest = max(self.largest, actual)

    def allowed(self) -> float:
        """The most units the bucket can have granted since it started (for checks)."""
        with self._lock:
            return self.burst + (self._clock() - self.started) * self.rate + self.largest


# -- sizes and comparison -------------------------------------------------------------------------


def _number_size(value: Decimal | int | float) -> int:
    digits = Decimal(value).normalize().as_tuple().digits
    return min(21, (len(digits) + 1) // 2 + 1)


def value_size(value: Any) -> int:
    """DynamoDB's size of one attribute value (as boto3 deserializes it), per AWS's rules."""
    if value is None or isinstance(value, bool):
        return 1
    if isinstance(value, str):
        return len(value.encode("utf-8"))
    if isinstance(value, (int, float, Decimal)):
        return _number_size(value)
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    if hasattr(value, "value") and isinstance(value.value, (bytes, bytearray)):  # boto3 Binary
        return len(value.value)
    if isinstance(value, dict):
        return 3 + sum(len(k.encode("utf-8")) + 1 + value_size(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return 3 + sum(1 + value_size(v) for v in value)
    if isinstance(value, (set, frozenset)):
        return sum(value_size(v) for v in value)
    raise TypeError(f"no DynamoDB size for a {type(value).__name__}")


def item_size(item: dict[str, Any]) -> int:
    """DynamoDB's size of an item (attribute names and values), to compare with 400 KB."""
    return sum(len(name.encode("utf-8")) + value_size(v) for name, v in item.items())


def compare_messages(expected: Sequence[BaseMessage], found: Sequence[BaseMessage]) -> str | None:
    """None if both lists hold the same messages, else a short description of the first change."""
    if len(expected) != len(found):
        return f"{len(found)} messages instead of {len(expected)}"
    for index, (want, got) in enumerate(zip(expected, found, strict=True)):
        want_dict, got_dict = message_to_dict(want), message_to_dict(got)
        if want_dict != got_dict:
            if want_dict["type"] != got_dict["type"]:
                return f"message {index} is a {got.type} message, the source has a {want.type}"
            fields = sorted(
                name
                for name in set(want_dict["data"]) | set(got_dict["data"])
                if want_dict["data"].get(name) != got_dict["data"].get(name)
            )
            return f"message {index} ({want.type}) differs in {', '.join(fields)}"
    return None


def _body_bytes(event: Event) -> int:
    body = event.body
    return len(body.encode("utf-8")) if isinstance(body, str) else len(body or b"")


def _expiry(value: Any) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError, ArithmeticError):
        return None


# -- shared machinery -----------------------------------------------------------------------------


class _Run:
    """One run: thread-safe report, limiter, stop flag, and the worker-independent settings."""

    def __init__(
        self, config: MigrationConfig, report: Report, on_progress: ProgressCallback | None
    ) -> None:
        if config.segments < 1:
            raise ConfigurationError("segments must be at least 1")
        self.config = config
        self.report = report
        self.on_progress = on_progress
        self.limiter = WriteLimiter(config.max_wcu) if config.max_wcu else None
        self.stop = threading.Event()
        self.meters: list[CapacityMeter] = []
        self._meters_lock = threading.Lock()

    def meter(self) -> CapacityMeter:
        meter = CapacityMeter()
        with self._meters_lock:
            self.meters.append(meter)
        return meter

    def capacity(self) -> Capacity:
        with self._meters_lock:
            meters = list(self.meters)
        total = Capacity()
        for meter in meters:
            total = total + meter.total
        return total

    def progress(self) -> None:
        if self.on_progress is not None:
            self.report.capacity = self.capacity()
            self.report.elapsed = time.monotonic() - self.report.started
            self.on_progress(self.report)

    def write(self, meter: CapacityMeter, estimate: float, send: Callable[[], Any]) -> Any:
        """Send one write request through the limiter; debit what it consumed."""
        if self.limiter is None:
            return send()
        self.limiter.acquire(estimate)
        before = meter.total.write_units
        try:
            return send()
        finally:
            self.limiter.settle(estimate, meter.total.write_units - before)

    def scan(
        self,
        client: Any,
        meter: CapacityMeter,
        request: dict[str, Any],
        segment: int,
    ) -> Iterator[dict[str, Any]]:
        """Items of one scan segment, page by page, counting scanned items for the progress."""
        request = dict(request, Segment=segment, TotalSegments=self.config.segments)
        request["ReturnConsumedCapacity"] = "TOTAL"
        while not self.stop.is_set():
            page = meter.call(client, "Scan", **request)
            self.report.add(scanned_items=int(page.get("ScannedCount", 0)))
            yield from page.get("Items", [])
            last = page.get("LastEvaluatedKey")
            if not last:
                return
            request["ExclusiveStartKey"] = last

    def run_segments(self, work: Callable[[int], None]) -> None:
        """Run ``work(segment)`` for every segment in its own thread; propagate the first error,
        a KeyboardInterrupt as `MigrationInterrupted` (after the workers stopped)."""
        pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.config.segments, thread_name_prefix="chathist-migrate"
        )
        futures = [pool.submit(work, s) for s in range(self.config.segments)]
        try:
            try:
                for future in concurrent.futures.as_completed(futures):
                    future.result()
            except BaseException:
                self.stop.set()
                raise
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
                self.finish()
        except KeyboardInterrupt as exc:
            self.report.interrupted = True
            raise MigrationInterrupted(self.report) from exc

    def finish(self) -> None:
        report = self.report
        report.capacity = self.capacity()
        report.elapsed = time.monotonic() - report.started
        if self.limiter is not None:
            report.limiter_units = self.limiter.consumed
            report.limiter_wait_seconds = self.limiter.waited


def _table_items(client: Any, table: str) -> int | None:
    try:
        count = client.describe_table(TableName=table)["Table"].get("ItemCount")
    except ClientError:
        return None
    return int(count) if count else None


def _key_schema(config: MigrationConfig, table: str, missing: str) -> KeySchema:
    """The key schema of ``table``; if there is no such table, `TableNotFoundError` ending in
    ``missing``: what to do about it in this direction of the migration."""
    binding = config.binding(table)
    try:
        return describe_key_schema(binding)
    except TableNotFoundError as exc:
        where = binding.endpoint_url or f"AWS region {binding.region}"
        raise TableNotFoundError(f"table {table!r} does not exist on {where}; {missing}") from exc


_CHECK_SOURCE = "check --source, --endpoint-url and --region"


def _event_schema(config: MigrationConfig, table: str, missing: str) -> tuple[str, str]:
    """Hash and range key names of the event-layout ``table``; `TableSchemaError` if it has none."""
    schema = _key_schema(config, table, missing)
    if not schema.composite:
        raise TableSchemaError(
            f"table {table!r} has only a hash key ({schema}); the event layout needs a composite"
            " key: create one with `chathist create-table`"
        )
    range_key = config.sort_key_name or schema.range_key
    assert range_key is not None
    check_event_schema(schema, table, schema.hash_key, range_key)
    return schema.hash_key, range_key


def _store(
    config: MigrationConfig, table: str, names: tuple[str, str], meter: CapacityMeter
) -> EventStore:
    model = event_model(
        config.binding(table), names[0], names[1], config.history_key, config.ttl_key_name
    )
    return EventStore(model, consistent_read=True, meter=meter)


def read_session(
    store: EventStore, session: str, upto: int | None = None
) -> tuple[list[Event], dict[str, list[Event]]]:
    """The sequence events of ``session`` (numbered up to ``upto``), oldest first, and the staged
    events of each commit among them: what chathist's fold reads. Only sequence keys are read,
    so a list-layout item sharing the partition (same-table migration) is never met."""
    below = None if upto is None else upto + 1
    events = list(store.select_events(session, newest_first=False, below=below))
    stages = {
        e.stage: sorted(store.select_staged(session, e.stage), key=lambda staged: staged.seq)
        for e in events
        if e.kind == "commit" and e.stage is not None
    }
    return events, stages


def fingerprint(session: str, payloads: Sequence[Payload], expires_at: int | None) -> str:
    """The writer id of a session's migration: a digest of what it writes (31 characters)."""
    digest = hashlib.blake2b(digest_size=13)
    digest.update(f"{len(session)}:{session}|{expires_at}|".encode())
    for payload in payloads:
        digest.update(f"{payload.codec}:{len(payload.data)}:".encode())
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

    def estimate(self, request: Sequence[Event]) -> float:
        """Write units of one request (a transaction costs twice)."""
        units = sum(write_units(event_size(e, self.overhead)) for e in request)
        return float(units if len(request) == 1 else 2 * units)


def plan_session(
    session: str,
    messages: Sequence[BaseMessage],
    expires_at: int | None,
    attribute_names: Sequence[str],
) -> SessionPlan:
    """Plan ``messages`` as the events 0, 1, ... of ``session`` (large sessions staged first),
    under a writer id that fingerprints the content, so the plan is the same on every run."""
    payloads = [encode_message(m) for m in messages]
    limits = Limits(item_overhead(attribute_names, session))
    writer = fingerprint(session, payloads, expires_at)
    plan: Plan = plan_write(payloads, writer, limits, expires_at=expires_at, now=int(time.time()))
    return SessionPlan(
        writer, [*plan.staged, plan.at(0)], sum(len(p.data) for p in payloads), limits.overhead
    )


# -- list -> events -------------------------------------------------------------------------------


class _Migrator:
    """The per-thread worker of `migrate_list_to_events`."""

    def __init__(self, run: _Run, source_key: KeySchema, event_names: tuple[str, str]) -> None:
        config = run.config
        self.run = run
        self.config = config
        self.report = run.report
        self.meter = run.meter()
        self.store = _store(config, config.target, event_names, self.meter)
        self.source_client = dynamodb_client(event_model(config.binding(config.source)))
        self.source_key = source_key
        self.session_key = config.primary_key_name or source_key.hash_key

    def scan_request(self) -> dict[str, Any]:
        return {
            "TableName": self.config.source,
            "FilterExpression": "attribute_type(#hist, :list) AND attribute_not_exists(#ev)",
            "ExpressionAttributeNames": {"#hist": self.config.history_key, "#ev": EVENT_ATTRIBUTE},
            "ExpressionAttributeValues": {":list": {"S": "L"}},
        }

    def segment(self, segment: int) -> None:
        for raw in self.run.scan(self.source_client, self.meter, self.scan_request(), segment):
            if self.run.stop.is_set():
                return
            self.session(raw)
            self.run.progress()

    def session(self, raw: dict[str, Any]) -> None:
        report = self.report
        session = _describe_key(raw, self.source_key)
        try:
            item = {name: _deserializer.deserialize(value) for name, value in raw.items()}
            session = validate_session_id(item.get(self.session_key))
            self._migrate(session, raw, item)
        except SequenceTaken as exc:
            report.problem("conflicts", session, f"another writer took a sequence number: {exc}")
        except TableError:
            raise
        except (ChatHistoryError, ClientError, ValueError, TypeError) as exc:
            report.problem("failures", session, f"{type(exc).__name__}: {exc}")
        finally:
            report.add(sessions=1)

    def _migrate(self, session: str, raw: dict[str, Any], item: dict[str, Any]) -> None:
        config, report = self.config, self.report
        history = item[config.history_key]
        expires_at = _expiry(item.get(config.ttl_key_name))
        report.add(source_bytes=item_size(item))
        if expires_at is not None and expires_at <= time.time():
            report.add(expired=1)
            return
        messages = messages_from_legacy(history)
        if not messages:
            report.add(empty=1)
            return
        plan = plan_session(session, messages, expires_at, self.store.attribute_names)
        checking = config.verify or config.delete_source
        stored: tuple[list[Event], dict[str, list[Event]]] | None = None
        if checking:
            try:  # one read serves both the state and the check of a finished session
                stored = read_session(self.store, session)
            except ChatHistoryError as exc:
                report.problem("differences", session, f"unreadable: {exc}")
                return
            state = _state_of(stored[0], plan)
        else:
            state = self._state(session, plan)
        if state == "conflict":
            if not self._holds_source(session, messages, stored):
                report.problem(
                    "conflicts", session, "the target partition already holds other events"
                )
                return
            # Another writer (lazy migration, or the application) already stored these messages.
            report.add(already=1, verified=int(checking))
            if config.delete_source and not config.dry_run:
                self._delete_source(session, raw)
            return
        if state == "done":
            report.add(already=1)
        elif config.dry_run:
            report.add(
                migrated=1,
                messages=len(messages),
                items_written=plan.items,
                payload_bytes=plan.payload_bytes,
                estimated_wcu=sum(plan.estimate(r) for r in plan.requests),
            )
            return  # nothing stored to verify or delete
        else:
            for request in plan.requests:
                estimate = plan.estimate(request)
                self.run.write(
                    self.meter, estimate, partial(self.store.insert_events, session, request)
                )
                report.add(estimated_wcu=estimate)
            report.add(
                migrated=1,
                messages=len(messages),
                items_written=plan.items,
                payload_bytes=plan.payload_bytes,
            )
            stored = None  # read back what was written
        if checking:
            difference = self._verify(session, messages, expires_at, plan, stored)
            if difference is not None:
                report.problem("differences", session, difference)
                return
            report.add(verified=1)
        if config.delete_source and not config.dry_run:
            self._delete_source(session, raw)

    def _holds_source(
        self,
        session: str,
        messages: Sequence[BaseMessage],
        stored: tuple[list[Event], dict[str, list[Event]]] | None,
    ) -> bool:
        """True if the partition's history starts with exactly the source's messages."""
        try:
            events, stages = stored if stored is not None else read_session(self.store, session)
            found = fold(events, stages=stages)
        except ChatHistoryError:
            return False
        return compare_messages(messages, found[: len(messages)]) is None

    def _state(self, session: str, plan: SessionPlan) -> str:
        """``new`` (maybe with stages of an interrupted run), ``done`` or ``conflict``, from the
        newest event of the partition (one small read)."""
        newest = self.store.newest(session)
        if newest is None:
            return "new"
        seq, writer = newest
        if writer == plan.writer and seq == plan.last_seq:
            return "done"
        if seq > plan.last_seq and self.store.writer_of(session, plan.last_seq) == plan.writer:
            return "done"  # migrated earlier; the application has appended since
        return "conflict"

    def _verify(
        self,
        session: str,
        messages: Sequence[BaseMessage],
        expires_at: int | None,
        plan: SessionPlan,
        stored: tuple[list[Event], dict[str, list[Event]]] | None,
    ) -> str | None:
        """None if the session's events up to the plan's last equal the source, else why not."""
        try:
            if stored is None:
                events, stages = read_session(self.store, session, plan.last_seq)
            else:
                events = [e for e in stored[0] if e.seq <= plan.last_seq]
                stages = {e.stage: stored[1][e.stage] for e in events if e.stage in stored[1]}
            found = fold(events, stages=stages)
        except ChatHistoryError as exc:
            return f"unreadable: {exc}"
        difference = compare_messages(messages, found)
        if difference is not None:
            return difference
        for event in [*events, *(e for staged in stages.values() for e in staged)]:
            if event.expires_at != expires_at:
                return f"event {event.seq} expires at {event.expires_at}, source at {expires_at}"
        return None

    def _delete_source(self, session: str, raw: dict[str, Any]) -> None:
        key_names = [self.source_key.hash_key]
        if self.source_key.range_key:
            key_names.append(self.source_key.range_key)
        request = {
            "TableName": self.config.source,
            "Key": {name: raw[name] for name in key_names},
            "ConditionExpression": "#hist = :hist",
            "ExpressionAttributeNames": {"#hist": self.config.history_key},
            "ExpressionAttributeValues": {":hist": raw[self.config.history_key]},
            "ReturnConsumedCapacity": "TOTAL",
        }

        def send() -> None:
            self.meter.call(self.source_client, "DeleteItem", **request)

        estimate = float(write_units(item_size({"h": raw})))
        try:
            self.run.write(self.meter, estimate, send)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                self.report.problem(
                    "conflicts", session, "source item changed after it was read; not deleted"
                )
                return
            raise
        self.report.add(deleted_sources=1)


def _state_of(events: Sequence[Event], plan: SessionPlan) -> str:
    """``new``, ``done`` or ``conflict`` from the whole sequence of the target partition: done
    when the plan's last event is there and ours (the final request is written atomically)."""
    if not events:
        return "new"
    for event in events:
        if event.seq == plan.last_seq:
            return "done" if event.writer == plan.writer else "conflict"
    return "conflict"


def _describe_key(raw: dict[str, Any], schema: KeySchema) -> str:
    names = [schema.hash_key] + ([schema.range_key] if schema.range_key else [])
    values = []
    for name in names:
        value = raw.get(name, {})
        values.append(str(next(iter(value.values()), "?")) if value else "?")
    return "/".join(values)


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
    event_names = _event_schema(
        config,
        config.target,
        f"create the event table with `chathist create-table {config.target}{names}`",
    )
    source_key = _key_schema(config, config.source, _CHECK_SOURCE)
    session_key = config.primary_key_name or source_key.hash_key
    if session_key != source_key.hash_key:
        raise TableSchemaError(
            f"table {config.source!r} has key schema {source_key}; --primary-key-name"
            f" {session_key!r} is not its hash key"
        )
    run = _Run(config, report, on_progress)
    probe = _Migrator(run, source_key, event_names)
    report.estimated_items = _table_items(probe.source_client, config.source)
    if config.source != config.target:
        report.estimated_sessions = report.estimated_items
    workers = [probe] + [
        _Migrator(run, source_key, event_names) for _ in range(config.segments - 1)
    ]
    run.run_segments(lambda segment: workers[segment].segment(segment))
    return report


# -- events -> list -------------------------------------------------------------------------------


class _RollbackWorker:
    """The per-thread worker of `rollback_events_to_list`."""

    def __init__(
        self,
        run: _Run,
        event_names: tuple[str, str],
        target_key: KeySchema,
        seen: set[str],
        seen_lock: threading.Lock,
    ) -> None:
        config = run.config
        self.run = run
        self.config = config
        self.report = run.report
        self.meter = run.meter()
        self.store = _store(config, config.source, event_names, self.meter)
        self.target_client = dynamodb_client(event_model(config.binding(config.target)))
        self.target_key = target_key
        self.seen = seen
        self.seen_lock = seen_lock

    def segment(self, segment: int) -> None:
        request = {
            "TableName": self.config.source,
            "FilterExpression": "attribute_exists(#ev)",
            "ProjectionExpression": "#h",
            "ExpressionAttributeNames": {"#h": self.store.hash_name, "#ev": EVENT_ATTRIBUTE},
        }
        for raw in self.run.scan(self.store.client, self.meter, request, segment):
            session = raw[self.store.hash_name]["S"]
            with self.seen_lock:
                if session in self.seen:
                    continue
                self.seen.add(session)
            if self.run.stop.is_set():
                return
            self.session(session)
            self.run.progress()

    def session(self, session: str) -> None:
        try:
            self._rollback(session)
        except TableError:
            raise
        except (ChatHistoryError, ClientError, ValueError, TypeError) as exc:
            self.report.problem("failures", session, f"{type(exc).__name__}: {exc}")
        finally:
            self.report.add(sessions=1)

    def _key(self, session: str) -> dict[str, Any]:
        key: dict[str, Any] = {self.target_key.hash_key: session}
        if self.target_key.range_key:
            key[self.target_key.range_key] = self.config.legacy_sort_value
        return key

    def _rollback(self, session: str) -> None:
        config, report = self.config, self.report
        events, stages = read_session(self.store, session)
        messages = fold(events, stages=stages, now=time.time())
        if not messages:
            kind = "expired" if events and fold(events, stages=stages) else "empty"
            report.add(**{kind: 1})
            return
        staged = [e for stage in stages.values() for e in stage]
        expiries = [e.expires_at for e in [*events, *staged] if e.kind == "message"]
        expires_at = None if None in expiries or not expiries else max(e for e in expiries if e)
        item = self._key(session)
        item[config.history_key] = messages_to_legacy(messages, coerce_float_to_decimal=True)
        if expires_at is not None:
            item[config.ttl_key_name] = expires_at
        size = item_size(item)
        report.add(source_bytes=sum(_body_bytes(e) for e in [*events, *staged]))
        if size > ITEM_LIMIT:
            report.problem(
                "too_large",
                session,
                f"{len(messages)} messages need about {size:,} bytes in one item (limit"
                f" {ITEM_LIMIT:,}); left in the event layout",
            )
            return
        existing = self._read_target(session)
        difference = None if existing is None else self._difference(messages, existing)
        if difference is not None and not config.overwrite:
            report.problem(
                "conflicts",
                session,
                f"the target's list item differs ({difference}); --overwrite replaces it",
            )
            return
        if existing is not None and difference is None:
            report.add(already=1)
        elif config.dry_run:
            report.add(
                migrated=1,
                messages=len(messages),
                items_written=1,
                payload_bytes=size,
                estimated_wcu=write_units(size),
            )
            if difference is not None:
                report.problem(
                    "overwritten",
                    session,
                    f"would replace the list item, which differs ({difference})",
                )
            return
        else:
            if not self._put(session, item, size, existing):
                return
            report.add(migrated=1, messages=len(messages), items_written=1, payload_bytes=size)
            if difference is not None:
                report.problem(
                    "overwritten", session, f"replaced the list item, which differed ({difference})"
                )
        if config.verify or config.delete_source:
            found = self._difference(messages, self._read_target(session))
            if found is not None:
                report.problem("differences", session, f"the list item differs: {found}")
                return
            report.add(verified=1)
        if config.delete_source and not config.dry_run:
            keys = [sort_key(e) for e in [*events, *staged]]
            self.run.write(
                self.meter, float(len(keys)), lambda: self.store.delete_keys(session, keys)
            )
            report.add(deleted_sources=1)

    def _read_target(self, session: str) -> dict[str, Any] | None:
        """The session's list item in the target as DynamoDB returns it (strongly consistent)."""
        key = {k: _serializer.serialize(v) for k, v in self._key(session).items()}
        response = self.meter.call(
            self.target_client,
            "GetItem",
            TableName=self.config.target,
            Key=key,
            ConsistentRead=True,
        )
        item: dict[str, Any] | None = response.get("Item")
        return item

    def _difference(
        self, messages: Sequence[BaseMessage], existing: dict[str, Any] | None
    ) -> str | None:
        """None if ``existing`` (a raw list item) holds exactly ``messages``, else how it differs
        (a missing item differs too)."""
        if existing is None:
            return "no list item"
        raw_history = existing.get(self.config.history_key)
        history = None if raw_history is None else _deserializer.deserialize(raw_history)
        if not isinstance(history, list):
            return f"no {self.config.history_key} list"
        try:
            stored = messages_from_legacy(history)
        except (ChatHistoryError, ValueError, TypeError, KeyError) as exc:
            return f"unreadable: {exc}"
        return compare_messages(messages, stored)

    def _put(
        self, session: str, item: dict[str, Any], size: int, existing: dict[str, Any] | None
    ) -> bool:
        """Write ``item`` if the target still holds ``existing`` (None: no item at all)."""
        request: dict[str, Any] = {
            "TableName": self.config.target,
            "Item": {k: _serializer.serialize(v) for k, v in item.items()},
            "ReturnConsumedCapacity": "TOTAL",
        }
        hash_key, history_key = self.target_key.hash_key, self.config.history_key
        # Overwrite only the item read: a writer that changed it since must not be lost.
        old = None if existing is None else existing.get(history_key)
        if existing is None:
            request["ConditionExpression"] = "attribute_not_exists(#h)"
            request["ExpressionAttributeNames"] = {"#h": hash_key}
        elif old is None:
            request["ConditionExpression"] = "attribute_exists(#h) AND attribute_not_exists(#l)"
            request["ExpressionAttributeNames"] = {"#h": hash_key, "#l": history_key}
        else:
            request["ConditionExpression"] = "#l = :old"
            request["ExpressionAttributeNames"] = {"#l": history_key}
            request["ExpressionAttributeValues"] = {":old": old}

        def send() -> None:
            self.meter.call(self.target_client, "PutItem", **request)

        estimate = float(write_units(size))
        try:
            self.run.write(self.meter, estimate, send)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code, text = error.get("Code"), str(error.get("Message", ""))
            if code == "ConditionalCheckFailedException":
                self.report.problem(
                    "conflicts",
                    session,
                    "the target's list item changed while the rollback ran; left alone (run"
                    " again to retry)",
                )
                return False
            if code == "ValidationException" and "size" in text.lower():
                self.report.problem("too_large", session, f"DynamoDB refused the item: {text}")
                return False
            raise
        self.report.add(estimated_wcu=estimate)
        return True


def rollback_events_to_list(
    config: MigrationConfig, *, on_progress: ProgressCallback | None = None
) -> Report:
    """Write every event-layout session of ``config.source`` that fits one item back as a
    LangChain list item in ``config.target``; larger sessions are reported, never truncated."""
    report = Report("events-to-list", config.source, config.target, config.dry_run, config.verify)
    event_names = _event_schema(config, config.source, _CHECK_SOURCE)
    key_name = config.primary_key_name or "SessionId"
    option = "" if key_name == "SessionId" else f" --primary-key-name {key_name}"
    target_key = _key_schema(
        config,
        config.target,
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
    run = _Run(config, report, on_progress)
    seen: set[str] = set()
    lock = threading.Lock()
    workers = [
        _RollbackWorker(run, event_names, target_key, seen, lock) for _ in range(config.segments)
    ]
    report.estimated_items = _table_items(workers[0].store.client, config.source)
    run.run_segments(lambda segment: workers[segment].segment(segment))
    return report


def wcu_rate(report: Report) -> float:
    """Average write units per second of a finished run."""
    return report.capacity.write_units / report.elapsed if report.elapsed > 0 else math.inf
