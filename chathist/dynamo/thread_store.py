"""The requests of a LangGraph thread's items, as steps (`chathist.core.steps`).

A thread item (`chathist.core.thread_keys` maps them) is its keys, a kind ``k``, a few small
attributes of its kind, and a payload: the serializer's type ``t`` and bytes ``x``. A payload
too large for one item is cut into part items (``<key>#p<n>``, kind ``p``, owner ``o``) and its
header says how many (``n``); the parts are always written before the header that names them,
so a reader that sees a header finds its parts. Writes go through the event store's batches
(`EventStore.write_batches`: 25 items a request, unprocessed ones resent on `BATCH_RETRY`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from chathist.core.sizes import ITEM_LIMIT, item_size
from chathist.core.steps import Steps, call
from chathist.core.thread_keys import chunks, part_key, parts_prefix
from chathist.dynamo.event_store import EventStore, until_processed
from chathist.dynamo.items import event_items
from chathist.dynamo.paging import Cursor
from chathist.errors import CorruptHistoryError, UnsupportedValueError

__all__ = ["BATCH_GET_KEYS", "RESERVED_NAMES", "Payload", "ThreadItem", "ThreadStore"]

BATCH_GET_KEYS: Final = 100
"""Most keys of one BatchGetItem."""
RESERVED_NAMES: Final = frozenset(
    {
        "k",
        "t",
        "x",
        "n",
        "o",
        "cid",
        "par",
        "run",
        "ns",
        "dl",
        "ch",
        "ver",
        "pv",
        "tid",
        "idx",
        "path",
        "sn",
        "sv",
    }
)
"""Attribute names of thread items; the table's key and TTL names must be none of these."""

Payload = tuple[str, bytes]
"""A serialized value: the serializer's type name and bytes (``SerializerProtocol``)."""


@dataclass
class ThreadItem:
    """One logical item of a thread as read: its raw header and its payload, if any."""

    raw: dict[str, Any]
    payload: Payload | None = None
    parts: list[bytes] = field(default_factory=list)

    def text(self, name: str) -> str | None:
        value = self.raw.get(name)
        return value.get("S") if isinstance(value, dict) else None

    def number(self, name: str) -> int | None:
        value = self.raw.get(name)
        return int(value["N"]) if isinstance(value, dict) and "N" in value else None

    @property
    def kind(self) -> str | None:
        return self.text("k")


class ThreadStore:
    """Reads and writes the items of threads in one table."""

    def __init__(
        self,
        table_name: str,
        *,
        hash_name: str = "SessionId",
        range_name: str = "SK",
        ttl_name: str = "expireAt",
        consistent_read: bool = True,
    ) -> None:
        self.table_name = table_name
        self.hash_name = hash_name
        self.range_name = range_name
        self.ttl_name = ttl_name
        self.consistent_read = consistent_read
        self.events = EventStore(
            event_items(table_name, hash_name, range_name, ttl_key_name=ttl_name),
            consistent_read=consistent_read,
        )

    # -- items ----------------------------------------------------------------------------------

    def items(
        self,
        partition: str,
        key: str,
        kind: str,
        payload: Payload | None,
        attrs: dict[str, Any],
        expires_at: int | None = None,
    ) -> list[dict[str, Any]]:
        """The wire items that store one logical item: its parts (if its payload does not fit
        one item) followed by its header."""
        base: dict[str, Any] = {
            self.hash_name: {"S": partition},
            self.range_name: {"S": key},
            "k": {"S": kind},
            **attrs,
        }
        if expires_at is not None:
            base[self.ttl_name] = {"N": str(expires_at)}
        if payload is None:
            return [base]
        type_name, data = payload
        header = dict(base, t={"S": type_name}, x={"B": data})
        if item_size(header) <= ITEM_LIMIT:
            return [header]
        header = dict(base, t={"S": type_name})
        probe = self._part(partition, key, 10**6 - 1, b"", expires_at)
        pieces = chunks(data, ITEM_LIMIT - item_size(probe) - 16)
        header["n"] = {"N": str(len(pieces))}
        if item_size(header) > ITEM_LIMIT:
            raise UnsupportedValueError(
                f"item {key!r} of {partition!r} is over DynamoDB's item limit without its payload"
            )
        parts = [self._part(partition, key, i, p, expires_at) for i, p in enumerate(pieces)]
        return [*parts, header]

    def _part(
        self, partition: str, key: str, index: int, data: bytes, expires_at: int | None
    ) -> dict[str, Any]:
        item: dict[str, Any] = {
            self.hash_name: {"S": partition},
            self.range_name: {"S": part_key(key, index)},
            "k": {"S": "p"},
            "o": {"S": key},
            "x": {"B": data},
        }
        if expires_at is not None:
            item[self.ttl_name] = {"N": str(expires_at)}
        return item

    def sort_key(self, raw: dict[str, Any]) -> str:
        return str(raw[self.range_name]["S"])

    def expired(self, raw: dict[str, Any], now: float) -> bool:
        """Whether ``raw``'s TTL has passed (DynamoDB deletes it only days later)."""
        value = raw.get(self.ttl_name)
        if not isinstance(value, dict) or "N" not in value:
            return False
        return float(value["N"]) <= now

    def assemble(self, raws: Iterable[dict[str, Any]]) -> dict[str, ThreadItem]:
        """Headers of ``raws`` by sort key, each with its payload put back together from the
        parts among ``raws``; a header whose parts are not all there is `CorruptHistoryError`."""
        headers: dict[str, ThreadItem] = {}
        parts: dict[str, dict[str, bytes]] = {}
        for raw in raws:
            if raw.get("k", {}).get("S") == "p":
                owner = raw["o"]["S"]
                parts.setdefault(owner, {})[self.sort_key(raw)] = raw["x"]["B"]
            else:
                headers[self.sort_key(raw)] = ThreadItem(raw)
        for key, item in headers.items():
            self.fill(item, parts.get(key, {}))
        return headers

    def fill(self, item: ThreadItem, parts: dict[str, bytes]) -> None:
        """Set ``item``'s payload from its inline bytes or ``parts`` (sort key -> bytes)."""
        raw = item.raw
        type_name = item.text("t")
        if type_name is None:
            return
        if "x" in raw:
            item.payload = (type_name, bytes(raw["x"]["B"]))
            return
        count = item.number("n") or 0
        ordered = [parts.get(part_key(self.sort_key(raw), i)) for i in range(count)]
        if any(p is None for p in ordered):
            raise CorruptHistoryError(
                f"thread item {self.sort_key(raw)!r}: {count} parts announced,"
                f" {sum(p is not None for p in ordered)} found",
                key={self.hash_name: raw[self.hash_name]["S"], self.range_name: self.sort_key(raw)},
            )
        item.payload = (type_name, b"".join(bytes(p) for p in ordered if p is not None))

    # -- reads ----------------------------------------------------------------------------------

    def query(
        self,
        partition: str,
        *,
        prefix: str | None = None,
        low: str | None = None,
        high: str | None = None,
        newest_first: bool = False,
        page_size: int | None = None,
        keys_only: bool = False,
    ) -> Cursor:
        """A query of ``partition``: the sort keys starting with ``prefix``, or between ``low``
        and ``high`` (inclusive)."""
        names = {"#h": self.hash_name, "#r": self.range_name}
        values: dict[str, Any] = {":h": {"S": partition}}
        if prefix == "":  # the whole partition
            condition = "#h = :h"
            del names["#r"]
        elif prefix is not None:
            condition = "#h = :h AND begins_with(#r, :p)"
            values[":p"] = {"S": prefix}
        else:
            condition = "#h = :h AND #r BETWEEN :lo AND :hi"
            values[":lo"] = {"S": low}
            values[":hi"] = {"S": high}
        params: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
            "ScanIndexForward": not newest_first,
            "ConsistentRead": self.consistent_read,
        }
        if keys_only:
            names["#r"] = self.range_name
            params["ProjectionExpression"] = "#h, #r"
        if page_size:
            params["Limit"] = page_size
        return Cursor("Query", params)

    def scan_threads(self, prefix: str) -> Cursor:
        """A scan of every thread item whose partition key starts with ``prefix``: the items
        of chat sessions sharing the table (even in a partition named like a thread's) are
        left out, as they have no kind ``k``."""
        return Cursor(
            "Scan",
            {
                "TableName": self.table_name,
                "FilterExpression": "begins_with(#h, :p) AND attribute_exists(#k)",
                "ExpressionAttributeNames": {"#h": self.hash_name, "#k": "k"},
                "ExpressionAttributeValues": {":p": {"S": prefix}},
                "ConsistentRead": self.consistent_read,
            },
        )

    def read_all(self, cursor: Cursor) -> Steps[list[dict[str, Any]]]:
        """Every item of ``cursor``'s pages."""
        found: list[dict[str, Any]] = []
        while (page := (yield from cursor.next_page())) is not None:
            found.extend(page)
        return found

    def get_items(self, partition: str, keys: Sequence[str]) -> Steps[dict[str, ThreadItem]]:
        """The items at ``keys`` that exist (BatchGetItem, resending unprocessed keys), with
        their payloads (a payload in parts costs one query more)."""
        raws: list[dict[str, Any]] = []
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), BATCH_GET_KEYS):
            chunk = unique[start : start + BATCH_GET_KEYS]
            request = {
                self.table_name: {
                    "Keys": [self.events.items.key(partition, k) for k in chunk],
                    "ConsistentRead": self.consistent_read,
                }
            }
            responses = yield from until_processed(
                "BatchGetItem", request, "UnprocessedKeys", f"keys of {partition!r}"
            )
            for response in responses:
                raws.extend(response.get("Responses", {}).get(self.table_name, []))
        headers = {self.sort_key(raw): ThreadItem(raw) for raw in raws}
        for key, item in headers.items():
            if item.payload is None and "x" not in item.raw and item.number("n"):
                parts = yield from self.read_all(self.query(partition, prefix=parts_prefix(key)))
                self.fill(item, {self.sort_key(p): p["x"]["B"] for p in parts})
            else:
                self.fill(item, {})
        return headers

    # -- writes ---------------------------------------------------------------------------------

    def write(self, partition: str, items: Sequence[dict[str, Any]]) -> Steps[int]:
        """Put ``items`` in batches (not atomic: only for items no reader trusts yet)."""
        requests = [{"PutRequest": {"Item": item}} for item in items]
        return (yield from self.events.write_batches(partition, requests))

    def put(self, item: dict[str, Any]) -> Steps[None]:
        """Put one item."""
        yield from call("PutItem", TableName=self.table_name, Item=item)

    def delete(self, partition: str, keys: Iterable[str]) -> Steps[int]:
        return (yield from self.events.delete_keys(partition, keys))
