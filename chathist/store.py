"""The event store: DynamoDB I/O of the event layout, and nothing else.

`insert_events` writes one planned request (a conditional put, or a transaction of conditional
puts); `select_events` queries a session's sequence newest-first (or oldest-first) across 1 MB
pages, `select_staged` one stage's events; `erase` and `delete_keys` work in batches of 25. Each
request asks for and records its consumed capacity. Failures: a sort key another writer already
took raises `SequenceTaken`; a missing table `TableNotFoundError`; anything botocore gave up on,
`StorageError`.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, cast

from botocore.exceptions import BotoCoreError, ClientError

from chathist.capacity import CapacityMeter
from chathist.errors import (
    ChatHistoryError,
    CorruptHistoryError,
    StorageError,
    TableNotFoundError,
    TableSchemaError,
)
from chathist.events import MAX_SEQ, Event, format_seq, parse_key, parse_seq, sort_key, stage_prefix
from chathist.models import EventModel, botocore_failure, dynamodb_client

__all__ = ["EventStore", "SequenceTaken"]

BATCH_ITEMS = 25
BATCH_ATTEMPTS = 10


class SequenceTaken(ChatHistoryError):
    """Another writer already stored an event at a sequence number this write wanted.

    ``taken`` is the highest sequence number known to be taken.
    """

    def __init__(self, message: str, taken: int) -> None:
        super().__init__(message)
        self.taken = taken


def _response(exc: ClientError) -> dict[str, Any]:
    return cast(dict[str, Any], exc.response)


def _writer_of(item: Any, writer_name: str) -> str | None:
    """The writer id stored in a raw item returned with a failed condition, if any."""
    if not isinstance(item, dict):
        return None
    value = item.get(writer_name)
    return value.get("S") if isinstance(value, dict) else None


def _code(exc: ClientError) -> str:
    return str(_response(exc).get("Error", {}).get("Code", ""))


class EventStore:
    """Reads and writes the events of one table through its PynamoDB model."""

    def __init__(
        self, model: type[EventModel], *, consistent_read: bool = True, meter: CapacityMeter
    ) -> None:
        self.model = model
        self.consistent_read = consistent_read
        self.meter = meter
        self.table_name: str = model.Meta.table_name
        self.client = dynamodb_client(model)
        attrs = model.get_attributes()
        self.hash_name: str = attrs["session"].attr_name
        self.range_name: str = attrs["seq"].attr_name
        self.writer_name: str = attrs["writer"].attr_name
        self.attribute_names = [a.attr_name for a in attrs.values()]
        self._names = {field: attribute.attr_name for field, attribute in attrs.items()}

    # -- requests -------------------------------------------------------------------------------

    def _call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        try:
            return self.meter.call(self.client, operation, **kwargs)
        except ClientError as exc:
            code = _code(exc)
            if code == "ResourceNotFoundException":
                raise TableNotFoundError(f"table {self.table_name!r} does not exist") from exc
            if (
                code == "ValidationException"
                and "key" in str(exc).lower()
                and "schema" in str(exc).lower()
            ):
                raise TableSchemaError(
                    f"table {self.table_name!r} does not have the key schema of the event layout:"
                    f" {exc}"
                ) from exc
            if code in ("ConditionalCheckFailedException", "TransactionCanceledException"):
                raise  # the caller tells a lost race from a retried write of its own
            raise StorageError(f"{operation} on {self.table_name!r} failed: {exc}") from exc
        except BotoCoreError as exc:
            failure = botocore_failure(exc, self.model.Meta.host)
            raise StorageError(f"{operation} on {self.table_name!r} failed: {failure}") from exc

    def _key(self, session: str, key: str) -> dict[str, Any]:
        return {self.hash_name: {"S": session}, self.range_name: {"S": key}}

    # -- items <-> events -----------------------------------------------------------------------

    def to_item(self, session: str, event: Event) -> EventModel:
        """The model instance that stores ``event``."""
        body = event.body
        return self.model(
            session,
            sort_key(event),
            kind=event.kind,
            version=event.version,
            writer=event.writer,
            codec=event.codec,
            text=body if isinstance(body, str) else None,
            blob=body if isinstance(body, bytes) else None,
            parts=event.parts or None,
            message_seq=event.message_seq,
            covers=event.count or None,
            stage=event.stage if event.kind == "commit" else None,
            staged_at=event.staged_at,
            expires_at=event.expires_at,
        )

    def to_event(self, raw: dict[str, Any]) -> Event:
        """The event stored in ``raw`` (a DynamoDB item); `CorruptHistoryError` if it is not one.

        Decoded straight from the attribute map, with the model's attribute names and types:
        the read path's hottest code (PynamoDB's ``from_raw_data`` doubles its cost)."""
        names = self._names

        def value(field: str, kind: str, required: bool = False) -> Any:
            attribute = raw.get(names[field])
            if attribute is None:
                if required:
                    raise ValueError(f"attribute {names[field]!r} is missing")
                return None
            if not isinstance(attribute, dict) or kind not in attribute:
                raise ValueError(f"attribute {names[field]!r} is not of type {kind}")
            return attribute[kind]

        def number(field: str) -> int | None:
            found = value(field, "N")
            return None if found is None else int(found)

        try:
            stage, seq = parse_key(value("seq", "S", required=True))
            text = value("text", "S")
            return Event(
                seq=seq,
                kind=value("kind", "S", required=True),
                codec=value("codec", "S"),
                body=text if text is not None else value("blob", "B"),
                parts=number("parts") or 0,
                message_seq=number("message_seq"),
                count=number("covers") or 0,
                stage=stage if stage is not None else value("stage", "S"),
                staged_at=number("staged_at"),
                writer=value("writer", "S"),
                expires_at=number("expires_at"),
                version=int(value("version", "N", required=True)),
            )
        except (ValueError, TypeError) as exc:
            key = {
                name: next(iter(found.values()), None) if isinstance(found, dict) else found
                for name, found in raw.items()
                if name in (self.hash_name, self.range_name)
            }
            raise CorruptHistoryError(f"unreadable event item: {exc}", key=key) from exc

    # -- reads ----------------------------------------------------------------------------------

    def select_events(
        self,
        session: str,
        *,
        newest_first: bool = True,
        below: int | None = None,
        page_size: int | None = None,
    ) -> Iterator[Event]:
        """Events of ``session``'s sequence (those numbered below ``below``), page by page."""
        request = self._query(session, newest_first, below, page_size)
        for raw in self._pages(request):
            yield self.to_event(raw)

    def select_seqs(
        self,
        session: str,
        *,
        newest_first: bool = True,
        below: int | None = None,
        page_size: int | None = None,
    ) -> Iterator[int]:
        """Sequence numbers of ``session``'s sequence, reading only their keys."""
        request = self._query(session, newest_first, below, page_size)
        request["ProjectionExpression"] = "#h, #r"
        for raw in self._pages(request):
            yield parse_seq(raw[self.range_name]["S"])

    def select_staged(
        self, session: str, stage: str, *, page_size: int | None = None
    ) -> Iterator[Event]:
        """The events of stage ``stage``, newest (highest index) first, page by page."""
        request = self._stage_query(session, stage_prefix(stage))
        request["ScanIndexForward"] = False
        if page_size:
            request["Limit"] = page_size
        for raw in self._pages(request):
            yield self.to_event(raw)

    def select_stage_keys(self, session: str) -> Iterator[tuple[str, str, int | None]]:
        """(sort key, stage, staged_at) of every staged item of ``session``."""
        request = self._stage_query(session, "!")
        request["ProjectionExpression"] = "#h, #r, #a"
        request["ExpressionAttributeNames"]["#a"] = "at"
        for raw in self._pages(request):
            key = raw[self.range_name]["S"]
            stage, _ = parse_key(key)
            staged_at = raw.get("at", {}).get("N")
            yield key, str(stage), None if staged_at is None else int(staged_at)

    def select_kinds(
        self, session: str, below: int | None
    ) -> Iterator[tuple[int, str | None, str | None]]:
        """(seq, kind, stage if it is a commit) of every event numbered below ``below``, oldest
        first, reading only keys and those two small attributes."""
        request = self._query(session, False, below, None)
        request["ProjectionExpression"] = "#h, #r, #s, #e"
        request["ExpressionAttributeNames"].update({"#s": "stage", "#e": "event"})
        for raw in self._pages(request):
            yield (
                parse_seq(raw[self.range_name]["S"]),
                raw.get("event", {}).get("S"),
                raw.get("stage", {}).get("S"),
            )

    def _stage_query(self, session: str, prefix: str) -> dict[str, Any]:
        return {
            "TableName": self.table_name,
            "KeyConditionExpression": "#h = :h AND begins_with(#r, :p)",
            "ExpressionAttributeNames": {"#h": self.hash_name, "#r": self.range_name},
            "ExpressionAttributeValues": {":h": {"S": session}, ":p": {"S": prefix}},
            "ConsistentRead": self.consistent_read,
        }

    def _query(
        self, session: str, newest_first: bool, below: int | None, page_size: int | None
    ) -> dict[str, Any]:
        """A query of the sequence (never the staged keys, which sort before it)."""
        high = MAX_SEQ if below is None else max(below - 1, 0)
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "#h = :h AND #r BETWEEN :low AND :high",
            "ExpressionAttributeNames": {"#h": self.hash_name, "#r": self.range_name},
            "ExpressionAttributeValues": {
                ":h": {"S": session},
                ":low": {"S": format_seq(0)},
                ":high": {"S": format_seq(high)},
            },
            "ScanIndexForward": not newest_first,
            "ConsistentRead": self.consistent_read,
        }
        if below is not None and below <= 0:
            request["empty"] = True  # nothing is numbered below 0
        if page_size:
            request["Limit"] = page_size
        return request

    def _pages(self, request: dict[str, Any]) -> Iterator[dict[str, Any]]:
        if request.pop("empty", False):
            return
        while True:
            try:
                page = self._call("Query", **request)
            except ClientError as exc:
                raise StorageError(f"query on {self.table_name!r} failed: {exc}") from exc
            yield from page.get("Items", [])
            last = page.get("LastEvaluatedKey")
            if not last:
                return
            request["ExclusiveStartKey"] = last

    def last_seq(self, session: str) -> int | None:
        """The newest sequence number of ``session``, or None if it has no items."""
        newest = self.newest(session)
        return None if newest is None else newest[0]

    def newest(self, session: str) -> tuple[int, str | None] | None:
        """(sequence number, writer id) of the newest event of ``session``, or None."""
        request = self._query(session, True, None, 1)
        request["ProjectionExpression"] = "#h, #r, #w"
        request["ExpressionAttributeNames"]["#w"] = self.writer_name
        for raw in self._pages(request):
            return parse_seq(raw[self.range_name]["S"]), _writer_of(raw, self.writer_name)
        return None

    def writer_of(self, session: str, seq: int) -> str | None:
        """The writer id of the event numbered ``seq``, or None if there is no such event."""
        page = self._call(
            "GetItem",
            TableName=self.table_name,
            Key=self._key(session, format_seq(seq)),
            ProjectionExpression="#w",
            ExpressionAttributeNames={"#w": self.writer_name},
            ConsistentRead=True,
        )
        return _writer_of(page.get("Item"), self.writer_name)

    # -- writes ---------------------------------------------------------------------------------

    def insert_events(self, session: str, events: Sequence[Event]) -> None:
        """Store ``events`` all or nothing, each only where its sort key is free.

        Raises `SequenceTaken` if another writer holds one of the keys. A request that botocore
        retried after DynamoDB had applied it is recognised (the items carry our writer id) and
        counts as done.
        """
        if not events:
            return
        condition = self.model.seq.does_not_exist()
        puts = [
            self.to_item(session, e).get_save_kwargs_from_instance(
                condition=condition, return_values_on_condition_failure="ALL_OLD"
            )
            for e in events
        ]
        try:
            if len(puts) == 1:
                self._call("PutItem", **puts[0])
            else:
                self._call(
                    "TransactWriteItems",
                    TransactItems=[{"Put": p} for p in puts],
                    ClientRequestToken=uuid.uuid4().hex,
                )
        except ClientError as exc:
            self._raise_conflict(exc, events)

    def _raise_conflict(self, exc: ClientError, events: Sequence[Event]) -> None:
        code = _code(exc)
        if code == "ConditionalCheckFailedException":
            reasons = [{"Code": "ConditionalCheckFailed", "Item": _response(exc).get("Item")}]
        elif code == "TransactionCanceledException":
            reasons = _response(exc).get("CancellationReasons") or []
        else:
            raise StorageError(f"write to {self.table_name!r} failed: {exc}") from exc
        codes = {r.get("Code") for r in reasons} - {"None", None}
        if not codes or not codes <= {"ConditionalCheckFailed", "TransactionConflict"}:
            raise StorageError(f"transaction on {self.table_name!r} failed: {exc}") from exc
        taken = [i for i, r in enumerate(reasons) if r.get("Code") == "ConditionalCheckFailed"]
        highest = events[max(taken)].seq if taken else events[0].seq - 1
        if "TransactionConflict" in codes:
            raise SequenceTaken("another transaction was writing the same items", highest) from exc
        ours = {e.writer for e in events}
        owners = {_writer_of(reasons[i].get("Item"), self.writer_name) for i in taken}
        if len(taken) == len(events) and owners <= ours:
            return  # our own write, applied before botocore retried it
        raise SequenceTaken("another writer holds this sequence number", highest) from exc

    def delete_keys(self, session: str, keys: Iterable[str]) -> int:
        """Delete the items with sort keys ``keys`` in batches of 25; return how many."""
        return self._write_batches(
            session, ({"DeleteRequest": {"Key": self._key(session, k)}} for k in keys)
        )

    def erase(self, session: str, seqs: Iterable[int], *, expires_at: int | None) -> int:
        """Overwrite the events numbered ``seqs`` with content-free ``erased`` events, in
        batches of 25; return how many. Their numbers stay taken."""
        return self._write_batches(
            session,
            (
                {"PutRequest": {"Item": self.to_item(session, marker).serialize()}}
                for marker in (Event(s, "erased", expires_at=expires_at) for s in seqs)
            ),
        )

    def _write_batches(self, session: str, requests: Iterable[dict[str, Any]]) -> int:
        done = 0
        batch: list[dict[str, Any]] = []
        for request in requests:
            batch.append(request)
            if len(batch) == BATCH_ITEMS:
                done += self._write_batch(session, batch)
                batch = []
        if batch:
            done += self._write_batch(session, batch)
        return done

    def _write_batch(self, session: str, requests: list[dict[str, Any]]) -> int:
        count = len(requests)
        for attempt in range(BATCH_ATTEMPTS):
            try:
                response = self._call("BatchWriteItem", RequestItems={self.table_name: requests})
            except ClientError as exc:
                raise StorageError(f"batch write on {self.table_name!r} failed: {exc}") from exc
            requests = response.get("UnprocessedItems", {}).get(self.table_name, [])
            if not requests:
                return count
            time.sleep(min(2.0, 0.05 * 2**attempt) * random.random())
        raise StorageError(
            f"{len(requests)} items of session {session!r} were still unprocessed after"
            f" {BATCH_ATTEMPTS} attempts"
        )
