"""Isolation and logging, against DynamoDB Local.

Session ids that are prefixes of one another or contain separators (``#``, ``::``, ``/``, ...)
never see each other's messages, not even while written at once or after one is cleared; expired
messages are never returned; and nothing is logged at INFO or above that holds message content or
credentials, while everything (botocore's own DEBUG output included) is captured.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from langchain_core.messages import AIMessage, HumanMessage

from chathist import (
    CorruptHistoryError,
    DynamoDBChatMessageHistory,
    UnsupportedValueError,
)
from tests.reliability import install, record

SECTION = "isolation"
EVENTS: dict[str, Any] = (
    {"layout": "events"}
    if "layout" in inspect.signature(DynamoDBChatMessageHistory).parameters
    else {}
)


@pytest.fixture(scope="session", autouse=True)
def _reliability_report(request: pytest.FixtureRequest) -> None:
    install(request)


@pytest.fixture
def history_factory(
    table_name: str, dynamodb_endpoint: str | None, dynamodb_region: str | None
) -> Callable[..., DynamoDBChatMessageHistory]:
    def make(session: str, **options: Any) -> DynamoDBChatMessageHistory:
        return DynamoDBChatMessageHistory(
            table_name,
            session,
            endpoint_url=dynamodb_endpoint,
            region_name=dynamodb_region,
            **{**EVENTS, **options},
        )

    return make


NEIGHBOURS = [
    "a",
    "a#",
    "a#b",
    "a#b#c",
    "a:",
    "a::b",
    "a::",
    "a/b",
    "a/",
    "a\\b",
    "a b",
    "a\tb",
    "a|b",
    "a.b",
    "a%23b",
    "ab",
    "A",
    "a ",
    " a",
    "a\u200b",  # zero-width space
    "é",  # composed
    "e\u0301",  # decomposed: another key for DynamoDB, another session
    "user#1",
    "user#10",
    "user#1#",
    "00000000000000000001",
    "SessionId",
    "*",
]


def test_neighbouring_session_ids_never_see_each_other(
    history_factory: Callable[..., DynamoDBChatMessageHistory],
) -> None:
    """Each of many look-alike sessions is written from its own thread at once; each reads back
    exactly its own messages (whole and windowed), also after a neighbour was cleared."""
    test = "look-alike session ids written at once"
    errors: list[BaseException] = []

    def write(session: str) -> None:
        try:
            history = history_factory(session)
            history.add_message(HumanMessage(f"{session}|0"))
            history.add_messages([AIMessage(f"{session}|1"), HumanMessage(f"{session}|2")])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(s,)) for s in NEIGHBOURS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    leaks = 0
    for session in NEIGHBOURS:
        seen = [str(m.content) for m in history_factory(session).messages]
        leaks += sum(1 for c in seen if c.rsplit("|", 1)[0] != session)
        assert seen == [f"{session}|{i}" for i in range(3)], session
        window = [str(m.content) for m in history_factory(session, history_size=1).messages]
        assert window == [f"{session}|2"], session
    history_factory("a").clear()
    history_factory("user#1").clear()
    for session in NEIGHBOURS:
        seen = [str(m.content) for m in history_factory(session).messages]
        wanted = [] if session in ("a", "user#1") else [f"{session}|{i}" for i in range(3)]
        leaks += sum(1 for c in seen if c.rsplit("|", 1)[0] != session)
        assert seen == wanted, session
    record(SECTION, test, "sessions", len(NEIGHBOURS))
    record(SECTION, test, "messages", 3 * len(NEIGHBOURS))
    record(SECTION, test, "leaks", leaks)


def test_expired_messages_are_never_returned(
    history_factory: Callable[..., DynamoDBChatMessageHistory],
    table_name: str,
    boto3_client: Any,
) -> None:
    """An item past its TTL is skipped by every read, before DynamoDB deletes it and after
    (a gap left by TTL is not corruption); clear()'s tombstone never expires."""
    test = "expired messages"
    history = history_factory("ttl", ttl=3600)
    for i in range(4):  # one item each (one call's messages would share an item)
        history.add_message(HumanMessage(f"t{i}"))
    key = {"SessionId": {"S": "ttl"}, "SK": {"S": f"{1:020d}"}}
    boto3_client.update_item(
        TableName=table_name,
        Key=key,
        UpdateExpression="SET expireAt = :past",
        ExpressionAttributeValues={":past": {"N": str(int(time.time()) - 60)}},
    )
    assert [m.content for m in history_factory("ttl").messages] == ["t0", "t2", "t3"]
    assert [m.content for m in history_factory("ttl", history_size=3).messages] == [
        "t0",
        "t2",
        "t3",
    ]
    boto3_client.delete_item(TableName=table_name, Key=key)  # what TTL does, days later
    assert [m.content for m in history_factory("ttl").messages] == ["t0", "t2", "t3"]
    history.clear()
    items = boto3_client.query(
        TableName=table_name,
        KeyConditionExpression="SessionId = :s",
        ExpressionAttributeValues={":s": {"S": "ttl"}},
        ConsistentRead=True,
    )["Items"]
    assert [i["event"]["S"] for i in items] == ["erased"] * 3 + ["clear"]  # 1 was deleted
    assert "expireAt" not in items[-1]  # the tombstone, forever
    assert not any("History" in i for i in items)  # nothing of a message is left
    record(SECTION, test, "expired messages returned", 0)
    record(SECTION, test, "sessions", 1)


# -- logging ---------------------------------------------------------------------------------------

LOGGERS = ("chathist", "botocore", "boto3", "pynamodb", "urllib3")


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[tuple[int, str]] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.levelno, self.format(record)))


@pytest.fixture
def all_logs() -> Iterator[_Collect]:
    """Every record of chathist, botocore, boto3, PynamoDB and urllib3, at DEBUG and above."""
    handler = _Collect()
    saved = []
    for name in LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level))
        logger.setLevel(logging.DEBUG)
        logger.addHandler(handler)
    try:
        yield handler
    finally:
        for logger, level in saved:
            logger.removeHandler(handler)
            logger.setLevel(level)


def test_nothing_secret_is_logged_at_info_or_above(
    table_name: str,
    dynamodb_endpoint: str | None,
    dynamodb_region: str | None,
    boto3_client: Any,
    all_logs: _Collect,
) -> None:
    """Message content and credentials appear in no record at INFO or above, across appends,
    reads, windows, clear, refused messages, retried faults and corrupt items."""
    test = "no secrets in logs"
    if dynamodb_endpoint is None:
        pytest.skip("needs DynamoDB Local: it accepts made-up credentials")
    content = f"CONTENTSECRET{uuid.uuid4().hex}"
    access_key = f"AKIDMARKER{uuid.uuid4().hex[:12].upper()}"
    secret_key = f"SECRETKEYMARKER{uuid.uuid4().hex}"
    credentials = boto3.Session(
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=dynamodb_region or "us-east-1",
    )

    def history(**options: Any) -> DynamoDBChatMessageHistory:
        return DynamoDBChatMessageHistory(
            table_name,
            "logged",
            endpoint_url=dynamodb_endpoint,
            boto3_session=credentials,
            **{**EVENTS, **options},
        )

    writer = history()
    writer.add_message(HumanMessage(content, additional_kwargs={"note": content}))
    writer.add_messages([AIMessage(content), HumanMessage(f"{content}-2")])
    assert len(history().messages) == 3
    assert len(history(history_size=1).messages) == 1
    with pytest.raises(UnsupportedValueError):
        writer.add_message(HumanMessage(content, additional_kwargs={"x": float("nan")}))
    # A server error, retried by botocore (with its DEBUG logging of the retry).
    events = writer.client.meta.events
    failures = [1]

    def fail_once(request: Any, **_: Any) -> Any:
        from botocore.awsrequest import AWSResponse

        if not failures:
            return None
        failures.pop()

        class _Raw:
            def stream(self, **_: Any) -> Iterator[bytes]:
                yield b'{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError"}'

        return AWSResponse(request.url, 500, {}, _Raw())

    events.register_first("before-send.dynamodb.PutItem", fail_once)
    try:
        writer.add_message(HumanMessage(f"{content}-retried"))
    finally:
        events.unregister("before-send.dynamodb.PutItem", fail_once)
    # A corrupt item whose payload holds the secret.
    boto3_client.update_item(
        TableName=table_name,
        Key={"SessionId": {"S": "logged"}, "SK": {"S": f"{0:020d}"}},
        UpdateExpression="SET codec = :c",
        ExpressionAttributeValues={":c": {"S": f"bad-{content}"}},
    )
    with pytest.raises(CorruptHistoryError):
        history().messages  # noqa: B018
    writer.clear()
    assert history().messages == []

    loud = [text for level, text in all_logs.records if level >= logging.INFO]
    quiet = [text for level, text in all_logs.records if level < logging.INFO]
    leaked = [t for t in loud if content in t or access_key in t or secret_key in t]
    record(SECTION, test, "log records checked", len(all_logs.records))
    record(SECTION, test, "records at INFO or above", len(loud))
    record(SECTION, test, "secrets at INFO+", len(leaked))
    assert not leaked, leaked[:3]
    # The capture works: the content does reach botocore's DEBUG output (request bodies).
    assert any(content in t for t in quiet)
    # The secret key appears nowhere, not even at DEBUG.
    assert not any(secret_key in t for _, t in all_logs.records)
