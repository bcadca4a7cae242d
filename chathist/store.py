"""The event store: DynamoDB I/O of the event layout, and nothing else.

`insert_events` writes one planned request (a conditional put, or a transaction of conditional
puts); `select_events` queries a session newest-first (or oldest-first) across 1 MB pages;
`delete_events` removes items in batches of 25. Each request asks for and records its consumed
capacity. Mapping of failures: a sort key another writer already took raises `SequenceTaken`; a
missing table `TableNotFoundError`; anything botocore gave up on, `StorageError`.
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
from chathist.events import Event, format_seq, parse_seq
from chathist.models import EventModel, dynamodb_client

__all__ = ["EventStore", "SequenceTaken"]

BATCH_ITEMS = 25
BATCH_ATTEMPTS = 10


class SequenceTaken(ChatHistoryError):
    """Another writer already stored an event at a sequence number this write wanted."""


def _response(exc: ClientError) -> dict[str, Any]:
    return cast(dict[str, Any], exc.response)


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

    # -- requests -------------------------------------------------------------------------------

    def _call(self, operation: str, method: str, **kwargs: Any) -> dict[str, Any]:
        kwargs.setdefault("ReturnConsumedCapacity", "TOTAL")
        response: dict[str, Any] | None = None
        try:
            response = getattr(self.client, method)(**kwargs)
            return response
        except ClientError as exc:
            response = _response(exc)
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
            raise
        except BotoCoreError as exc:
            raise StorageError(f"{operation} on {self.table_name!r} failed: {exc}") from exc
        finally:
            self.meter.record(operation, response)

    def _key(self, session: str, seq: int) -> dict[str, Any]:
        return {self.hash_name: {"S": session}, self.range_name: {"S": format_seq(seq)}}

    # -- items <-> events -----------------------------------------------------------------------

    def to_item(self, session: str, event: Event) -> EventModel:
        """The model instance that stores ``event``."""
        body = event.body
        return self.model(
            session,
            format_seq(event.seq),
            kind=event.kind,
            version=event.version,
            writer=event.writer,
            codec=event.codec,
            text=body if isinstance(body, str) else None,
            blob=body if isinstance(body, bytes) else None,
            parts=event.parts or None,
            message_seq=event.message_seq,
            covers=event.count or None,
            commit_seq=event.commit_seq,
            expires_at=event.expires_at,
        )

    def to_event(self, raw: dict[str, Any]) -> Event:
        """The event stored in ``raw`` (a DynamoDB item); `CorruptHistoryError` if it is not one."""
        try:
            item = self.model.from_raw_data(raw)
            body: bytes | str | None = item.text if item.text is not None else item.blob
            return Event(
                seq=parse_seq(item.seq),
                kind=item.kind,  # type: ignore[arg-type]
                codec=item.codec,
                body=body,
                parts=int(item.parts or 0),
                message_seq=None if item.message_seq is None else int(item.message_seq),
                count=int(item.covers or 0),
                commit_seq=None if item.commit_seq is None else int(item.commit_seq),
                writer=item.writer,
                expires_at=None if item.expires_at is None else int(item.expires_at),
                version=int(item.version),
            )
        except Exception as exc:
            key = {k: v for k, v in raw.items() if k in (self.hash_name, self.range_name)}
            raise CorruptHistoryError(f"unreadable event item: {exc!r}", key=key) from exc

    # -- reads ----------------------------------------------------------------------------------

    def select_events(
        self,
        session: str,
        *,
        newest_first: bool = True,
        below: int | None = None,
        page_size: int | None = None,
    ) -> Iterator[Event]:
        """Events of ``session`` (those numbered below ``below``), page by page."""
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
        """Sequence numbers of ``session``'s items, reading only their keys."""
        request = self._query(session, newest_first, below, page_size)
        request["ProjectionExpression"] = "#h, #r"
        request["ExpressionAttributeNames"]["#r"] = self.range_name
        for raw in self._pages(request):
            yield parse_seq(raw[self.range_name]["S"])

    def _query(
        self, session: str, newest_first: bool, below: int | None, page_size: int | None
    ) -> dict[str, Any]:
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "#h = :h",
            "ExpressionAttributeNames": {"#h": self.hash_name},
            "ExpressionAttributeValues": {":h": {"S": session}},
            "ScanIndexForward": not newest_first,
            "ConsistentRead": self.consistent_read,
        }
        if below is not None:
            request["KeyConditionExpression"] = "#h = :h AND #r < :r"
            request["ExpressionAttributeNames"]["#r"] = self.range_name
            request["ExpressionAttributeValues"][":r"] = {"S": format_seq(below)}
        if page_size:
            request["Limit"] = page_size
        return request

    def _pages(self, request: dict[str, Any]) -> Iterator[dict[str, Any]]:
        while True:
            page = self._call("Query", "query", **request)
            yield from page.get("Items", [])
            last = page.get("LastEvaluatedKey")
            if not last:
                return
            request["ExclusiveStartKey"] = last

    def last_seq(self, session: str) -> int | None:
        """The newest sequence number of ``session``, or None if it has no items."""
        for seq in self.select_seqs(session, page_size=1):
            return seq
        return None

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
        writers = {e.writer for e in events}
        try:
            if len(puts) == 1:
                self._call("PutItem", "put_item", **puts[0])
            else:
                self._call(
                    "TransactWriteItems",
                    "transact_write_items",
                    TransactItems=[{"Put": p} for p in puts],
                    ClientRequestToken=uuid.uuid4().hex,
                )
        except ClientError as exc:
            self._raise_conflict(exc, writers)

    def _raise_conflict(self, exc: ClientError, writers: set[str | None]) -> None:
        code = _code(exc)
        all_taken = True
        if code == "ConditionalCheckFailedException":
            found = [_response(exc).get("Item") or {}]
        elif code == "TransactionCanceledException":
            reasons: list[dict[str, Any]] = _response(exc).get("CancellationReasons") or []
            codes = {r.get("Code") for r in reasons} - {"None", None}
            if not codes <= {"ConditionalCheckFailed", "TransactionConflict"}:
                raise StorageError(f"transaction on {self.table_name!r} failed: {exc}") from exc
            if "TransactionConflict" in codes:
                raise SequenceTaken("another transaction was writing the same items") from exc
            found = [r.get("Item") or {} for r in reasons if r.get("Code") != "None"]
            all_taken = len(found) == len(reasons)
        else:
            raise StorageError(f"write to {self.table_name!r} failed: {exc}") from exc
        owners = {item.get(self.writer_name, {}).get("S") for item in found}
        if owners and owners <= writers and (code != "TransactionCanceledException" or all_taken):
            return  # our own write, applied before botocore retried it
        raise SequenceTaken("another writer holds this sequence number") from exc

    def delete_events(self, session: str, seqs: Iterable[int]) -> int:
        """Delete the items numbered ``seqs`` in batches of 25; return how many were deleted."""
        deleted = 0
        batch: list[int] = []
        for seq in seqs:
            batch.append(seq)
            if len(batch) == BATCH_ITEMS:
                deleted += self._delete_batch(session, batch)
                batch = []
        if batch:
            deleted += self._delete_batch(session, batch)
        return deleted

    def _delete_batch(self, session: str, seqs: list[int]) -> int:
        requests: list[dict[str, Any]] = [
            {"DeleteRequest": {"Key": self._key(session, s)}} for s in seqs
        ]
        for attempt in range(BATCH_ATTEMPTS):
            try:
                response = self._call(
                    "BatchWriteItem", "batch_write_item", RequestItems={self.table_name: requests}
                )
            except ClientError as exc:
                raise StorageError(f"batch delete on {self.table_name!r} failed: {exc}") from exc
            requests = response.get("UnprocessedItems", {}).get(self.table_name, [])
            if not requests:
                return len(seqs)
            time.sleep(min(2.0, 0.05 * 2**attempt) * random.random())
        raise StorageError(
            f"{len(requests)} items of session {session!r} were still unprocessed after"
            f" {BATCH_ATTEMPTS} attempts"
        )
