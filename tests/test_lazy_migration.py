"""Lazy migration: an event-layout history that still finds a session's list-layout item."""

from __future__ import annotations

import threading
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from chathist import ConfigurationError, DynamoDBChatMessageHistory
from chathist.lazy_migration import MIGRATED_ATTRIBUTE
from tests.helpers import hooked, list_table_named, transaction_outcome
from tests.test_list_layout import raw_item

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from langchain_community.chat_message_histories import (
        DynamoDBChatMessageHistory as LangChainHistory,
    )

History = Callable[..., DynamoDBChatMessageHistory]


@pytest.fixture
def legacy_table(boto3_client: Any) -> Iterator[str]:
    with list_table_named(boto3_client, prefix="legacy") as name:
        yield name


@pytest.fixture
def migrating(
    table_name: str,
    legacy_table: str,
    dynamodb_endpoint: str | None,
    dynamodb_region: str | None,
    api: Any,
) -> History:
    """Event-layout histories on ``table_name`` that migrate from ``legacy_table``, driven
    through the sync API or the async one (`api`)."""

    def make(session_id: str = "s", **options: Any) -> DynamoDBChatMessageHistory:
        options.setdefault("legacy_table_name", legacy_table)
        history: DynamoDBChatMessageHistory = api.history(
            table_name, session_id, dynamodb_endpoint, region_name=dynamodb_region, **options
        )
        return history

    return make


def write_legacy(
    table: str, endpoint: str | None, session: str, messages: list[BaseMessage], **options: Any
) -> None:
    LangChainHistory(table, session, endpoint, **options).add_messages(messages)


def events_of(client: Any, table: str, session: str) -> list[dict[str, Any]]:
    return list(
        client.query(
            TableName=table,
            KeyConditionExpression="SessionId = :s",
            ExpressionAttributeValues={":s": {"S": session}},
            ConsistentRead=True,
        )["Items"]
    )


def old_messages(n: int, tag: str = "old") -> list[BaseMessage]:
    return [
        (HumanMessage if i % 2 == 0 else AIMessage)(f"{tag} {i}", additional_kwargs={"i": i})
        for i in range(n)
    ]


def test_legacy_session_is_read_then_moved_on_first_write(
    migrating: History,
    legacy_table: str,
    table_name: str,
    boto3_client: Any,
    dynamodb_endpoint: str | None,
) -> None:
    old = old_messages(4)
    write_legacy(legacy_table, dynamodb_endpoint, "s", old)
    history = migrating()
    assert history.messages == old
    assert events_of(boto3_client, table_name, "s") == []  # reading wrote nothing
    history.add_user_message("new")
    assert raw_item(boto3_client, legacy_table, {"SessionId": "s"}) is None
    (moved,) = events_of(boto3_client, table_name, "s")  # one item holds the five messages
    assert (moved["count"]["N"], moved["v"]["N"]) == ("5", "2")
    assert history.messages == [*old, HumanMessage("new")]
    fresh = migrating()
    assert fresh.messages == [*old, HumanMessage("new")]
    fresh.add_ai_message("more")
    plain = DynamoDBChatMessageHistory(table_name, "s", dynamodb_endpoint)  # no legacy options
    assert plain.messages == [*old, HumanMessage("new"), AIMessage("more")]


def test_delete_legacy_false_marks_the_item_and_langchain_still_reads_it(
    migrating: History, legacy_table: str, boto3_client: Any, dynamodb_endpoint: str | None
) -> None:
    old = old_messages(3)
    write_legacy(legacy_table, dynamodb_endpoint, "s", old)
    history = migrating(delete_legacy=False)
    history.add_user_message("new")
    item = raw_item(boto3_client, legacy_table, {"SessionId": "s"})
    assert item is not None and MIGRATED_ATTRIBUTE in item
    assert LangChainHistory(legacy_table, "s", dynamodb_endpoint).messages == old
    for reader in (history, migrating(delete_legacy=False)):
        assert reader.messages == [*old, HumanMessage("new")]  # not twice


def test_clear_retires_the_legacy_item(
    migrating: History, legacy_table: str, boto3_client: Any, dynamodb_endpoint: str | None
) -> None:
    write_legacy(legacy_table, dynamodb_endpoint, "s", old_messages(3))
    history = migrating()
    history.clear()
    assert raw_item(boto3_client, legacy_table, {"SessionId": "s"}) is None
    assert history.messages == []
    history.add_user_message("after")
    assert migrating().messages == [HumanMessage("after")]


def test_a_clear_among_the_events_hides_the_legacy_messages(
    migrating: History,
    legacy_table: str,
    table_name: str,
    dynamodb_endpoint: str | None,
    boto3_client: Any,
) -> None:
    write_legacy(legacy_table, dynamodb_endpoint, "s", old_messages(3))
    plain = DynamoDBChatMessageHistory(table_name, "s", dynamodb_endpoint)
    plain.add_user_message("event")
    plain.clear()
    history = migrating()
    assert history.messages == []
    history.add_user_message("new")
    assert history.messages == [HumanMessage("new")]
    assert raw_item(boto3_client, legacy_table, {"SessionId": "s"}) is None


def test_history_size_spans_legacy_and_events(
    migrating: History, legacy_table: str, dynamodb_endpoint: str | None
) -> None:
    old = old_messages(4)
    write_legacy(legacy_table, dynamodb_endpoint, "s", old)
    assert migrating(history_size=2).messages == old[-2:]
    history = migrating(history_size=3)
    history.add_user_message("new")
    assert history.messages == [*old[-2:], HumanMessage("new")]


def test_legacy_item_in_the_same_composite_table(
    table_name: str, dynamodb_endpoint: str | None, boto3_client: Any
) -> None:
    """A composite-key list item (LangChain's ``key``) beside the events, in one table."""
    legacy_key = {"SessionId": "legacy::s", "SK": "langchain_history"}
    old = old_messages(2)
    LangChainHistory(table_name, "s", dynamodb_endpoint, key=legacy_key).add_messages(old)
    history = DynamoDBChatMessageHistory(table_name, "s", dynamodb_endpoint, legacy_key=legacy_key)
    assert history.messages == old
    history.add_user_message("new")
    assert history.messages == [*old, HumanMessage("new")]
    assert raw_item(boto3_client, table_name, legacy_key) is None


def test_large_legacy_session_is_moved_in_staged_transactions(
    migrating: History, legacy_table: str, table_name: str, dynamodb_endpoint: str | None
) -> None:
    old = old_messages(150)  # more than one transaction's 100 items
    write_legacy(legacy_table, dynamodb_endpoint, "s", old)
    history = migrating()
    history.add_user_message("new")
    assert migrating().messages == [*old, HumanMessage("new")]
    plain = DynamoDBChatMessageHistory(table_name, "s", dynamodb_endpoint)
    assert plain.messages == [*old, HumanMessage("new")]


def test_legacy_options_are_checked(table_name: str, dynamodb_endpoint: str | None) -> None:
    with pytest.raises(ConfigurationError, match="legacy"):
        DynamoDBChatMessageHistory(
            table_name, "s", dynamodb_endpoint, layout="list", legacy_table_name="old"
        )
    with pytest.raises(ConfigurationError, match="partition"):
        DynamoDBChatMessageHistory(
            table_name, "s", dynamodb_endpoint, legacy_key={"SessionId": "s", "SK": "x"}
        )


def _race(make: Callable[[int], DynamoDBChatMessageHistory], old: list[BaseMessage]) -> None:
    """Two writers, both having read the legacy messages, write at once (three messages each)."""
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def write(writer: int) -> None:
        history = make(writer)
        try:
            assert history.messages == old
            barrier.wait()
            history.add_messages([HumanMessage(f"{writer}:0"), AIMessage(f"{writer}:1")])
            history.add_user_message(f"{writer}:2")
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


@pytest.mark.parametrize("delete_legacy", [True, False])
@pytest.mark.sync_only
def test_two_concurrent_writers_neither_lose_nor_duplicate(
    migrating: History,
    legacy_table: str,
    dynamodb_endpoint: str | None,
    boto3_client: Any,
    delete_legacy: bool,
) -> None:
    outcomes: Counter[str] = Counter()

    def mark(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["migrates"] = any("Put" not in action for action in params["TransactItems"])

    def counted(parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        if context.get("migrates"):  # a lazy migration: events and the legacy item's retirement
            outcomes[transaction_outcome(parsed)] += 1

    client = migrating().client
    with (
        hooked(client, "before-parameter-build.dynamodb.TransactWriteItems", mark),
        hooked(client, "after-call.dynamodb.TransactWriteItems", counted),
    ):
        _race_rounds(migrating, legacy_table, dynamodb_endpoint, boto3_client, delete_legacy)
    assert outcomes["done"] == 6  # one migration a session
    assert outcomes["legacy-changed"] + outcomes["taken"] > 0  # a real race


def _race_rounds(
    migrating: History,
    legacy_table: str,
    dynamodb_endpoint: str | None,
    boto3_client: Any,
    delete_legacy: bool,
) -> None:
    for round_ in range(6):
        session = f"race-{round_}-{uuid.uuid4().hex[:6]}"
        old = old_messages(3 + round_, tag=session)
        write_legacy(legacy_table, dynamodb_endpoint, session, old)
        _race(lambda _, s=session: migrating(s, delete_legacy=delete_legacy), old)
        messages = migrating(session, delete_legacy=delete_legacy).messages
        assert messages[: len(old)] == old
        new = [str(m.content) for m in messages[len(old) :]]
        assert sorted(new) == sorted(f"{w}:{n}" for w in range(2) for n in range(3))
        for writer in range(2):
            mine = [text for text in new if text.startswith(f"{writer}:")]
            assert mine == [f"{writer}:{n}" for n in range(3)]
        item = raw_item(boto3_client, legacy_table, {"SessionId": session})
        assert (item is None) if delete_legacy else (item is not None)


@pytest.mark.sync_only
def test_a_legacy_item_changed_during_the_migration_is_migrated_again(
    migrating: History,
    legacy_table: str,
    dynamodb_endpoint: str | None,
) -> None:
    """LangChain's class (a fleet still switching) appends between the read and the commit:
    the transaction's condition fails, and the retry moves the changed list."""
    old = old_messages(2)
    write_legacy(legacy_table, dynamodb_endpoint, "s", old)
    outcomes: list[str] = []

    def interleave(**_: Any) -> None:
        if not outcomes:
            write_legacy(legacy_table, dynamodb_endpoint, "s", [AIMessage("late")])

    def record(parsed: dict[str, Any], **_: Any) -> None:
        outcomes.append(transaction_outcome(parsed))

    history = migrating()
    with (
        hooked(history.client, "before-call.dynamodb.TransactWriteItems", interleave),
        hooked(history.client, "after-call.dynamodb.TransactWriteItems", record),
    ):
        history.add_user_message("new")
    assert outcomes == ["legacy-changed", "done"]
    assert migrating().messages == [*old, AIMessage("late"), HumanMessage("new")]


def test_moved_messages_get_the_ttl_of_new_events(
    migrating: History,
    legacy_table: str,
    table_name: str,
    dynamodb_endpoint: str | None,
    boto3_client: Any,
) -> None:
    write_legacy(legacy_table, dynamodb_endpoint, "s", old_messages(2))
    before = int(time.time())
    migrating(ttl=600).add_user_message("new")
    events = events_of(boto3_client, table_name, "s")
    expiries = [int(item["expireAt"]["N"]) for item in events]
    assert len(expiries) == 1 and events[0]["count"]["N"] == "3"  # the 2 moved and the new one
    assert all(before + 600 <= e <= int(time.time()) + 600 for e in expiries)


def test_langchain_writing_the_legacy_item_after_a_clear_is_moved_not_deleted(
    migrating: History, legacy_table: str, dynamodb_endpoint: str | None, boto3_client: Any
) -> None:
    """A mixed fleet: chathist clears (retiring the legacy item), chathist appends, then
    LangChain's class writes the legacy item again. Its message reads after the events, and
    the next chathist write moves it there instead of deleting it."""
    write_legacy(legacy_table, dynamodb_endpoint, "s", old_messages(2))
    migrating().clear()
    assert raw_item(boto3_client, legacy_table, {"SessionId": "s"}) is None
    migrating().add_user_message("c1")
    write_legacy(legacy_table, dynamodb_endpoint, "s", [HumanMessage("from langchain")])
    assert [m.content for m in migrating().messages] == ["c1", "from langchain"]
    assert [m.content for m in migrating(history_size=2).messages] == ["c1", "from langchain"]
    migrating().add_user_message("c2")
    assert [m.content for m in migrating().messages] == ["c1", "from langchain", "c2"]
    assert raw_item(boto3_client, legacy_table, {"SessionId": "s"}) is None
    write_legacy(legacy_table, dynamodb_endpoint, "s", [HumanMessage("again")])
    migrating().clear()  # a clear reads the legacy item afresh and retires it
    assert migrating().messages == []
    assert raw_item(boto3_client, legacy_table, {"SessionId": "s"}) is None
