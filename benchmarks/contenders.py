"""The contenders: chathist (event and list layouts), LangChain's class, and raw boto3.

Each contender gives `Handle`s (one per session and window size) with the same two operations,
``add(messages)`` and ``read()``, and reports its running `Usage` totals, so scenarios treat
them alike. chathist's capacity comes from ``history.consumed_capacity``; LangChain's and raw
boto3's from a botocore hook on their clients (`HookMeter`). Items read and conflicts come from
the hook for everybody.
"""

from __future__ import annotations

import inspect
import json
import threading
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import boto3
from botocore.exceptions import ClientError
from langchain_core.messages import BaseMessage, message_to_dict, messages_from_dict

import chathist
from benchmarks.meter import HookMeter, Usage
from chathist.dynamo.binding import Binding
from chathist.dynamo.client import client_for

TRANSACTION_ITEMS = 100


class Handle(Protocol):
    """One session as seen by one contender."""

    def add(self, messages: Sequence[BaseMessage]) -> None: ...

    def read(self) -> list[BaseMessage]: ...


@dataclass
class Contender:
    """Base: a named way of storing chat history on one table."""

    key: str
    label: str
    endpoint_url: str
    region: str
    table: str = ""
    available: bool = True
    note: str = ""
    meter: HookMeter = field(default_factory=HookMeter)

    def setup(self) -> None:
        """Create the contender's table."""
        raise NotImplementedError

    def open(self, session_id: str, history_size: int | None = None) -> Handle:
        raise NotImplementedError

    def usage(self) -> Usage:
        """Running totals of everything this contender's handles did."""
        return self.meter.total

    def describe(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "available": self.available,
            "note": self.note,
            "table": self.table,
        }


# -- chathist ---------------------------------------------------------------------------------


def list_layout_supported() -> bool:
    """True if this chathist's history constructor takes ``layout=``."""
    params = inspect.signature(chathist.DynamoDBChatMessageHistory.__init__).parameters
    return "layout" in params


@dataclass
class ChathistHandle:
    history: chathist.DynamoDBChatMessageHistory

    def add(self, messages: Sequence[BaseMessage]) -> None:
        self.history.add_messages(messages)

    def read(self) -> list[BaseMessage]:
        return self.history.messages


@dataclass
class Chathist(Contender):
    """chathist's ``DynamoDBChatMessageHistory`` (``layout`` None: the default event layout)."""

    layout: str | None = None
    histories: list[chathist.DynamoDBChatMessageHistory] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def setup(self) -> None:
        if self.layout is None:
            chathist.create_table(
                self.table, endpoint_url=self.endpoint_url, region_name=self.region
            )
        else:
            create_params = inspect.signature(chathist.create_table).parameters
            if "layout" in create_params:
                options: dict[str, Any] = {"layout": self.layout}
                chathist.create_table(
                    self.table, endpoint_url=self.endpoint_url, region_name=self.region, **options
                )
            else:
                create_hash_only_table(self.endpoint_url, self.region, self.table)
        client = client_for(Binding.resolve(self.table, self.endpoint_url, self.region))
        self.meter.attach(client, ask_for_capacity=False)

    def open(self, session_id: str, history_size: int | None = None) -> Handle:
        kwargs: dict[str, Any] = {
            "endpoint_url": self.endpoint_url,
            "region_name": self.region,
            "history_size": history_size,
        }
        if self.layout is not None:
            kwargs["layout"] = self.layout
        history = chathist.DynamoDBChatMessageHistory(self.table, session_id, **kwargs)
        self._attach_layout_clients(history)
        with self._lock:
            self.histories.append(history)
        return ChathistHandle(history)

    def _attach_layout_clients(self, history: Any) -> None:
        """The list layout may use another client than the event model's: meter it too."""
        for name in ("client", "_client"):
            client = getattr(getattr(history, "_store", None), name, None)
            if client is not None and hasattr(client, "meta"):
                self.meter.attach(client, ask_for_capacity=False)

    def usage(self) -> Usage:
        with self._lock:
            histories = list(self.histories)
        reads = writes = 0.0
        requests = 0
        for history in histories:
            total = history.consumed_capacity
            reads += total.read_units
            writes += total.write_units
            requests += total.requests
        hooked = self.meter.total
        return Usage(reads, writes, requests, hooked.items, hooked.conflicts, hooked.tx_repriced)

    def hook_usage(self) -> Usage:
        """The hook's view of the same requests (a cross-check of chathist's meter)."""
        return self.meter.total


# -- LangChain ----------------------------------------------------------------------------------


def create_hash_only_table(endpoint_url: str, region: str, table: str) -> None:
    """The table LangChain's class expects: hash key ``SessionId`` only, on-demand."""
    client = boto3.client("dynamodb", endpoint_url=endpoint_url, region_name=region)
    client.create_table(
        TableName=table,
        AttributeDefinitions=[{"AttributeName": "SessionId", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "SessionId", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    client.get_waiter("table_exists").wait(TableName=table)


@dataclass
class LangChainHandle:
    history: Any

    def add(self, messages: Sequence[BaseMessage]) -> None:
        self.history.add_messages(messages)

    def read(self) -> list[BaseMessage]:
        messages: list[BaseMessage] = self.history.messages
        return messages


def _langchain_class() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from langchain_community.chat_message_histories import DynamoDBChatMessageHistory
    return DynamoDBChatMessageHistory


@dataclass
class LangChain(Contender):
    """langchain-community's ``DynamoDBChatMessageHistory``: one item per session."""

    def setup(self) -> None:
        create_hash_only_table(self.endpoint_url, self.region, self.table)

    def open(self, session_id: str, history_size: int | None = None) -> Handle:
        history = _langchain_class()(
            self.table, session_id, endpoint_url=self.endpoint_url, history_size=history_size
        )
        self.meter.attach(history.table.meta.client, ask_for_capacity=True)
        return LangChainHandle(history)


# -- raw boto3 ----------------------------------------------------------------------------------


def encode(message: BaseMessage) -> str:
    """The payload text chathist stores for a small message (compact JSON of message_to_dict)."""
    return json.dumps(message_to_dict(message), separators=(",", ":"), ensure_ascii=False)


def raw_item(session: str, seq: int, writer: str, payload: str) -> dict[str, Any]:
    """The item the raw floors store for one message: what chathist stores (format v1)."""
    return {
        "SessionId": {"S": session},
        "SK": {"S": f"{seq:020d}"},
        "event": {"S": "message"},
        "v": {"N": "1"},
        "w": {"S": writer},
        "codec": {"S": "json"},
        "History": {"S": payload},
    }


@dataclass
class RawHandle:
    """The floor: conditional ``put_item`` per message (a transaction for several), a paged
    ``query`` loop plus ``messages_from_dict`` for reads; items shaped like chathist's."""

    client: Any
    table: str
    session_id: str
    history_size: int | None
    next_seq: int | None = None
    writer: str = field(default_factory=lambda: uuid.uuid4().hex)

    def _item(self, seq: int, message: BaseMessage) -> dict[str, Any]:
        return raw_item(self.session_id, seq, self.writer, encode(message))

    def _last_seq(self) -> int:
        page = self.client.query(
            TableName=self.table,
            KeyConditionExpression="SessionId = :s",
            ExpressionAttributeValues={":s": {"S": self.session_id}},
            ProjectionExpression="SK",
            ScanIndexForward=False,
            ConsistentRead=True,
            Limit=1,
        )
        items = page.get("Items", [])
        return int(items[0]["SK"]["S"]) if items else -1

    def add(self, messages: Sequence[BaseMessage]) -> None:
        while True:
            if self.next_seq is None:
                self.next_seq = self._last_seq() + 1
            start = self.next_seq
            items = [self._item(start + i, m) for i, m in enumerate(messages)]
            try:
                if len(items) == 1:
                    self.client.put_item(
                        TableName=self.table,
                        Item=items[0],
                        ConditionExpression="attribute_not_exists(SK)",
                    )
                else:
                    for low in range(0, len(items), TRANSACTION_ITEMS):
                        chunk = items[low : low + TRANSACTION_ITEMS]
                        self.client.transact_write_items(
                            TransactItems=[
                                {
                                    "Put": {
                                        "TableName": self.table,
                                        "Item": item,
                                        "ConditionExpression": "attribute_not_exists(SK)",
                                    }
                                }
                                for item in chunk
                            ]
                        )
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                if code in ("ConditionalCheckFailedException", "TransactionCanceledException"):
                    self.next_seq = None  # another writer took it: find the end, try again
                    continue
                raise
            self.next_seq = start + len(items)
            return

    def read(self) -> list[BaseMessage]:
        request: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "SessionId = :s",
            "ExpressionAttributeValues": {":s": {"S": self.session_id}},
            "ConsistentRead": True,
            "ScanIndexForward": self.history_size is None,
        }
        if self.history_size:
            request["Limit"] = self.history_size
        dicts: list[dict[str, Any]] = []
        while True:
            page = self.client.query(**request)
            dicts.extend(json.loads(item["History"]["S"]) for item in page.get("Items", []))
            last = page.get("LastEvaluatedKey")
            if not last or self.history_size:
                break
            request["ExclusiveStartKey"] = last
        if self.history_size:
            dicts.reverse()
        return messages_from_dict(dicts)


@dataclass
class RawBoto3(Contender):
    """No library: one shared boto3 client."""

    client: Any = None

    def setup(self) -> None:
        chathist.create_table(self.table, endpoint_url=self.endpoint_url, region_name=self.region)
        self.client = boto3.client(
            "dynamodb", endpoint_url=self.endpoint_url, region_name=self.region
        )
        self.meter.attach(self.client, ask_for_capacity=True)

    def open(self, session_id: str, history_size: int | None = None) -> Handle:
        return RawHandle(self.client, self.table, session_id, history_size)


def build_contenders(endpoint_url: str, region: str, prefix: str) -> list[Contender]:
    """All four contenders; the list layout is marked unavailable if chathist lacks it."""
    event = Chathist(
        "chathist-event", "chathist (event layout)", endpoint_url, region, table=f"{prefix}-event"
    )
    listed = Chathist(
        "chathist-list",
        "chathist (list layout)",
        endpoint_url,
        region,
        table=f"{prefix}-list",
        layout="list",
    )
    if not list_layout_supported():
        listed.available = False
        listed.note = "this chathist has no layout= option yet (DynamoDBChatMessageHistory)"
    langchain = LangChain(
        "langchain",
        "LangChain DynamoDBChatMessageHistory",
        endpoint_url,
        region,
        table=f"{prefix}-langchain",
    )
    raw = RawBoto3("raw-boto3", "raw boto3 (floor)", endpoint_url, region, table=f"{prefix}-raw")
    return [event, listed, langchain, raw]
