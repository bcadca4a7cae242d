"""Interoperability with langchain-community's DynamoDBChatMessageHistory, both ways.

LangChain's class builds its own boto3 resource from ``endpoint_url``; the credentials the
``dynamodb_endpoint`` fixture put in the environment apply to it.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    message_to_dict,
)

from chathist import DynamoDBChatMessageHistory
from chathist.core.listformat import from_dynamodb_numbers
from tests.helpers import list_table_named
from tests.test_codec import every_message_type
from tests.test_list_layout import decimals_in, dumped, raw_item

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from langchain_community.chat_message_histories import (
        DynamoDBChatMessageHistory as LangChainHistory,
    )


@dataclass(frozen=True)
class Case:
    """One way of configuring both classes, on a table of the given key schema."""

    name: str
    hash_key: str = "SessionId"
    range_key: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    messages: tuple[BaseMessage, ...] = ()

    def key(self, session: str) -> dict[str, str]:
        key = self.options.get("key")
        return dict(key) if key else {self.hash_key: session}


def conversation() -> tuple[BaseMessage, ...]:
    return (
        SystemMessage("be brief"),
        HumanMessage("what is 6 x 7?", id="h1"),
        AIMessage(
            "",
            tool_calls=[{"name": "multiply", "args": {"a": 6, "b": 7}, "id": "call-1"}],
            usage_metadata={"input_tokens": 12, "output_tokens": 5, "total_tokens": 17},
        ),
        ToolMessage("42", tool_call_id="call-1", name="multiply"),
        AIMessage("42 ✓ 你好", id="a2", response_metadata={"finish_reason": "stop"}),
    )


CASES = [
    Case("default", messages=conversation()),
    Case("primary_key_name", hash_key="Id", options={"primary_key_name": "Id"}),
    Case(
        "composite_key",
        hash_key="PK",
        range_key="SK",
        options={"key": {"PK": "session_id::0", "SK": "langchain_history"}},
        messages=conversation(),
    ),
    Case("history_messages_key", options={"history_messages_key": "Messages"}),
    Case("ttl", options={"ttl": 3600, "ttl_key_name": "expiresAt"}),
    Case(
        "floats",
        options={"coerce_float_to_decimal": True},
        messages=tuple(every_message_type()),
    ),
    Case("history_size", options={"history_size": 3}, messages=conversation()),
]


def _messages(case: Case) -> list[BaseMessage]:
    return list(case.messages) or [HumanMessage("hi!"), AIMessage("whats up?")]


@pytest.fixture(params=CASES, ids=lambda c: c.name)
def case(request: pytest.FixtureRequest) -> Case:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def table(case: Case, boto3_client: Any) -> Iterator[str]:
    with list_table_named(boto3_client, case.hash_key, case.range_key, prefix="interop") as name:
        yield name


def langchain(table: str, endpoint: str | None, case: Case, session: str = "0") -> Any:
    return LangChainHistory(table, session, endpoint, **case.options)


def ours(table: str, endpoint: str | None, case: Case, session: str = "0") -> Any:
    return DynamoDBChatMessageHistory(table, session, endpoint, layout="list", **case.options)


def as_read_by_langchain(messages: list[BaseMessage]) -> list[dict[str, Any]]:
    """LangChain's class returns numbers as Decimal: compare their int/float values."""
    return [from_dynamodb_numbers(message_to_dict(m)) for m in messages]


def _expected(case: Case, written: list[BaseMessage]) -> list[BaseMessage]:
    size = case.options.get("history_size")
    return written[-size:] if size else written


def test_chathist_reads_what_langchain_wrote(
    case: Case, table: str, dynamodb_endpoint: str | None
) -> None:
    written = _messages(case)
    theirs = langchain(table, dynamodb_endpoint, case)
    for message in written:  # one write per message, as a chat does
        theirs.add_message(message)
    back = ours(table, dynamodb_endpoint, case).messages
    assert back == _expected(case, written)
    assert dumped(back) == dumped(_expected(case, written))
    assert decimals_in(dumped(back)) == []
    # ... and with layout="auto" it finds the same (a key, or a hash-only table, means list).
    auto = DynamoDBChatMessageHistory(table, "0", dynamodb_endpoint, **case.options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert auto.messages == back


def test_langchain_reads_what_chathist_wrote(
    case: Case, table: str, dynamodb_endpoint: str | None, boto3_client: Any
) -> None:
    written = _messages(case)
    before = int(time.time())
    history = ours(table, dynamodb_endpoint, case)
    history.add_messages(written[:2])
    for message in written[2:]:
        history.add_message(message)
    back = langchain(table, dynamodb_endpoint, case).messages
    assert as_read_by_langchain(back) == as_read_by_langchain(_expected(case, written))
    if "ttl" in case.options:
        item = raw_item(boto3_client, table, case.key("0"))
        assert item is not None
        assert int(item[case.options["ttl_key_name"]]["N"]) >= before + case.options["ttl"]


def test_both_classes_append_to_one_session(
    case: Case, table: str, dynamodb_endpoint: str | None
) -> None:
    written = _messages(case)
    theirs = langchain(table, dynamodb_endpoint, case)
    mine = ours(table, dynamodb_endpoint, case)
    for n, message in enumerate(written):
        (mine if n % 2 else theirs).add_message(message)
    expected = _expected(case, written)
    assert mine.messages == expected
    assert as_read_by_langchain(theirs.messages) == as_read_by_langchain(expected)
    mine.clear()
    assert theirs.messages == []


def test_stored_format_is_the_same_as_langchains(
    boto3_client: Any, dynamodb_endpoint: str | None
) -> None:
    """Same messages written by each class: the same list attribute, byte for byte."""
    case = Case("format", options={"coerce_float_to_decimal": True})
    messages = [*conversation(), HumanMessage("x", additional_kwargs={"score": 0.25})]
    with list_table_named(boto3_client, prefix="format") as table:
        langchain(table, dynamodb_endpoint, case, "lc").add_messages(messages)
        ours(table, dynamodb_endpoint, case, "ch").add_messages(messages)
        theirs = raw_item(boto3_client, table, {"SessionId": "lc"})
        mine = raw_item(boto3_client, table, {"SessionId": "ch"})
    assert theirs is not None and mine is not None
    assert mine["History"] == theirs["History"]


def test_messages_langchain_read_back_can_be_added_to_chathist_in_either_layout(
    boto3_client: Any, dynamodb_endpoint: str | None, table_name: str
) -> None:
    """LangChain's class returns every number as a Decimal; chathist stores each as the int or
    float of the same value (the event layout and the list layout alike)."""
    case = Case("decimals", options={"coerce_float_to_decimal": True})
    written = [*conversation(), AIMessage("x", response_metadata={"n": 3, "p": 0.25})]
    with list_table_named(boto3_client, prefix="decimals") as table:
        theirs = langchain(table, dynamodb_endpoint, case, "lc")
        theirs.add_messages(written)
        read_back = theirs.messages
        assert decimals_in(dumped(read_back)) != []  # what this test is about
        for history in (
            ours(table, dynamodb_endpoint, Case("list"), "ch"),
            DynamoDBChatMessageHistory(table_name, "ch", dynamodb_endpoint, layout="events"),
        ):
            history.add_messages(read_back)
            back = history.messages
            assert dumped(back) == dumped(written)
            assert decimals_in(dumped(back)) == []
