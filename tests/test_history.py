"""DynamoDBChatMessageHistory in the event layout, against a real DynamoDB Local."""

from __future__ import annotations

import contextlib
import random
import string
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, message_to_dict

import chathist.event_log
from chathist import (
    Capacity,
    ConcurrencyError,
    ConfigurationError,
    DynamoDBChatMessageHistory,
    InvalidSessionIdError,
    StorageError,
    TableNotFoundError,
    TableSchemaError,
    UnsupportedValueError,
    create_table,
)
from chathist.core.events import SEQ_WIDTH
from chathist.core.sizes import item_size, write_units
from chathist.dynamo.binding import Binding
from chathist.dynamo.client import client_for
from chathist.dynamo.event_store import PLAIN_NAMES
from tests.helpers import (
    botocore_made,
    create_list_table,
    hooked,
    one_item_per_message,
    partition_items,
    without_aws_credentials,
)
from tests.test_codec import every_message_type

History = Callable[..., DynamoDBChatMessageHistory]


@pytest.fixture
def history(
    table_name: str, dynamodb_endpoint: str | None, dynamodb_region: str | None, api: Any
) -> History:
    """Make histories on the test's table: ``history(session_id="s", **options)``, driven
    through the sync API or the async one (`api`)."""

    def make(session_id: str = "s", **options: Any) -> DynamoDBChatMessageHistory:
        history: DynamoDBChatMessageHistory = api.history(
            table_name, session_id, dynamodb_endpoint, region_name=dynamodb_region, **options
        )
        return history

    return make


def stored_items(client: Any, table: str, session: str = "s") -> list[dict[str, Any]]:
    """Every item of ``session``'s partition, in sort key order, read straight from DynamoDB."""
    return partition_items(client, table, session)


def random_text(rng: random.Random, size: int) -> str:
    return "".join(rng.choices(string.ascii_letters + " ", k=size))


def dicts(messages: list[BaseMessage]) -> list[dict[str, Any]]:
    return [message_to_dict(m) for m in messages]


def test_the_readme_example(history: History) -> None:
    h = history(session_id="0")
    h.add_user_message("hi!")
    h.add_ai_message("whats up?")
    assert h.messages == [HumanMessage("hi!"), AIMessage("whats up?")]
    h.clear()
    assert h.messages == []


def test_every_message_type_round_trips_through_dynamodb(history: History) -> None:
    sent = every_message_type()
    history().add_messages(sent[:3])
    for message in sent[3:]:
        history().add_message(message)
    back = history().messages
    assert [type(m) for m in back] == [type(m) for m in sent]
    assert dicts(back) == dicts(sent)


def test_floats_and_ints_keep_their_types(history: History) -> None:
    history().add_message(AIMessage("x", additional_kwargs={"f": 1.0, "i": 1, "big": 2**70}))
    kwargs = history().messages[0].additional_kwargs
    assert type(kwargs["f"]) is float and type(kwargs["i"]) is int and kwargs["big"] == 2**70


def test_a_conversation_over_2_mb(history: History, boto3_client: Any, table_name: str) -> None:
    rng = random.Random(7)
    sent: list[BaseMessage] = []
    h = history()
    for turn in range(60):
        batch = [HumanMessage(random_text(rng, 10_000)), AIMessage(random_text(rng, 25_000))]
        if turn % 2:
            h.add_messages(batch)
        else:
            for message in batch:
                h.add_message(message)
        sent += batch
    assert sum(len(str(m.content)) for m in sent) > 2_000_000
    assert len(stored_items(boto3_client, table_name)) == len(sent)
    assert dicts(history().messages) == dicts(sent)


def test_each_append_is_one_conditional_put_without_a_read(history: History) -> None:
    h = history()
    h.add_user_message("first")  # learns the tail: one Query, one PutItem
    before = h.consumed_capacity
    for i in range(20):
        h.add_user_message(f"m{i}")
    used = h.consumed_capacity - before
    assert used.requests == 20
    assert used.read_units == 0
    assert used.write_units == 20


def test_eight_threads_lose_nothing_and_keep_each_writers_order(history: History) -> None:
    writers, per_writer = 8, 15
    barrier = threading.Barrier(writers)
    errors: list[BaseException] = []

    def write(writer: int) -> None:
        try:
            h = history()
            barrier.wait()
            for i in range(per_writer):
                h.add_message(HumanMessage(f"{writer}:{i}"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    contents = [str(m.content) for m in history().messages]
    assert sorted(contents) == sorted(f"{w}:{i}" for w in range(writers) for i in range(per_writer))
    for w in range(writers):
        mine = [c for c in contents if c.startswith(f"{w}:")]
        assert mine == [f"{w}:{i}" for i in range(per_writer)]


def test_a_stale_writer_retries_after_losing_the_race(history: History) -> None:
    a, b = history(), history()
    a.add_user_message("a1")
    b.add_user_message("b1")  # b learns the tail
    a.add_user_message("a2")  # a's cached next number is still right
    b.add_user_message("b2")  # b's is stale: its conditional put fails, it re-reads, retries
    assert [m.content for m in history().messages] == ["a1", "b1", "a2", "b2"]


def test_a_batch_too_big_for_one_transaction_is_atomic_and_contiguous(
    history: History, boto3_client: Any, table_name: str
) -> None:
    rng = random.Random(3)
    batch: list[BaseMessage] = [HumanMessage(random_text(rng, 60_000)) for _ in range(90)]
    batch += [AIMessage(f"short {i}") for i in range(150)]
    other = history()

    def interleave() -> None:  # another writer appending while the batch is being written
        for i in range(40):
            other.add_user_message(f"other {i}")

    thread = threading.Thread(target=interleave)
    thread.start()
    try:
        history().add_messages(batch)
    finally:
        thread.join()
    contents = [m.content for m in history().messages]
    start = contents.index(batch[0].content)
    assert contents[start : start + len(batch)] == [m.content for m in batch]
    assert sorted(c for c in contents if str(c).startswith("other")) == sorted(
        f"other {i}" for i in range(40)
    )
    items = stored_items(boto3_client, table_name)
    assert [i["event"]["S"] for i in items if not i["SK"]["S"].startswith("!")].count("commit") == 1
    staged = [i for i in items if i["SK"]["S"].startswith("!")]  # the short ones share an item
    assert sum(int(i.get("count", {"N": "1"})["N"]) for i in staged) == len(batch)
    assert len(staged) == 91


@pytest.mark.sync_only  # the busy writer needs a thread of its own, not the test loop's turn
def test_a_multi_transaction_write_is_not_starved_by_a_busy_writer(history: History) -> None:
    rng = random.Random(5)
    batch: list[BaseMessage] = [HumanMessage(random_text(rng, 60_000)) for _ in range(80)]
    stop = threading.Event()
    other = history()
    written: list[str] = []

    def busy() -> None:  # ~100 appends/s: far more than the whole batch's write time allows
        while not stop.is_set():
            other.add_user_message(f"busy {len(written)}")
            written.append(f"busy {len(written)}")
            time.sleep(0.01)

    thread = threading.Thread(target=busy)
    thread.start()
    try:
        history().add_messages(batch)
    finally:
        stop.set()
        thread.join()
    contents = [m.content for m in history().messages]
    start = contents.index(batch[0].content)
    assert contents[start : start + len(batch)] == [m.content for m in batch]
    assert [c for c in contents if str(c).startswith("busy")] == written
    assert len(written) > 10  # the busy writer really appended during the batch


@pytest.mark.sync_only
def test_a_write_that_fits_one_transaction_is_one_request_and_read_in_one_query(
    history: History, boto3_client: Any, table_name: str
) -> None:
    """600 KB in one call (two items): one TransactWriteItems at the end of the sequence, no
    stage, so a reader finds it with the one query a hand-written loop sends."""
    rng = random.Random(11)
    batch: list[BaseMessage] = [HumanMessage(random_text(rng, 3000)) for _ in range(200)]
    h = history()
    h.add_user_message("first")
    calls: list[str] = []

    def seen(model: Any, **_: Any) -> None:
        calls.append(model.name)

    with hooked(h.client, "after-call.dynamodb", seen):
        h.add_messages(batch)
        reader = history()
        assert [m.content for m in reader.messages] == ["first", *[m.content for m in batch]]
    assert calls == ["TransactWriteItems", "Query"]
    assert not [i for i in stored_items(boto3_client, table_name) if i["SK"]["S"].startswith("!")]


@pytest.mark.sync_only
def test_a_large_direct_write_that_loses_a_race_is_staged_and_committed(
    history: History, boto3_client: Any, table_name: str
) -> None:
    """A write of several items over 256 KB that loses the end of the sequence twice (the
    second time right after the number it saw taken) is staged, so that from then on only its
    small commit competes with the other writers."""
    rng = random.Random(12)
    batch: list[BaseMessage] = [HumanMessage(random_text(rng, 3000)) for _ in range(200)]
    h = history()
    h.add_user_message("first")
    rival = history()
    sent: list[str] = []

    def a_rival_first(params: dict[str, Any], **_: Any) -> None:
        keys = [a["Put"]["Item"]["SK"]["S"] for a in params["TransactItems"]]
        sent.append("staged" if keys[0].startswith("!") else "direct")
        if len(sent) <= 2:
            rival.add_user_message(f"rival{len(sent)}")  # takes the number the write wants

    def commit_seen(params: dict[str, Any], **_: Any) -> None:
        if params["Item"]["event"]["S"] == "commit":  # (the rival's put shares the client)
            sent.append("commit")

    with (
        hooked(h.client, "before-parameter-build.dynamodb.TransactWriteItems", a_rival_first),
        hooked(h.client, "before-parameter-build.dynamodb.PutItem", commit_seen),
    ):
        h.add_messages(batch)
    assert sent[:3] == ["direct", "direct", "staged"] and sent[-1] == "commit"
    contents = [m.content for m in history().messages]
    assert contents == ["first", "rival1", "rival2", *[m.content for m in batch]]
    staged = [i for i in stored_items(boto3_client, table_name) if i["SK"]["S"].startswith("!")]
    assert len(staged) == 2  # the batch's two items, committed by one event


@pytest.mark.sync_only
def test_a_large_write_after_a_stale_next_number_is_not_staged(
    history: History, boto3_client: Any, table_name: str
) -> None:
    """A history whose remembered next number went stale (another object appended since) loses
    its first try, then writes right after the number it saw taken: one loss is no contention,
    and the write stays one transaction that readers find in the sequence."""
    rng = random.Random(13)
    batch: list[BaseMessage] = [HumanMessage(random_text(rng, 3000)) for _ in range(200)]
    h, other = history(), history()
    h.add_user_message("first")
    other.add_user_message("second")  # h still expects to write at 1
    h.add_messages(batch)
    assert not [i for i in stored_items(boto3_client, table_name) if i["SK"]["S"].startswith("!")]
    contents = [m.content for m in history().messages]
    assert contents == ["first", "second", *[m.content for m in batch]]


@pytest.mark.sync_only
def test_a_langchain_turn_is_two_requests_and_one_item_of_the_bytes_it_needs(
    history: History, boto3_client: Any, table_name: str
) -> None:
    """RunnableWithMessageHistory's turn: a new history object reads its window, then adds the
    human and the AI message in one call. The read tells the next sequence number, and the two
    messages share one item: one conditional PutItem, charged for the item's bytes only."""
    writer = history()
    for i in range(30):
        writer.add_messages([HumanMessage(f"q{i}"), AIMessage(f"a{i}")])
    turn = history(history_size=20)
    calls: list[tuple[str, Any]] = []

    def seen(model: Any, parsed: dict[str, Any], **_: Any) -> None:
        calls.append((model.name, parsed.get("Count")))

    turn.client.meta.events.register("after-call.dynamodb", seen, "turn-calls")
    try:
        window = [m.content for m in turn.messages]
        before = turn.consumed_capacity
        turn.add_messages([HumanMessage("q30"), AIMessage("a30" * 200)])
    finally:
        turn.client.meta.events.unregister("after-call.dynamodb", unique_id="turn-calls")
    assert window == [text for i in range(20, 30) for text in (f"q{i}", f"a{i}")]
    # a page of at most N items (the reader cannot know how many messages each holds)
    assert calls == [("Query", 20), ("PutItem", None)]
    items = stored_items(boto3_client, table_name)
    assert len(items) == 31
    newest = items[-1]
    assert (newest["count"]["N"], newest["v"]["N"], newest["codec"]["S"]) == ("2", "2", "json-list")
    assert turn.consumed_capacity - before == Capacity(0.0, write_units(item_size(newest)), 1)
    assert [m.content for m in history(history_size=3).messages] == ["a29", "q30", "a30" * 200]
    # This process has seen that the session's items hold 2 messages: the next turn's window
    # read asks for the 11 items 20 messages can span, not 20.
    calls.clear()
    turn = history(history_size=20)
    turn.client.meta.events.register("after-call.dynamodb", seen, "turn-calls")
    try:
        window = [m.content for m in turn.messages]
    finally:
        turn.client.meta.events.unregister("after-call.dynamodb", unique_id="turn-calls")
    assert calls == [("Query", 11)]
    expected = [t for i in range(21, 31) for t in (f"q{i}", f"a{i}")]
    assert window == [*expected[:-1], "a30" * 200]


@pytest.mark.sync_only
def test_a_first_append_learns_the_key_schema_from_its_query_without_describe_table(
    history: History,
) -> None:
    """In a process that does not know the table yet, the first request is the query for the
    session's newest event: it can only succeed on the event layout's key schema, and it tells
    the next sequence number. So a first append is a query and a put, as by hand."""
    from chathist.dynamo.tables import forget_key_schema, known_key_schema

    h = history()
    forget_key_schema(h._options.binding)
    operations: list[str] = []

    def seen(model: Any, **_: Any) -> None:
        operations.append(model.name)

    h.client.meta.events.register("after-call.dynamodb", seen, "first-append")
    try:
        h.add_user_message("first")
        history().add_user_message("second")  # a new object: it finds the end, then puts
    finally:
        h.client.meta.events.unregister("after-call.dynamodb", unique_id="first-append")
    assert operations == ["Query", "PutItem", "Query", "PutItem"]
    assert known_key_schema(h._options.binding) is not None
    assert [m.content for m in history().messages] == ["first", "second"]


def test_a_session_written_every_way_reads_back_in_every_window(history: History) -> None:
    """One at a time, two per call, 50 and 100 per call (one item each), a staged batch and a
    large message in parts: every window and the full read give the messages in order."""
    rng = random.Random(8)
    writer = history()
    sent: list[BaseMessage] = []

    def add(batch: list[BaseMessage]) -> None:
        writer.add_messages(batch)
        sent.extend(batch)

    add([HumanMessage("one")])
    add([HumanMessage("q"), AIMessage("a")])
    add([HumanMessage(f"fifty {i}") for i in range(50)])
    add([AIMessage(random_text(rng, 700 * 1024))])  # parts, staged
    add([HumanMessage(f"hundred {i}") for i in range(100)])
    add([HumanMessage(random_text(rng, 3000)) for _ in range(120)])  # over 256 KB: staged
    add([HumanMessage("q2"), AIMessage("a2")])
    for window in (1, 2, 3, 20, 119, 120, 121, 122, 221, 222, 223, 275, len(sent), 400):
        got = history(history_size=window).messages
        assert dicts(got) == dicts(sent[-window:]), window
    assert dicts(history().messages) == dicts(sent)


def _written(kind: str, rng: random.Random) -> list[list[BaseMessage]]:
    """The ``add_messages`` calls that write a session of ``kind``."""
    per_call = {"1 per call": 1, "2 per call": 2, "50 per call": 50, "100 per call": 100}
    if kind in per_call:
        size = per_call[kind]
        count = max(60, 3 * size)
        messages = [HumanMessage(f"m{i}") for i in range(count)]
        return [messages[i : i + size] for i in range(0, count, size)]
    calls: list[list[BaseMessage]] = []
    for i in range(40):  # 2 per call, now and then a 150 KB message (an item of its own)
        calls.append([HumanMessage(f"q{i}"), AIMessage(f"a{i}")])
        if i % 8 == 3:
            calls.append([AIMessage(random_text(rng, 150 * 1024))])
    return calls


@pytest.mark.sync_only
@pytest.mark.parametrize(
    "kind", ["1 per call", "2 per call", "50 per call", "100 per call", "150 KB mixed in"]
)
def test_reads_of_a_session_however_written_cost_what_a_hand_written_loop_does(
    history: History,
    boto3_client: Any,
    table_name: str,
    kind: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 13, goal 3, in counts: a full read sends the queries and reads the items a plain
    query loop does (every stored item, once); a window of N reads at most N + 2 items in one
    query, the first time and once the process knows how many messages the items hold; every
    read builds only the messages it returns, in one LangChain call."""
    import chathist.core.codec

    built: list[int] = []
    langchain_builds = chathist.core.codec.messages_from_dict

    def counted(dicts: Any) -> list[BaseMessage]:
        built.append(len(dicts))
        return langchain_builds(dicts)

    monkeypatch.setattr(chathist.core.codec, "messages_from_dict", counted)
    writer = history()
    sent: list[BaseMessage] = []
    for batch in _written(kind, random.Random(13)):
        writer.add_messages(batch)
        sent.extend(batch)
    stored = stored_items(boto3_client, table_name)
    pages = 0
    request: dict[str, Any] = {
        "TableName": table_name,
        "KeyConditionExpression": "SessionId = :s",
        "ExpressionAttributeValues": {":s": {"S": "s"}},
        "ConsistentRead": True,
    }
    while True:  # the raw loop's queries
        pages += 1
        page = boto3_client.query(**request)
        if "LastEvaluatedKey" not in page:
            break
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    items_read: list[int] = []

    def read(**options: Any) -> tuple[list[BaseMessage], int, int]:
        reader = history(**options)
        items_read.clear()
        built.clear()
        before = reader.consumed_capacity
        found = reader.messages
        assert built == [len(found)]
        return found, sum(items_read), (reader.consumed_capacity - before).requests

    with hooked(
        writer.client,
        "after-call.dynamodb.Query",
        lambda parsed, **_: items_read.append(parsed["Count"]),
    ):
        found, items, requests = read()
        assert dicts(found) == dicts(sent)
        assert (items, requests) == (len(stored), pages), kind
        for attempt in ("first", "with the density known"):
            found, items, requests = read(history_size=20)
            assert dicts(found) == dicts(sent[-20:])
            assert items <= 22 and requests == 1, (kind, attempt, items, requests)


@pytest.mark.sync_only
def test_history_size_returns_the_latest_messages_reading_about_that_many_items(
    history: History,
) -> None:
    writer = history()
    for start in range(0, 300, 20):  # batches of 20 go straight into the sequence
        writer.add_messages([HumanMessage(f"m{i}") for i in range(start, start + 20)])
    window = history(history_size=20)
    items_read: list[int] = []
    with hooked(
        window.client,  # shared by every table of the endpoint: removed at the end
        "after-call.dynamodb.Query",
        lambda parsed, **_: items_read.append(parsed["Count"]),
    ):
        assert [m.content for m in window.messages] == [f"m{i}" for i in range(280, 300)]
        assert sum(items_read) <= 22
        everything = [m.content for m in history(history_size=0).messages]  # 0: no limit
        assert everything == [f"m{i}" for i in range(300)]

        writer.add_messages([HumanMessage(f"s{i}") for i in range(300)])  # staged, committed
        items_read.clear()
        assert [m.content for m in window.messages] == [f"s{i}" for i in range(280, 300)]
        assert sum(items_read) <= 2 * 22  # the commit's page, then about 20 staged events


def test_ttl_items_carry_the_expiry_and_expired_ones_are_never_returned(
    history: History, boto3_client: Any, table_name: str
) -> None:
    history(ttl=1).add_user_message("short-lived")
    history().add_user_message("kept")
    before = int(time.time())
    history(ttl=3600).add_user_message("long-lived")
    items = stored_items(boto3_client, table_name)
    assert "expireAt" not in items[1]
    assert before + 3600 <= int(items[2]["expireAt"]["N"]) <= before + 3602
    time.sleep(2.1)  # DynamoDB Local never deletes expired items; the reader must skip them
    assert [m.content for m in history().messages] == ["kept", "long-lived"]
    assert len(stored_items(boto3_client, table_name)) == 3


CONTENT = {"History", "blob", "codec", "parts", "msg", "count", "stage"}


def erased_and_tombstones(items: list[dict[str, Any]]) -> tuple[list[str], set[str]]:
    """The kinds of ``items`` and every content attribute any of them still holds."""
    return [i["event"]["S"] for i in items], set().union(*(i.keys() & CONTENT for i in items))


def test_clear_is_logical_first_then_erases_everything_below(
    history: History, boto3_client: Any, table_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    one_item_per_message(monkeypatch)
    h = history()
    for i in range(60):
        h.add_user_message(f"m{i}")  # sequence numbers 0..59
    h.add_messages([HumanMessage(f"big{i}") for i in range(150)])  # staged, committed at 60
    assert len(stored_items(boto3_client, table_name)) == 60 + 150 + 1
    h.clear()  # the tombstone is 61
    assert history().messages == []
    items = stored_items(boto3_client, table_name)
    kinds, content = erased_and_tombstones(items)
    assert kinds == ["erased"] * 61 + ["clear"]  # the stage is deleted; numbers stay taken
    assert content == set()  # nothing of any message is left
    assert all(int(i["expireAt"]["N"]) > time.time() for i in items[:-1])
    assert items[-1]["SK"]["S"] == str(61).zfill(SEQ_WIDTH)
    history().add_user_message("after")
    keys = [i["SK"]["S"] for i in stored_items(boto3_client, table_name)]
    assert keys[-2:] == [str(61).zfill(SEQ_WIDTH), str(62).zfill(SEQ_WIDTH)]  # never reused
    assert [m.content for m in history().messages] == ["after"]
    h.clear()  # a second clear erases only what is not erased yet
    kinds, content = erased_and_tombstones(stored_items(boto3_client, table_name))
    assert kinds == ["erased"] * 63 + ["clear"] and content == set()


def test_a_writer_with_a_stale_next_number_is_not_lost_after_another_clears(
    history: History,
) -> None:
    a, b = history(), history()
    a.add_user_message("a1")
    b.add_user_message("b1")
    b.clear()
    a.add_user_message("a2")  # a remembers number 1, which the clear erased but did not free
    assert [m.content for m in history().messages] == ["a2"]


@pytest.mark.sync_only
def test_an_interrupted_clear_still_reads_empty_and_the_next_clear_finishes(
    history: History, boto3_client: Any, table_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    one_item_per_message(monkeypatch)
    history().add_messages([HumanMessage(f"m{i}") for i in range(20)])
    h = history()

    def fail(**kwargs: Any) -> None:
        raise RuntimeError("power cut")

    with (
        hooked(h.client, "before-parameter-build.dynamodb.BatchWriteItem", fail),
        pytest.raises(RuntimeError),
    ):
        h.clear()
    assert history().messages == []
    assert len(stored_items(boto3_client, table_name)) == 21
    history().clear()
    kinds, content = erased_and_tombstones(stored_items(boto3_client, table_name))
    assert kinds == ["erased"] * 21 + ["clear"] and content == set()  # and the first tombstone


def test_clearing_an_empty_session_writes_nothing(
    history: History, boto3_client: Any, table_name: str
) -> None:
    history().clear()
    assert stored_items(boto3_client, table_name) == []


def test_eventually_consistent_reads_are_an_option(history: History) -> None:
    history().add_user_message("x")
    reader = history(consistent_read=False)
    deadline = time.monotonic() + 5
    while not reader.messages and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [m.content for m in reader.messages] == ["x"]


def test_a_missing_table_is_a_clear_error(
    dynamodb_endpoint: str | None, dynamodb_region: str | None
) -> None:
    h = (
        DynamoDBChatMessageHistory(
            f"missing-{uuid.uuid4().hex[:8]}",
            "s",
            dynamodb_endpoint,
            region_name=dynamodb_region,
            layout="events",
        )
        if "layout" in DynamoDBChatMessageHistory.__init__.__code__.co_varnames
        else (
            DynamoDBChatMessageHistory(
                f"missing-{uuid.uuid4().hex[:8]}",
                "s",
                dynamodb_endpoint,
                region_name=dynamodb_region,
            )
        )
    )
    with pytest.raises(TableNotFoundError, match="create_table"):
        h.add_user_message("x")
    with pytest.raises(TableNotFoundError):
        _ = h.messages


def test_a_table_of_the_wrong_schema_is_a_clear_error(
    dynamodb_endpoint: str | None, dynamodb_region: str | None, boto3_client: Any
) -> None:
    name = f"other-keys-{uuid.uuid4().hex[:8]}"
    create_table(
        name,
        endpoint_url=dynamodb_endpoint,
        region_name=dynamodb_region,
        primary_key_name="PK",
        sort_key_name="SK",
    )
    try:
        h = DynamoDBChatMessageHistory(name, "s", dynamodb_endpoint, region_name=dynamodb_region)
        with pytest.raises(TableSchemaError, match="PK"):
            h.add_user_message("x")
        with pytest.raises(TableSchemaError):
            create_table(name, endpoint_url=dynamodb_endpoint, region_name=dynamodb_region)
        assert boto3_client.scan(TableName=name)["Count"] == 0
    finally:
        boto3_client.delete_table(TableName=name)


def test_create_table_is_a_no_op_when_the_table_exists(
    table_name: str, dynamodb_endpoint: str | None, dynamodb_region: str | None
) -> None:
    assert not create_table(table_name, endpoint_url=dynamodb_endpoint, region_name=dynamodb_region)


@pytest.mark.parametrize("session_id", ["", None, 42, "x" * 2049, "é" * 1025, "bad \udc80"])
def test_bad_session_ids_are_refused(table_name: str, session_id: Any) -> None:
    with pytest.raises(InvalidSessionIdError):
        DynamoDBChatMessageHistory(table_name, session_id)


def test_a_message_that_cannot_be_stored_writes_nothing_of_its_batch(
    history: History, boto3_client: Any, table_name: str
) -> None:
    bad = HumanMessage("x", additional_kwargs={"when": object()})
    with pytest.raises(UnsupportedValueError):
        history().add_messages([HumanMessage("fine"), bad])
    with pytest.raises(UnsupportedValueError, match="NaN"):
        history().add_message(AIMessage("x", additional_kwargs={"score": float("nan")}))
    assert stored_items(boto3_client, table_name) == []


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"key": {"SessionId": "s"}}, "key"),
        ({"kms_key_id": ""}, "kms_key_id"),
        ({"history_size": -1}, "history_size"),
        ({"ttl": "soon"}, "ttl"),
        ({"history_messages_key": "SK"}, "must differ"),
    ],
)
def test_arguments_that_cannot_apply_fail_loudly(
    table_name: str, options: dict[str, Any], fragment: str
) -> None:
    if "key" in options and "layout" in DynamoDBChatMessageHistory.__init__.__code__.co_varnames:
        options = {**options, "layout": "events"}
    with pytest.raises(ConfigurationError, match=fragment):
        DynamoDBChatMessageHistory(table_name, "s", **options)


def test_one_client_per_endpoint_all_from_one_botocore_session() -> None:
    one = client_for(Binding.resolve("T", "http://127.0.0.1:1"))
    two = client_for(Binding.resolve("T", "http://127.0.0.1:2"))
    assert one is client_for(Binding.resolve("T", "http://127.0.0.1:1"))
    assert one is client_for(Binding.resolve("Other", "http://127.0.0.1:1"))  # tables share
    assert one is not two
    assert one._loader is two._loader  # one botocore session, loaded once
    assert one.meta.endpoint_url == "http://127.0.0.1:1"
    assert two.meta.endpoint_url == "http://127.0.0.1:2"


@pytest.mark.parametrize("credentials", ["default", "boto3 session with keys"])
def test_a_second_table_makes_no_botocore_session_and_no_client(
    api: Any,
    table_name: str,
    dynamodb_endpoint: str | None,
    dynamodb_region: str | None,
    credentials: str,
    monkeypatch: pytest.MonkeyPatch,
    boto3_client: Any,
) -> None:
    """Goal 4 of issue 13: a second table in the process costs no botocore session and no
    client (sync, and in the async API's loop), only its requests."""
    options: dict[str, Any] = {"region_name": dynamodb_region}
    if credentials != "default":
        if dynamodb_endpoint is None:
            pytest.skip("explicit keys work against DynamoDB Local only")
        import boto3

        options["boto3_session"] = boto3.Session(
            aws_access_key_id="local", aws_secret_access_key="local", region_name=dynamodb_region
        )
    first = api.history(table_name, "s", dynamodb_endpoint, **options)
    first.add_user_message("on the first table")
    second_table = f"chathist-test-{uuid.uuid4().hex[:12]}"
    create_list_table(boto3_client, second_table, "SessionId", "SK")  # not through chathist
    try:
        with botocore_made(monkeypatch) as made:
            second = api.history(second_table, "s", dynamodb_endpoint, **options)
            second.add_user_message("on the second table")
            assert [m.content for m in second.messages] == ["on the second table"]
        assert made == {"sessions": 0, "clients": 0}
        assert [m.content for m in first.messages] == ["on the first table"]
        assert client_for(second._options.binding) is client_for(first._options.binding)
    finally:
        boto3_client.delete_table(TableName=second_table)


def test_runnable_with_message_history_sees_the_first_exchange(history: History) -> None:
    from langchain_core.callbacks import BaseCallbackHandler
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
    from langchain_core.runnables.history import RunnableWithMessageHistory

    prompts: list[list[BaseMessage]] = []

    class Recorder(BaseCallbackHandler):
        def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> None:
            prompts.append(messages[0])

    model = GenericFakeChatModel(messages=iter([AIMessage("hello Ada"), AIMessage("you are Ada")]))
    prompt = ChatPromptTemplate.from_messages(
        [("system", "be brief"), MessagesPlaceholder("history"), ("human", "{question}")]
    )
    chain = RunnableWithMessageHistory(
        prompt | model,
        lambda session_id: history(session_id=session_id),
        input_messages_key="question",
        history_messages_key="history",
    )
    config: Any = {"configurable": {"session_id": "chat-1"}, "callbacks": [Recorder()]}
    chain.invoke({"question": "I am Ada"}, config=config)
    chain.invoke({"question": "who am I?"}, config=config)
    second = [m.content for m in prompts[1]]
    assert second == ["be brief", "I am Ada", "hello Ada", "who am I?"]
    assert [m.content for m in history(session_id="chat-1").messages] == [
        "I am Ada",
        "hello Ada",
        "who am I?",
        "you are Ada",
    ]


@pytest.mark.sync_only
def test_repair_deletes_only_old_uncommitted_stages(
    history: History, boto3_client: Any, table_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    one_item_per_message(monkeypatch)
    h = history()
    h.add_messages([HumanMessage(f"kept{i}") for i in range(30)])  # staged and committed
    broken = history()

    def lose_commit(params: dict[str, Any], **kwargs: Any) -> None:
        if params["Item"]["event"]["S"] == "commit":
            raise RuntimeError("crash before the commit")

    with (
        hooked(broken.client, "before-parameter-build.dynamodb.PutItem", lose_commit),
        pytest.raises(RuntimeError),
    ):
        broken.add_messages([HumanMessage(f"lost{i}") for i in range(30)])
    staged = [i for i in stored_items(boto3_client, table_name) if i["SK"]["S"].startswith("!")]
    assert len(staged) == 60
    assert h.repair() == 0  # young: it may still be committed
    with pytest.raises(ConfigurationError, match="at least"):
        h.repair(older_than=60)
    monkeypatch.setattr(chathist.event_log, "ABANDONED_AFTER", -1)  # an hour later, say
    assert h.repair() == 30
    assert [m.content for m in history().messages] == [f"kept{i}" for i in range(30)]
    left = [i for i in stored_items(boto3_client, table_name) if i["SK"]["S"].startswith("!")]
    assert len(left) == 30


@pytest.mark.sync_only
def test_a_stage_older_than_half_the_abandon_age_is_staged_anew_before_its_commit(
    history: History, monkeypatch: pytest.MonkeyPatch
) -> None:
    one_item_per_message(monkeypatch)
    h = history()
    h.add_user_message("first")
    rival = history()
    stagings: list[str] = []
    rivals: list[str] = []

    def stage_seen(params: dict[str, Any], **kwargs: Any) -> None:
        stagings.append(params["TransactItems"][0]["Put"]["Item"]["SK"]["S"].split("#")[0])

    def commit_after_a_rival(params: dict[str, Any], **kwargs: Any) -> None:
        if params["Item"]["event"]["S"] == "commit" and len(stagings) == 1 and not rivals:
            rivals.append("rival")
            rival.add_user_message("rival")  # the commit loses a race, then is retried
            monkeypatch.setattr(chathist.event_log, "ABANDONED_AFTER", 0)  # ...after a pause

    with (
        hooked(h.client, "before-parameter-build.dynamodb.TransactWriteItems", stage_seen),
        hooked(h.client, "before-parameter-build.dynamodb.PutItem", commit_after_a_rival),
    ):
        h.add_messages([HumanMessage(f"m{i}") for i in range(30)])
    assert len(set(stagings)) >= 2  # the stale stage was written again under a new id
    contents = [m.content for m in history().messages]
    assert contents[:2] == ["first", "rival"] and contents[2:] == [f"m{i}" for i in range(30)]


def test_capacity_totals_reset_and_share_a_meter(history: History) -> None:
    from chathist.dynamo.capacity import CapacityMeter

    shared = CapacityMeter()
    a, b = history(capacity_meter=shared), history(capacity_meter=shared)
    a.add_user_message("x")
    b.add_user_message("y")
    assert a.consumed_capacity == b.consumed_capacity == shared.total
    assert shared.total.write_units == 2
    before = a.reset_consumed_capacity()
    assert before.requests >= 2 and a.consumed_capacity.requests == 0


def test_a_corrupt_item_is_named_in_the_error(
    history: History, boto3_client: Any, table_name: str
) -> None:
    from chathist import CorruptHistoryError

    history().add_messages([HumanMessage("a"), HumanMessage("b")])
    boto3_client.update_item(
        TableName=table_name,
        Key={"SessionId": {"S": "s"}, "SK": {"S": "1".zfill(SEQ_WIDTH)}},
        UpdateExpression="SET History = :g",
        ExpressionAttributeValues={":g": {"S": "{not json"}},
    )
    with pytest.raises(CorruptHistoryError) as caught:
        _ = history().messages
    assert caught.value.key == {"SessionId": "s", "SK": "1".zfill(SEQ_WIDTH)}
    assert "'s'" in str(caught.value) and "1".zfill(SEQ_WIDTH) in str(caught.value)


def test_an_expired_staged_write_reads_as_gone_while_ttl_deletes_it_piecemeal(
    history: History, boto3_client: Any, table_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    one_item_per_message(monkeypatch)
    history(ttl=1).add_messages([HumanMessage(f"m{i}") for i in range(30)])  # staged
    history().add_user_message("kept")
    time.sleep(2.1)
    staged = [i for i in stored_items(boto3_client, table_name) if i["SK"]["S"].startswith("!")]
    boto3_client.delete_item(  # TTL deletes expired items one by one, in any order
        TableName=table_name, Key={"SessionId": {"S": "s"}, "SK": staged[5]["SK"]}
    )
    assert [m.content for m in history().messages] == ["kept"]
    assert [m.content for m in history(history_size=1).messages] == ["kept"]


@pytest.mark.sync_only
def test_a_clear_that_runs_during_a_read_gives_the_cleared_history(
    history: History, monkeypatch: pytest.MonkeyPatch
) -> None:
    one_item_per_message(monkeypatch)
    writer = history()
    writer.add_user_message("old")
    writer.add_messages([HumanMessage(f"m{i}") for i in range(30)])  # staged, one commit
    reader, clearer = history(), history()
    fired: list[bool] = []

    def clear_after_the_first_page(**_: Any) -> None:
        if not fired:
            fired.append(True)
            clearer.clear()  # deletes the stage the reader is about to read

    event = "after-call.dynamodb.Query"
    reader.client.meta.events.register(event, clear_after_the_first_page, "clear-race")
    try:
        assert reader.messages == []
    finally:
        reader.client.meta.events.unregister(event, unique_id="clear-race")
    assert fired == [True]


def test_no_region_anywhere_is_a_configuration_error(
    table_name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "CHATHIST_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(ConfigurationError, match="region"):
        DynamoDBChatMessageHistory(f"{table_name}-noregion", "s")


def test_chathist_endpoint_url_is_the_default_endpoint_below_an_explicit_one(
    dynamodb_endpoint: str | None,
    dynamodb_region: str | None,
    boto3_client: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if dynamodb_endpoint is None:
        pytest.skip("needs an endpoint URL (DynamoDB Local)")
    name = f"chathist-test-env-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("CHATHIST_ENDPOINT_URL", dynamodb_endpoint)
    try:
        assert create_table(name, region_name=dynamodb_region)  # no endpoint_url: the variable's
        h = DynamoDBChatMessageHistory(name, "s", region_name=dynamodb_region)
        h.add_user_message("via the environment")
        assert [m.content for m in stored_messages(boto3_client, name)] == ["via the environment"]
        assert Binding.resolve(name) == Binding.resolve(name, dynamodb_endpoint)
        # An explicit endpoint_url wins over the variable.
        monkeypatch.setenv("CHATHIST_ENDPOINT_URL", "http://127.0.0.1:9")
        explicit = DynamoDBChatMessageHistory(
            name, "s", dynamodb_endpoint, region_name=dynamodb_region
        )
        assert [m.content for m in explicit.messages] == ["via the environment"]
        # Read when the history is built: changing the variable later changes nothing for it.
        monkeypatch.setenv("CHATHIST_ENDPOINT_URL", dynamodb_endpoint)
        later = DynamoDBChatMessageHistory(name, "s", region_name=dynamodb_region)
        monkeypatch.setenv("CHATHIST_ENDPOINT_URL", "http://127.0.0.1:9")
        assert [m.content for m in later.messages] == ["via the environment"]
    finally:
        with contextlib.suppress(Exception):
            boto3_client.delete_table(TableName=name)


def stored_messages(client: Any, table: str, session: str = "s") -> list[BaseMessage]:
    """The messages of ``session`` as stored, decoded from the raw items (no chathist reader)."""
    from chathist.core.codec import decode_message

    return [
        decode_message(item["codec"]["S"], item["History"]["S"])
        for item in stored_items(client, table, session)
        if item["event"]["S"] == "message"
    ]


def test_missing_credentials_for_an_endpoint_say_that_any_keys_do(
    dynamodb_endpoint: str | None,
    dynamodb_region: str | None,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Any,
) -> None:
    if dynamodb_endpoint is None:
        pytest.skip("needs an endpoint URL (DynamoDB Local)")
    without_aws_credentials(monkeypatch, tmp_path)
    table = f"chathist-test-nokeys-{uuid.uuid4().hex[:8]}"  # clients made afresh (no keys)
    h = DynamoDBChatMessageHistory(table, "s", dynamodb_endpoint, region_name=dynamodb_region)
    with pytest.raises(StorageError, match="AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local"):
        _ = h.messages
    with pytest.raises(StorageError, match="any keys do"):
        create_table(table, endpoint_url=dynamodb_endpoint, region_name=dynamodb_region)


def test_create_table_over_a_langchain_table_says_to_migrate_into_a_new_one(
    dynamodb_endpoint: str | None, dynamodb_region: str | None, list_table: str
) -> None:
    with pytest.raises(TableSchemaError) as caught:
        create_table(list_table, endpoint_url=dynamodb_endpoint, region_name=dynamodb_region)
    text = str(caught.value)
    assert "`chathist create-table NEW_NAME`" in text
    assert f"`chathist migrate --source {list_table} --target NEW_NAME`" in text
    assert "layout=" not in text  # create_table takes no layout


def test_the_event_layout_on_a_table_with_a_numeric_hash_key_is_a_schema_error(
    dynamodb_endpoint: str | None, dynamodb_region: str | None, boto3_client: Any
) -> None:
    name = f"chathist-test-numeric-{uuid.uuid4().hex[:8]}"
    keys = [("SessionId", "N", "HASH"), ("SK", "S", "RANGE")]
    boto3_client.create_table(
        TableName=name,
        AttributeDefinitions=[{"AttributeName": n, "AttributeType": t} for n, t, _ in keys],
        KeySchema=[{"AttributeName": n, "KeyType": k} for n, _, k in keys],
        BillingMode="PAY_PER_REQUEST",
    )
    try:
        h = DynamoDBChatMessageHistory(name, "s", dynamodb_endpoint, region_name=dynamodb_region)
        with pytest.raises(TableSchemaError, match="needs string keys") as caught:
            h.add_user_message("x")
        assert "layout='list'" not in str(caught.value)
    finally:
        boto3_client.delete_table(TableName=name)


def test_a_langchain_turn_is_two_requests(history: History) -> None:
    """A new history object, a window read, then the turn's two messages: the read tells the
    next sequence number, so the append needs no query of its own."""
    history().add_messages([HumanMessage("earlier"), AIMessage("turn")])
    turn = history(history_size=20)
    assert len(turn.messages) == 2
    turn.add_messages([HumanMessage("question"), AIMessage("answer")])
    assert turn.consumed_capacity.requests == 2  # one query, one write
    first = history(history_size=20)  # a session's very first turn: the read finds nothing
    fresh = history("fresh", history_size=20)
    assert fresh.messages == [] and first.messages
    fresh.add_messages([HumanMessage("hello")])
    assert fresh.consumed_capacity.requests == 2
    assert [m.content for m in history("fresh").messages] == ["hello"]


def test_stray_staged_keys_stop_neither_clear_nor_repair(
    history: History, boto3_client: Any, table_name: str
) -> None:
    h = history()
    h.add_messages([HumanMessage("a"), AIMessage("b")])
    for sort_key, extra in [
        ("!garbage", {}),
        ("!stage#xyz", {}),
        ("!stage2#" + "0" * SEQ_WIDTH, {"at": {"N": "1.5"}}),
    ]:
        boto3_client.put_item(
            TableName=table_name,
            Item={"SessionId": {"S": "s"}, "SK": {"S": sort_key}, "event": {"S": "x"}, **extra},
        )
    assert h.repair() == 3  # garbage: no write or reader owns it
    for sort_key in ("!garbage", "!stage#xyz"):
        boto3_client.put_item(
            TableName=table_name, Item={"SessionId": {"S": "s"}, "SK": {"S": sort_key}}
        )
    h.clear()
    assert history().messages == []
    assert not [i for i in stored_items(boto3_client, table_name) if i["SK"]["S"].startswith("!")]


def test_reads_see_only_the_sequence_whatever_else_the_partition_holds(
    history: History, boto3_client: Any, table_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reads ask only for the sequence's key range: items sorting above it (another
    application's, a longer key) and below it (an uncommitted stage, keys before ``!`` or
    between it and the digits) are never read as events, in windows larger than the session
    too, and a full read (which leaves the partition key out of its projection) agrees."""
    one_item_per_message(monkeypatch)
    writer = history()
    writer.add_messages([HumanMessage(f"m{i}") for i in range(5)])
    writer.add_messages([HumanMessage(f"staged{i}") for i in range(30)])  # a committed stage
    for sort_key in ["zz", "9" * (SEQ_WIDTH + 1), "~", "#meta", "/x", " ", "!", "!stage#1"]:
        boto3_client.put_item(
            TableName=table_name,
            Item={"SessionId": {"S": "s"}, "SK": {"S": sort_key}, "event": {"S": "message"}},
        )
    expected = [f"m{i}" for i in range(5)] + [f"staged{i}" for i in range(30)]
    for window in (1, 2, 20, 30, 31, 35, 36, 40, 100):
        assert [m.content for m in history(history_size=window).messages] == expected[-window:]
    assert [m.content for m in history().messages] == expected
    writer.add_user_message("after")  # the window read told the next number: no stray counted
    assert [m.content for m in history(history_size=2).messages] == ["staged29", "after"]


@pytest.mark.sync_only
def test_a_reader_asks_for_what_events_need_and_not_the_key_or_the_write_ids(
    history: History,
) -> None:
    """Window and full reads ask for every event attribute but the partition key (put back by
    the reader), the staging time (no event of the sequence has one) and the write ids (only a
    lazy migration's reader uses a clear's), and read the messages that were written."""
    h = history()
    h.add_messages([HumanMessage("a"), AIMessage("b")])
    h.add_user_message("c")
    asked: list[set[str]] = []

    def seen(params: dict[str, Any], **_: Any) -> None:
        names = params.get("ExpressionAttributeNames", {})
        projected = params["ProjectionExpression"].split(", ")
        asked.append({names.get(p, p) for p in projected})

    with hooked(h.client, "provide-client-params.dynamodb.Query", seen):
        for size in (None, 2):
            assert [m.content for m in history(history_size=size).messages] == (
                ["a", "b", "c"] if size is None else ["b", "c"]
            )
    every = set(h._log.store.items.attribute_names)  # type: ignore[union-attr]
    assert asked == [every - {"SessionId", "w", "at"}] * 2


@pytest.mark.sync_only
def test_the_names_requests_spell_out_are_no_reserved_words(
    boto3_client: Any, table_name: str
) -> None:
    """DynamoDB refuses a reserved word spelled out in an expression: each name chathist spells
    out is accepted, and a reserved one it aliases is refused (so the check can fail)."""
    for name in sorted(PLAIN_NAMES):
        boto3_client.query(
            TableName=table_name,
            KeyConditionExpression="SessionId = :h",
            ExpressionAttributeValues={":h": {"S": "s"}},
            ProjectionExpression=name,
        )
    for reserved in ("blob", "count", "at"):
        with pytest.raises(boto3_client.exceptions.ClientError, match="reserved keyword"):
            boto3_client.query(
                TableName=table_name,
                KeyConditionExpression="SessionId = :h",
                ExpressionAttributeValues={":h": {"S": "s"}},
                ProjectionExpression=reserved,
            )


@pytest.mark.sync_only  # threads sharing one object
def test_threads_sharing_one_history_write_one_at_a_time(history: History) -> None:
    """They would otherwise race each other for the same next number: every append would cost
    several lost conditional puts."""
    shared = history()
    shared.add_user_message("first")
    shared.reset_consumed_capacity()
    threads = [
        threading.Thread(target=lambda n=n: [shared.add_user_message(f"{n}:{i}") for i in range(5)])
        for n in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(history().messages) == 41
    assert shared.consumed_capacity.requests == 40  # one conditional put each, none lost


def test_a_read_that_meets_a_clear_every_time_returns_no_invented_history() -> None:
    """Each of the read's attempts meets erased events (a complete clear, then new writes,
    ran during it): the read raises rather than return a mix of cleared and new messages.
    The rule is driven directly: every Query answers with what such a race leaves."""
    from chathist.core.codec import encode_message
    from chathist.core.events import Event
    from chathist.core.steps import Call
    from chathist.dynamo.event_store import EventStore
    from chathist.dynamo.items import event_items
    from chathist.event_log import EventLog, LogSettings

    items = event_items("T")
    store = EventStore(items)
    payload = encode_message(HumanMessage("new")).data.decode()

    def page(top: int) -> list[dict[str, Any]]:
        return [
            items.to_item("s", Event(top, "message", codec="json", body=payload)),
            items.to_item("s", Event(top - 1, "erased")),
        ]

    steps = EventLog(store, "s", LogSettings()).read()
    queries = 0
    with pytest.raises(ConcurrencyError, match="cleared while it was read"):
        op = next(steps)
        while True:
            assert isinstance(op, Call) and op.operation == "Query"
            queries += 1
            # Each clear puts its tombstone above everything the previous read saw: the next
            # read meets erased events only higher up.
            op = steps.send({"Items": page(7 + 10 * queries)})
    assert queries == 3


def test_an_erased_event_above_every_clear_is_corruption_named_by_its_item(
    history: History, boto3_client: Any, table_name: str
) -> None:
    """An ``erased`` item with no tombstone above it, met by two reads in a row, cannot be a
    clear running during the read (its tombstone would stop the second read): the read raises
    naming it instead of skipping a message."""
    from chathist import CorruptHistoryError

    for i in range(4):  # one item per message: items 0..3
        history().add_messages([HumanMessage(f"m{i}")])
    key = {"SessionId": {"S": "s"}, "SK": {"S": "2".zfill(SEQ_WIDTH)}}
    erased = {**key, "event": {"S": "erased"}, "v": {"N": "1"}}
    boto3_client.put_item(TableName=table_name, Item=erased)
    reader = history()
    with pytest.raises(CorruptHistoryError, match="erased but no clear") as caught:
        _ = reader.messages
    assert caught.value.key == {"SessionId": "s", "SK": "2".zfill(SEQ_WIDTH)}
    assert reader.consumed_capacity.requests == 2  # read again once, then sure


def test_a_clear_of_a_session_holding_only_an_abandoned_stage_deletes_it(
    history: History, boto3_client: Any, table_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = history()
    boto3_client.put_item(
        TableName=table_name,
        Item={
            "SessionId": {"S": "s"},
            "SK": {"S": "!deadbeef#" + "0" * SEQ_WIDTH},
            "event": {"S": "message"},
            "v": {"N": "1"},
            "at": {"N": "1"},  # staged long ago; its commit never came
        },
    )
    h.clear()
    assert stored_items(boto3_client, table_name) == []


def test_a_session_whose_writers_changed_their_ttl_reads_after_ttl_deletes_an_item(
    history: History, boto3_client: Any, table_name: str
) -> None:
    """Plain ``keep0``, a ``ttl=1`` history's ``temp1``, plain ``keep2`` (by a new object, and
    by the object that wrote ``keep0``, which remembers 1 as its next number); DynamoDB's TTL
    deletes ``temp1``: the session reads without it, not as a gap."""
    for session in ("new-object", "same-object"):
        plain = history(session)
        plain.add_user_message("keep0")
        history(session, ttl=1).add_user_message("temp1")
        (history(session) if session == "new-object" else plain).add_user_message("keep2")
        time.sleep(2.1)
        boto3_client.delete_item(  # what TTL does, some time after the expiry
            TableName=table_name,
            Key={"SessionId": {"S": session}, "SK": {"S": "1".zfill(SEQ_WIDTH)}},
        )
        assert [m.content for m in history(session).messages] == ["keep0", "keep2"]
        assert [m.content for m in history(session, history_size=1).messages] == ["keep2"]


def test_a_remembered_number_is_not_reused_after_the_session_expired(
    history: History, boto3_client: Any, table_name: str
) -> None:
    """Every item of a ``ttl`` session expired and TTL deleted them; a new writer starts again
    at 0. The old writer, which remembers its next number (3), must not put its message there:
    a reader would see it, then see another writer's message appear below it."""
    old = history(ttl=2)
    old.add_messages([HumanMessage(f"old{i}") for i in range(3)])
    time.sleep(2.2)
    for item in stored_items(boto3_client, table_name):
        boto3_client.delete_item(
            TableName=table_name, Key={"SessionId": item["SessionId"], "SK": item["SK"]}
        )
    new = history()
    new.add_user_message("b0")
    old.add_user_message("a")
    first = [m.content for m in history().messages]
    new.add_user_message("b1")
    second = [m.content for m in history().messages]
    assert first == ["b0", "a"]
    assert second[: len(first)] == first, "a read was not a prefix of a later one"
    assert [i["SK"]["S"][-1] for i in stored_items(boto3_client, table_name)] == ["0", "1", "2"]


@pytest.mark.parametrize("stray", ["1", "0" * (SEQ_WIDTH + 1), "0" * (SEQ_WIDTH - 1) + "7x"])
def test_a_stray_key_in_the_sequence_range_is_named_and_repair_removes_it(
    history: History, boto3_client: Any, table_name: str, stray: str
) -> None:
    """A sort key no chathist write stores, sorting among the sequence numbers, meets every
    read of the session (and every write, when it sorts above the newest event): each raises
    CorruptHistoryError naming it and the way out, and ``repair()`` deletes it (and nothing
    else). A clear deletes one below its tombstone."""
    from chathist import CorruptHistoryError

    history().add_messages([HumanMessage("a"), AIMessage("b")])
    item = {"SessionId": {"S": "s"}, "SK": {"S": stray}, "event": {"S": "message"}}
    boto3_client.put_item(TableName=table_name, Item=item)
    above_newest = stray > "1".zfill(SEQ_WIDTH)
    actions = [lambda h: h.messages]
    if above_newest:
        actions += [lambda h: h.add_user_message("c"), lambda h: h.clear()]
    for action in actions:
        with pytest.raises(CorruptHistoryError, match="repair") as caught:
            action(history())
        assert caught.value.key == {"SessionId": "s", "SK": stray}
    assert history().repair() == 1
    assert [m.content for m in history().messages] == ["a", "b"]
    history().add_user_message("c")
    boto3_client.put_item(TableName=table_name, Item=item)
    if not above_newest:
        history().clear()  # the stray lies below its tombstone: deleted with the rest
        assert stray not in {i["SK"]["S"] for i in stored_items(boto3_client, table_name)}
    else:
        assert history().repair() == 1
        history().clear()
    assert history().messages == []
