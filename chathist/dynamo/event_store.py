"""The event store: the requests of the event layout, as steps (`chathist.core.steps`).

Two verbs carry the design: `EventStore.insert_events` writes one planned request (a conditional
put, or a transaction of conditional puts) and `EventStore.sequence` reads a session's sequence
(newest or oldest first, page by page). The rest serves clear and repair: the small projections
(`kinds`, `stage_keys`), the newest event, and batch writes. A sort key another writer already
holds raises `SequenceTaken`; a request botocore resent after DynamoDB had applied it is
recognised by the writer id its items carry, and counts as done.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any, Final

from chathist.core.events import MAX_SEQ, Event, format_seq, parse_key, parse_seq, stage_prefix
from chathist.core.retry import RetryRule
from chathist.core.sizes import BATCH_ITEMS
from chathist.core.steps import Steps, call, sleep
from chathist.dynamo.encryption import Encryption, OpeningCursor
from chathist.dynamo.items import EventItems, stray_key
from chathist.dynamo.paging import Cursor
from chathist.dynamo.translate import ConditionFailed, TransactionCanceled
from chathist.errors import ChatHistoryError, CorruptHistoryError, StorageError

__all__ = [
    "BATCH_RETRY",
    "PLAIN_NAMES",
    "UNKNOWN_EXPIRY",
    "EventStore",
    "SequenceTaken",
    "until_processed",
]

BATCH_RETRY = RetryRule(attempts=10)
"""Resends of a batch's unprocessed items (with backoff) before `StorageError`."""
UNKNOWN_EXPIRY = 0
"""The expiry of an event whose item was not seen: treated as expiring, long expired."""


def until_processed(
    operation: str, request: dict[str, Any], unprocessed: str, what: str
) -> Steps[list[dict[str, Any]]]:
    """Send a batch request (its ``RequestItems``), then resend what the response leaves
    under ``unprocessed``, with backoff, under `BATCH_RETRY`; return every response.
    `StorageError` (naming ``what``) if some of it is still unprocessed."""
    responses: list[dict[str, Any]] = []
    attempts = BATCH_RETRY.start()
    pending = request
    for attempt in attempts:
        response = yield from call(operation, RequestItems=pending)
        responses.append(response)
        pending = response.get(unprocessed) or {}
        if not any(pending.values()):
            return responses
        yield from sleep(RetryRule.backoff(attempt))
    count = sum(len(v.get("Keys", v) if isinstance(v, dict) else v) for v in pending.values())
    raise StorageError(f"{count} {what} were still unprocessed ({attempts.spent})")


class SequenceTaken(ChatHistoryError):
    """Another writer already stored an event at a sequence number this write wanted.

    ``taken`` is the highest sequence number known to be taken; ``expires`` the expiry of the
    event found there (None: it never expires; `UNKNOWN_EXPIRY` if DynamoDB did not return it).
    """

    def __init__(self, message: str, taken: int, expires: int | None = UNKNOWN_EXPIRY) -> None:
        super().__init__(message)
        self.taken = taken
        self.expires = expires


_FIRST_KEY: Final = format_seq(0)
_LAST_KEY: Final = format_seq(MAX_SEQ)


PLAIN_NAMES: Final = frozenset(
    {"SessionId", "SK", "History", "expireAt", "event", "v", "w", "codec", "parts", "msg"}
    | {"stage", "px", "enc"}
)
"""Attribute names (the defaults and chathist's own) that are no DynamoDB reserved word, so an
expression may spell them out (``blob``, ``count`` and ``at`` are reserved). A reader's
projection and a put's condition alias only the other names: DynamoDB Local parses them sooner
(docs/design.md, "Reading")."""


def _projection(names: Iterable[str]) -> tuple[dict[str, str], str]:
    """A ``ProjectionExpression`` of ``names`` and its ``ExpressionAttributeNames`` (the
    names not in `PLAIN_NAMES`, aliased)."""
    aliases: dict[str, str] = {}
    spelled: list[str] = []
    for i, name in enumerate(names):
        if name in PLAIN_NAMES:
            spelled.append(name)
        else:
            aliases[f"#p{i}"] = name
            spelled.append(f"#p{i}")
    return aliases, ", ".join(spelled)


def _writer_of(item: Any, writer_name: str) -> str | None:
    """The writer id stored in a raw item (returned with a failed condition), if any."""
    if not isinstance(item, dict):
        return None
    value = item.get(writer_name)
    return value.get("S") if isinstance(value, dict) else None


class EventStore:
    """Reads and writes the events of one table."""

    def __init__(
        self,
        items: EventItems,
        *,
        consistent_read: bool = True,
        encryption: Encryption | None = None,
    ) -> None:
        self.items = items
        self.encryption = encryption if encryption is not None else Encryption(items)
        """Seals payloads before they are written (if configured) and opens sealed items as
        they are read (always), so everything else handles plaintext items."""
        self.consistent_read = consistent_read
        self.table_name = items.table_name
        self.hash_name = items.hash_name
        self.range_name = items.range_name
        self.writer_name = items.names["writer"]
        self._key_is_free: dict[str, Any] = (
            {"ConditionExpression": f"attribute_not_exists({self.range_name})"}
            if self.range_name in PLAIN_NAMES
            else {
                "ConditionExpression": "attribute_not_exists(#r)",
                "ExpressionAttributeNames": {"#r": self.range_name},
            }
        )
        """A put's condition that its item's key is free (shared by every put request: no
        request is changed once built)."""
        # A reader's projection: not the partition key (the cursor puts it back), nor the
        # staging time (only staged events, outside the sequence, carry one), nor (unless
        # asked for) the write ids.
        unread = {self.hash_name, items.names["staged_at"]}
        self._tail_queries: dict[bool, dict[str, Any]] = {}
        """The reader's query but its key values, with and without write ids (`tail`)."""
        for writers in (False, True):
            aliases, expression = _projection(
                n
                for n in items.attribute_names
                if n not in unread and (writers or n != self.writer_name)
            )
            query = self._sequence_query("")
            query["ExpressionAttributeNames"].update(aliases)
            query["ProjectionExpression"] = expression
            self._tail_queries[writers] = query

    # -- reads ----------------------------------------------------------------------------------

    def sequence(
        self,
        session: str,
        *,
        newest_first: bool = True,
        below: int | None = None,
        page_size: int | None = None,
        projection: Sequence[str] = (),
    ) -> Cursor:
        """A query of ``session``'s sequence (events numbered below ``below``; never the staged
        keys, which sort before it); ``projection`` limits it to these attribute names."""
        params = self._sequence_query(session, newest_first, below)
        self._project(params, projection)
        if page_size:
            params["Limit"] = page_size
        return OpeningCursor(
            "Query", params, self.encryption, empty=below is not None and below <= 0
        )

    def _sequence_query(
        self, session: str, newest_first: bool = True, below: int | None = None
    ) -> dict[str, Any]:
        high = _LAST_KEY if below is None else format_seq(max(below - 1, 0))
        return {
            "TableName": self.table_name,
            "KeyConditionExpression": "#h = :h AND #r BETWEEN :low AND :high",
            "ExpressionAttributeNames": {"#h": self.hash_name, "#r": self.range_name},
            "ExpressionAttributeValues": {
                ":h": {"S": session},
                ":low": {"S": _FIRST_KEY},
                ":high": {"S": high},
            },
            "ScanIndexForward": not newest_first,
            "ConsistentRead": self.consistent_read,
        }

    def tail(self, session: str, *, writers: bool = False) -> Cursor:
        """The reader's query of ``session``'s sequence, newest first (`sequence`), asking for
        every attribute an event needs but the partition key (which the cursor puts back) and,
        unless ``writers``, the write id (an event read without it has ``writer`` None; only a
        clear's is ever used by a reader: `TailFold.cleared_by`): botocore parses each
        attribute of each item, and DynamoDB Local copies it (docs/design.md, "Reading")."""
        params = {  # (the names are shared: nothing changes a request's names once built)
            **self._tail_queries[writers],
            "ExpressionAttributeValues": {
                ":h": {"S": session},
                ":low": {"S": _FIRST_KEY},
                ":high": {"S": _LAST_KEY},
            },
        }
        return OpeningCursor("Query", params, self.encryption, restore=(self.hash_name, session))

    def staged(
        self, session: str, stage: str | None = None, *, page_size: int | None = None
    ) -> Cursor:
        """A query of the staged events of ``stage`` (newest first), or, with no stage, of
        every staged item's key and staging time."""
        prefix = "!" if stage is None else stage_prefix(stage)
        params: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "#h = :h AND begins_with(#r, :p)",
            "ExpressionAttributeNames": {"#h": self.hash_name, "#r": self.range_name},
            "ExpressionAttributeValues": {":h": {"S": session}, ":p": {"S": prefix}},
            "ConsistentRead": self.consistent_read,
            "ScanIndexForward": stage is None,
        }
        if stage is None:
            self._project(params, [self.items.names["staged_at"]])
        if page_size:
            params["Limit"] = page_size
        return OpeningCursor("Query", params, self.encryption)

    def _project(self, params: dict[str, Any], names: Sequence[str]) -> None:
        if not names:
            return
        aliases, expression = _projection(names)
        params["ExpressionAttributeNames"].update(aliases)
        params["ProjectionExpression"] = "#h, #r, " + expression

    def event(self, raw: dict[str, Any]) -> Event:
        """The event of a raw item (`CorruptHistoryError` naming it if it is not one)."""
        return self.items.to_event(raw)

    def seq_of(self, raw: dict[str, Any]) -> int:
        """The sequence number of a raw sequence item (`CorruptHistoryError` if its key is not
        a sequence number)."""
        key = raw.get(self.range_name, {}).get("S")
        try:
            return parse_seq(key)
        except (TypeError, ValueError) as exc:
            raise stray_key(key, self.items.key_of(raw)) from exc

    def stage_of(self, raw: dict[str, Any]) -> tuple[str, str, int | None]:
        """(sort key, stage, staged_at) of a raw staged item."""
        key = raw.get(self.range_name, {}).get("S", "")
        staged_at = raw.get(self.items.names["staged_at"], {}).get("N")
        try:
            stage, _ = parse_key(key)
            return key, str(stage), None if staged_at is None else int(staged_at)
        except ValueError as exc:
            raise CorruptHistoryError(
                f"sort key {key!r} is not a staged event's key, or its staging time"
                f" {staged_at!r} is not whole seconds",
                key=self.items.key_of(raw),
            ) from exc

    def expiry_of(self, raw: Any) -> int | None:
        """The expiry of a raw item (None: it never expires; `UNKNOWN_EXPIRY` if there is no
        item, or its expiry is no whole number)."""
        if not isinstance(raw, dict):
            return UNKNOWN_EXPIRY
        value = raw.get(self.items.names["expires_at"])
        if value is None:
            return None
        try:
            return int(value["N"])
        except (TypeError, KeyError, ValueError):
            return UNKNOWN_EXPIRY

    def newest(self, session: str) -> Steps[tuple[int, str | None, int | None] | None]:
        """(sequence number, writer id, expiry) of the newest event of ``session``, or None."""
        expiry_name = self.items.names["expires_at"]
        cursor = self.sequence(session, page_size=1, projection=[self.writer_name, expiry_name])
        page = yield from cursor.next_page()
        if not page:
            return None
        raw = page[0]
        return self.seq_of(raw), _writer_of(raw, self.writer_name), self.expiry_of(raw)

    def writer_of(self, session: str, seq: int) -> Steps[str | None]:
        """The writer id of the event numbered ``seq``, or None if there is no such event."""
        response = yield from call(
            "GetItem",
            TableName=self.table_name,
            Key=self.items.key(session, format_seq(seq)),
            ProjectionExpression="#w",
            ExpressionAttributeNames={"#w": self.writer_name},
            ConsistentRead=True,
        )
        return _writer_of(response.get("Item"), self.writer_name)

    # -- writes ---------------------------------------------------------------------------------

    def put_request(self, session: str, event: Event) -> dict[str, Any]:
        """A conditional put of ``event``: only where its key is free; if it is not, the
        answer holds the item there (which write holds the number, and until when)."""
        return {
            "TableName": self.table_name,
            "Item": self.items.to_item(session, event),
            **self._key_is_free,
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }

    def insert_events(
        self, session: str, events: Sequence[Event], extra: Sequence[dict[str, Any]] = ()
    ) -> Steps[None]:
        """Store ``events`` all or nothing, each only where its sort key is free, together with
        the ``extra`` transaction actions (a lazy migration's retirement of the legacy item).

        Raises `SequenceTaken` if another writer holds one of the keys; `TransactionCanceled`
        if one of ``extra``'s conditions failed.
        """
        if not events and not extra:
            return
        puts = [self.put_request(session, e) for e in events]
        if self.encryption.seals:
            yield from self.encryption.seal(session, [p["Item"] for p in puts])
        try:
            if len(puts) == 1 and not extra:
                yield from call("PutItem", **puts[0])
            else:
                yield from call(
                    "TransactWriteItems",
                    TransactItems=[*({"Put": p} for p in puts), *extra],
                    ClientRequestToken=uuid.uuid4().hex,
                )
        except ConditionFailed as failed:
            self._settle([{"Code": "ConditionalCheckFailed", "Item": failed.item}], events, failed)
        except TransactionCanceled as canceled:
            self._settle(canceled.reasons[: len(events)], events, canceled, canceled.reasons)

    def _settle(
        self,
        reasons: Sequence[Any],
        events: Sequence[Event],
        error: ChatHistoryError,
        all_reasons: Sequence[Any] | None = None,
    ) -> None:
        """Decide what a refused write means: our own write already applied (return), a lost
        race (`SequenceTaken`), or anything else (re-raise)."""
        every = list(all_reasons if all_reasons is not None else reasons)
        codes = {r.get("Code") for r in every} - {"None", None}
        if not codes or not codes <= {"ConditionalCheckFailed", "TransactionConflict"}:
            raise StorageError(f"write to {self.table_name!r} failed: {error}") from error
        taken = [i for i, r in enumerate(reasons) if r.get("Code") == "ConditionalCheckFailed"]
        ours = {e.writer for e in events}
        owners = {_writer_of(reasons[i].get("Item"), self.writer_name) for i in taken}
        if events and len(taken) == len(events) and owners <= ours:
            # Our own write, applied before it was resent: every event is there under our id.
            # A transaction is atomic, so its other actions (a lazy migration's retirement of
            # the legacy item, whose condition now fails) were applied with them.
            return
        extra_failed = any(r.get("Code") == "ConditionalCheckFailed" for r in every[len(events) :])
        if extra_failed:
            raise error
        highest = events[max(taken)].seq if taken else events[0].seq - 1
        if "TransactionConflict" in codes:
            raise SequenceTaken(
                "another transaction was writing the same items", highest
            ) from error
        found = reasons[max(taken)].get("Item") if taken else None
        raise SequenceTaken(
            "another writer holds this sequence number", highest, self.expiry_of(found)
        ) from error

    def delete_keys(self, session: str, keys: Iterable[str]) -> Steps[int]:
        """Delete the items with sort keys ``keys``, in batches; return how many."""
        requests = [{"DeleteRequest": {"Key": self.items.key(session, k)}} for k in keys]
        return (yield from self.write_batches(session, requests))

    def erase(self, session: str, seqs: Iterable[int], *, expires_at: int | None) -> Steps[int]:
        """Overwrite the events numbered ``seqs`` with content-free ``erased`` events, in
        batches; return how many. Their numbers stay taken."""
        requests = [
            {"PutRequest": {"Item": self.items.to_item(session, marker)}}
            for marker in (Event(s, "erased", expires_at=expires_at) for s in seqs)
        ]
        return (yield from self.write_batches(session, requests))

    def write_batches(self, session: str, requests: Sequence[dict[str, Any]]) -> Steps[int]:
        """Send ``requests`` (put or delete requests) in batches of `BATCH_ITEMS`, resending
        unprocessed ones under `BATCH_RETRY`; return how many."""
        for start in range(0, len(requests), BATCH_ITEMS):
            pending = list(requests[start : start + BATCH_ITEMS])
            yield from until_processed(
                "BatchWriteItem",
                {self.table_name: pending},
                "UnprocessedItems",
                f"items of session {session!r}",
            )
        return len(requests)
