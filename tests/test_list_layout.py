"""The list layout (LangChain's one item per session) through chathist, against DynamoDB Local."""

from __future__ import annotations

import contextlib
import re
import shlex
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from hypothesis import given
from hypothesis import strategies as st
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from chathist import (
    ConcurrencyError,
    ConfigurationError,
    CorruptHistoryError,
    DynamoDBChatMessageHistory,
    ItemTooLargeError,
    TableSchemaError,
    UnsupportedValueError,
)
from chathist.cli import main
from chathist.core.listformat import messages_from_legacy, messages_to_legacy
from chathist.dynamo.list_store import VERSION_ATTRIBUTE
from tests.helpers import hooked, list_table_named

History = Callable[..., DynamoDBChatMessageHistory]


@pytest.fixture
def hash_table(boto3_client: Any) -> Iterator[str]:
    """A fresh hash-only table keyed by ``SessionId``, as in LangChain's docs."""
    with list_table_named(boto3_client) as name:
        yield name


@pytest.fixture
def listed(
    hash_table: str, dynamodb_endpoint: str | None, dynamodb_region: str | None, api: Any
) -> History:
    """Make list-layout histories on ``hash_table``: ``listed(session_id="s", **options)``,
    driven through the sync API or the async one (`api`)."""

    def make(session_id: str = "s", **options: Any) -> DynamoDBChatMessageHistory:
        options.setdefault("layout", "list")
        history: DynamoDBChatMessageHistory = api.history(
            hash_table, session_id, dynamodb_endpoint, region_name=dynamodb_region, **options
        )
        return history

    return make


def raw_item(client: Any, table: str, key: dict[str, str]) -> dict[str, Any] | None:
    """The stored item (low-level attribute values), read consistently."""
    raw_key = {name: {"S": value} for name, value in key.items()}
    response = client.get_item(TableName=table, Key=raw_key, ConsistentRead=True)
    item: dict[str, Any] | None = response.get("Item")
    return item


def decimals_in(value: Any) -> list[Any]:
    """Every Decimal anywhere inside ``value``."""
    if isinstance(value, Decimal):
        return [value]
    if isinstance(value, dict):
        return [d for v in value.values() for d in decimals_in(v)]
    if isinstance(value, (list, tuple)):
        return [d for v in value for d in decimals_in(v)]
    return []


def dumped(messages: list[BaseMessage]) -> list[dict[str, Any]]:
    return [m.model_dump() for m in messages]


# -- the seed notebook ---------------------------------------------------------------------------


def test_notebook_code_runs_unchanged_on_a_hash_only_table_and_warns_once(
    boto3_client: Any, dynamodb_endpoint: str | None
) -> None:
    with list_table_named(boto3_client, prefix="SessionTable") as table:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            history = DynamoDBChatMessageHistory(
                table_name=table, session_id="0", endpoint_url=dynamodb_endpoint
            )
            history.add_user_message("hi!")
            history.add_ai_message("whats up?")
            again = DynamoDBChatMessageHistory(
                table_name=table, session_id="1", endpoint_url=dynamodb_endpoint
            )
            again.add_user_message("another session")
            assert history.messages == [HumanMessage("hi!"), AIMessage("whats up?")]
            assert again.messages == [HumanMessage("another session")]
        ours = [w for w in caught if table in str(w.message)]
        assert len(ours) == 1
        assert "400 KB" in str(ours[0].message)
        assert f"chathist migrate --source {table}" in str(ours[0].message)
        item = raw_item(boto3_client, table, {"SessionId": "0"})
        assert item is not None
        assert [entry["M"]["type"]["S"] for entry in item["History"]["L"]] == ["human", "ai"]


def test_the_warnings_commands_run_verbatim_move_the_sessions(
    boto3_client: Any, dynamodb_endpoint: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    with list_table_named(boto3_client) as table:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            history = DynamoDBChatMessageHistory(table, "0", dynamodb_endpoint)
            history.add_messages([HumanMessage("hi!"), AIMessage("whats up?")])
        (warning,) = [str(w.message) for w in caught if table in str(w.message)]
        commands = re.findall(r"`(chathist [^`]+)`", warning)
        assert [c.split()[1] for c in commands] == ["create-table", "migrate"]
        target = f"{table}-events"
        try:
            for command in commands:
                endpoint = (
                    [] if dynamodb_endpoint is None else ["--endpoint-url", dynamodb_endpoint]
                )
                assert main([*shlex.split(command)[1:], *endpoint]) == 0, capsys.readouterr()
            moved = DynamoDBChatMessageHistory(target, "0", dynamodb_endpoint, layout="events")
            assert moved.messages == [HumanMessage("hi!"), AIMessage("whats up?")]
        finally:
            with contextlib.suppress(Exception):
                boto3_client.delete_table(TableName=target)


def test_auto_with_a_key_dict_is_the_list_layout_and_warns_once(
    boto3_client: Any, dynamodb_endpoint: str | None
) -> None:
    key = {"PK": "session_id::0", "SK": "langchain_history"}
    with list_table_named(boto3_client, "PK", "SK") as table:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            history = DynamoDBChatMessageHistory(table, "0", dynamodb_endpoint, key=key)
            DynamoDBChatMessageHistory(table, "1", dynamodb_endpoint, key=key)
        history.add_user_message("hi")
        assert raw_item(boto3_client, table, key) is not None
        assert history.messages == [HumanMessage("hi")]
    ours = [w for w in caught if table in str(w.message)]
    assert len(ours) == 1
    assert ours[0].filename == __file__  # points at the caller's line
    assert "chathist migrate" in str(ours[0].message)


def test_the_auto_layout_warning_from_a_read_points_at_the_reader(
    boto3_client: Any, dynamodb_endpoint: str | None
) -> None:
    with list_table_named(boto3_client) as table:
        history = DynamoDBChatMessageHistory(table, "0", dynamodb_endpoint)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert history.messages == []
    ours = [w for w in caught if table in str(w.message)]
    assert len(ours) == 1
    assert ours[0].filename == __file__  # the line that read, not its caller's caller


@pytest.mark.sync_only
def test_a_truncating_append_keeps_to_append_timeout(
    listed: History, hash_table: str, boto3_client: Any
) -> None:
    """Another writer changes the item before every replace: the append gives up on its time
    budget, not after a million attempts."""
    history = listed(history_size=2, max_append_attempts=10**6, append_timeout=0.5)
    history.add_messages([HumanMessage("a"), HumanMessage("b")])

    def rival(params: dict[str, Any], **kwargs: Any) -> None:
        if "#h = :h" in params.get("UpdateExpression", ""):  # a replace, read a moment ago
            boto3_client.update_item(
                TableName=hash_table,
                Key={"SessionId": {"S": "s"}},
                UpdateExpression="ADD #v :one",
                ExpressionAttributeNames={"#v": VERSION_ATTRIBUTE},
                ExpressionAttributeValues={":one": {"N": "1"}},
            )

    started = time.monotonic()
    with (
        hooked(history.client, "before-parameter-build.dynamodb.UpdateItem", rival),
        pytest.raises(ConcurrencyError, match=r"0\.5 s budget"),
    ):
        history.add_messages([HumanMessage("c")])
    assert time.monotonic() - started < 5
    assert [m.content for m in listed().messages] == ["a", "b"]


def test_auto_on_a_composite_table_without_key_is_the_event_layout(
    table_name: str, dynamodb_endpoint: str | None, dynamodb_region: str | None, boto3_client: Any
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        history = DynamoDBChatMessageHistory(
            table_name, "s", dynamodb_endpoint, region_name=dynamodb_region
        )
        history.add_messages([HumanMessage("a"), AIMessage("b")])
    items = boto3_client.query(
        TableName=table_name,
        KeyConditionExpression="SessionId = :s",
        ExpressionAttributeValues={":s": {"S": "s"}},
    )["Items"]
    assert [i["SK"]["S"] for i in items] == [f"{0:020d}"]  # one event item holds both
    assert history.messages == [HumanMessage("a"), AIMessage("b")]


def test_explicit_layouts(listed: History, hash_table: str, dynamodb_endpoint: str | None) -> None:
    with pytest.raises(ConfigurationError, match="layout='list'"):
        DynamoDBChatMessageHistory(
            hash_table, "s", dynamodb_endpoint, key={"SessionId": "s"}, layout="events"
        )
    with pytest.raises(ConfigurationError, match="layout must be"):
        DynamoDBChatMessageHistory(hash_table, "s", dynamodb_endpoint, layout="rows")  # type: ignore[arg-type]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an explicit layout="list" does not warn
        history = listed()
        history.add_user_message("x")
        assert history.messages == [HumanMessage("x")]


def test_wrong_hash_key_name_is_a_schema_error(
    hash_table: str, dynamodb_endpoint: str | None
) -> None:
    history = DynamoDBChatMessageHistory(hash_table, "s", dynamodb_endpoint, primary_key_name="Id")
    with pytest.raises(TableSchemaError, match="primary_key_name='SessionId'"):
        history.add_user_message("x")


@pytest.mark.sync_only
def test_a_table_whose_keys_do_not_fit_the_list_layout_is_a_schema_error_before_any_request(
    boto3_client: Any, dynamodb_endpoint: str | None, table_name: str
) -> None:
    # An event table (composite key) asked for the list layout.
    listed_on_events = DynamoDBChatMessageHistory(table_name, "s", dynamodb_endpoint, layout="list")
    sent: list[str] = []
    with hooked(
        listed_on_events.client,
        "before-call.dynamodb.*",
        lambda model, **_: sent.append(model.name),
    ):
        for action in (
            lambda: listed_on_events.messages,
            lambda: listed_on_events.add_user_message("x"),
        ):
            with pytest.raises(TableSchemaError, match="layout='events'") as caught:
                action()
            assert "RANGE SK (S)" in str(caught.value)
    assert sent == ["DescribeTable"]  # asked once, and nothing was sent to the item
    assert boto3_client.scan(TableName=table_name)["Count"] == 0
    # A hash key that is a number, in the list layout and in auto (which picks the list layout).
    with numeric_hash_table(boto3_client) as numeric:
        for options in ({"layout": "list"}, {}):
            history = DynamoDBChatMessageHistory(numeric, "s", dynamodb_endpoint, **options)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                with pytest.raises(TableSchemaError, match="SessionId is a number in the table"):
                    history.add_user_message("x")
                with pytest.raises(TableSchemaError, match="pass key="):
                    history.messages  # noqa: B018
        # ... which a key of the table's type addresses, as with LangChain's class.
        by_number = DynamoDBChatMessageHistory(
            numeric, "s", dynamodb_endpoint, key={"SessionId": 7}
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            by_number.add_user_message("numbered")
        assert by_number.messages == [HumanMessage("numbered")]
        item = boto3_client.get_item(TableName=numeric, Key={"SessionId": {"N": "7"}})
        assert "Item" in item


@contextlib.contextmanager
def numeric_hash_table(client: Any) -> Iterator[str]:
    """A fresh table whose only key is a number (``SessionId``, type N)."""
    name = f"chathist-test-numeric-{uuid.uuid4().hex[:8]}"
    client.create_table(
        TableName=name,
        AttributeDefinitions=[{"AttributeName": "SessionId", "AttributeType": "N"}],
        KeySchema=[{"AttributeName": "SessionId", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    client.get_waiter("table_exists").wait(TableName=name)
    try:
        yield name
    finally:
        with contextlib.suppress(Exception):
            client.delete_table(TableName=name)


# -- format and options --------------------------------------------------------------------------


def test_reserved_word_attribute_names_work(
    listed: History, boto3_client: Any, hash_table: str
) -> None:
    history = listed(history_messages_key="Data", ttl=60, ttl_key_name="ttl")
    before = int(time.time())
    history.add_messages([HumanMessage("one"), AIMessage("two")])
    history.add_user_message("three")
    assert [m.content for m in history.messages] == ["one", "two", "three"]
    item = raw_item(boto3_client, hash_table, {"SessionId": "s"})
    assert item is not None
    assert len(item["Data"]["L"]) == 3
    assert before + 60 <= int(item["ttl"]["N"]) <= int(time.time()) + 60
    history.clear()
    assert raw_item(boto3_client, hash_table, {"SessionId": "s"}) is None
    assert history.messages == []


def test_ttl_is_refreshed_on_every_write(
    listed: History, boto3_client: Any, hash_table: str
) -> None:
    history = listed(ttl=3600)
    history.add_user_message("a")
    boto3_client.update_item(
        TableName=hash_table,
        Key={"SessionId": {"S": "s"}},
        UpdateExpression="SET expireAt = :old",
        ExpressionAttributeValues={":old": {"N": "1000"}},
    )
    before = int(time.time())
    history.add_user_message("b")
    item = raw_item(boto3_client, hash_table, {"SessionId": "s"})
    assert item is not None
    assert int(item["expireAt"]["N"]) >= before + 3600
    no_ttl = listed()
    no_ttl.add_user_message("c")
    item = raw_item(boto3_client, hash_table, {"SessionId": "s"})
    assert item is not None
    assert int(item["expireAt"]["N"]) >= before + 3600  # left alone without ttl, as LangChain does


def test_numbers_come_back_as_int_and_float_never_decimal(listed: History) -> None:
    history = listed(coerce_float_to_decimal=True)
    message = AIMessage(
        "n",
        additional_kwargs={
            "i": 7,
            "f": 0.1,
            "neg": -2.5e-9,
            "big": 12345678901234567890,
            "b": True,
        },
        response_metadata={"nested": [{"x": 1.25, "y": [3, 4.5]}], "zero": 0, "none": None},
        usage_metadata={"input_tokens": 3, "output_tokens": 4, "total_tokens": 7},
    )
    history.add_message(message)
    back = history.messages
    assert back == [message]
    assert decimals_in(back[0].model_dump()) == []
    kwargs = back[0].additional_kwargs
    assert type(kwargs["i"]) is int and type(kwargs["f"]) is float and kwargs["f"] == 0.1
    assert type(kwargs["big"]) is int and kwargs["big"] == 12345678901234567890
    assert kwargs["b"] is True
    nested = back[0].response_metadata["nested"][0]
    assert type(nested["x"]) is float and nested["y"] == [3, 4.5]


def test_decimals_are_stored_as_the_int_or_float_of_the_same_value(listed: History) -> None:
    """What boto3 (and so LangChain's class) reads back can be written again, with or without
    coerce_float_to_decimal."""
    read_back = AIMessage(
        "n", response_metadata={"n": Decimal("3"), "t": Decimal("0.7"), "e": Decimal("1E+2")}
    )
    for coerce in (False, True):
        history = listed(session_id=f"decimals-{coerce}", coerce_float_to_decimal=coerce)
        history.add_message(read_back)
        (back,) = history.messages
        assert back.response_metadata == {"n": 3, "t": 0.7, "e": 100}
        types = {name: type(value) for name, value in back.response_metadata.items()}
        assert types == {"n": int, "t": float, "e": int}
        with pytest.raises(UnsupportedValueError, match=r"response_metadata\.x.*no float"):
            history.add_message(
                AIMessage("", response_metadata={"x": Decimal("0.1000000000000000000001")})
            )
        with pytest.raises(UnsupportedValueError, match=r"response_metadata\.x.*NaN"):
            history.add_message(AIMessage("", response_metadata={"x": Decimal("NaN")}))
        assert len(history.messages) == 1


def test_floats_need_coerce_float_to_decimal(
    listed: History, boto3_client: Any, hash_table: str
) -> None:
    history = listed()
    history.add_user_message("kept")
    with pytest.raises(UnsupportedValueError, match="coerce_float_to_decimal=True"):
        history.add_message(HumanMessage("x", additional_kwargs={"score": 0.5}))
    with pytest.raises(UnsupportedValueError, match="NaN"):
        listed(coerce_float_to_decimal=True).add_message(
            HumanMessage("x", additional_kwargs={"score": float("nan")})
        )
    assert history.messages == [HumanMessage("kept")]


def test_history_size_keeps_only_the_latest_messages(
    listed: History, boto3_client: Any, hash_table: str
) -> None:
    history = listed(history_size=3)
    for n in range(5):
        history.add_user_message(str(n))
    history.add_messages([AIMessage("a"), AIMessage("b")])
    assert [m.content for m in history.messages] == ["4", "a", "b"]
    item = raw_item(boto3_client, hash_table, {"SessionId": "s"})
    assert item is not None
    assert len(item["History"]["L"]) == 3
    history.add_messages([HumanMessage(str(n)) for n in range(10, 15)])  # more than history_size
    assert [m.content for m in history.messages] == ["12", "13", "14"]
    assert [m.content for m in listed().messages] == ["12", "13", "14"]
    unlimited = listed(history_size=0)  # 0 means no limit, as in LangChain's class
    unlimited.add_messages([HumanMessage(str(n)) for n in range(20, 25)])
    assert len(unlimited.messages) == 8
    assert len(raw_item(boto3_client, hash_table, {"SessionId": "s"})["History"]["L"]) == 8  # type: ignore[index]


def test_add_messages_takes_any_iterable_of_messages_once(listed: History) -> None:
    history = listed()
    history.add_messages(m for m in [HumanMessage("from"), AIMessage("a generator")])  # type: ignore[arg-type]
    assert history.messages == [HumanMessage("from"), AIMessage("a generator")]


def test_an_append_past_400_kb_fails_cleanly_and_leaves_the_item_intact(
    listed: History, boto3_client: Any, hash_table: str
) -> None:
    history = listed()
    chunk = "x" * 120_000
    for n in range(3):
        history.add_user_message(f"{n}{chunk}")
    before = raw_item(boto3_client, hash_table, {"SessionId": "s"})
    with pytest.raises(ItemTooLargeError, match="chathist migrate --source") as raised:
        history.add_user_message(chunk)
    assert "400 KB" in str(raised.value)
    assert f"`chathist create-table NEW_TABLE`, then `chathist migrate --source {hash_table}" in (
        str(raised.value)
    )
    assert raw_item(boto3_client, hash_table, {"SessionId": "s"}) == before
    assert [m.content[0] for m in history.messages] == ["0", "1", "2"]
    truncating = listed(history_size=10)
    with pytest.raises(ItemTooLargeError):
        truncating.add_user_message(chunk)
    assert raw_item(boto3_client, hash_table, {"SessionId": "s"}) == before


def test_capacity_is_recorded(listed: History) -> None:
    history = listed()
    history.add_user_message("x" * 3000)
    history.messages  # noqa: B018
    used = history.consumed_capacity
    assert used.requests == 2
    assert used.write_units >= 3
    assert used.read_units >= 0.5


# -- concurrency ---------------------------------------------------------------------------------


def _hammer(make: Callable[[], DynamoDBChatMessageHistory], threads: int, each: int) -> None:
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def run(writer: int) -> None:
        history = make()
        try:
            barrier.wait()
            for n in range(each):
                history.add_user_message(f"{writer}:{n}")
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    workers = [threading.Thread(target=run, args=(w,)) for w in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []


def _per_writer(contents: list[str]) -> dict[int, list[int]]:
    found: dict[int, list[int]] = {}
    for text in contents:
        writer, n = text.split(":")
        found.setdefault(int(writer), []).append(int(n))
    return found


def test_ten_threads_appending_lose_nothing(
    listed: History, boto3_client: Any, hash_table: str
) -> None:
    _hammer(lambda: listed("race"), threads=10, each=5)
    contents = [str(m.content) for m in listed("race").messages]
    assert len(contents) == 50
    assert _per_writer(contents) == {w: list(range(5)) for w in range(10)}
    item = raw_item(boto3_client, hash_table, {"SessionId": "race"})
    assert item is not None
    assert item[VERSION_ATTRIBUTE]["N"] == "50"


def test_ten_threads_appending_with_history_size_lose_nothing(
    listed: History, boto3_client: Any, hash_table: str
) -> None:
    _hammer(lambda: listed("race", history_size=8), threads=10, each=3)
    contents = [str(m.content) for m in listed("race").messages]
    assert len(contents) == 8
    assert len(set(contents)) == 8
    for numbers in _per_writer(contents).values():
        # What a writer still has in the item is the newest of what it wrote, in order.
        assert numbers == list(range(3 - len(numbers), 3))
    item = raw_item(boto3_client, hash_table, {"SessionId": "race"})
    assert item is not None
    assert item[VERSION_ATTRIBUTE]["N"] == "30"  # every write applied once, none overwritten


# -- the pure converters (Hypothesis) -------------------------------------------------------------

_numbers = st.one_of(
    st.integers(min_value=-(10**37), max_value=10**37),
    st.floats(allow_nan=False, allow_infinity=False).filter(
        lambda f: f == 0 or 1e-130 <= abs(f) < 1e125
    ),
)
_json = st.recursive(
    st.none() | st.booleans() | st.text(max_size=20) | _numbers,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(kwargs=st.dictionaries(st.text(max_size=8), _json, max_size=4), text=st.text(max_size=50))
def test_legacy_converters_round_trip_through_dynamodb_types(
    kwargs: dict[str, Any], text: str
) -> None:
    message = AIMessage(text, additional_kwargs=kwargs)
    entries = messages_to_legacy([message], coerce_float_to_decimal=True)
    stored = [TypeDeserializer().deserialize(TypeSerializer().serialize(e)) for e in entries]
    back = messages_from_legacy(stored)
    assert back == [message]
    assert decimals_in(back[0].model_dump()) == []

    def same_kinds(a: Any, b: Any) -> None:
        if isinstance(a, float) and not a.is_integer():
            assert type(b) is float and a == b
        elif isinstance(a, int) and not isinstance(a, bool):
            assert type(b) is int and a == b
        elif isinstance(a, dict):
            for k in a:
                same_kinds(a[k], b[k])
        elif isinstance(a, list):
            for x, y in zip(a, b, strict=True):
                same_kinds(x, y)

    same_kinds(kwargs, back[0].additional_kwargs)


@given(
    stored=st.decimals(allow_nan=False, allow_infinity=False)
    | st.floats(allow_nan=False, allow_infinity=False).map(lambda f: Decimal(repr(f)))
    | st.integers().map(Decimal)
)
def test_a_decimal_round_trips_through_the_list_layout_equal_in_value_or_is_refused(
    stored: Decimal,
) -> None:
    message = AIMessage("x", response_metadata={"n": stored})
    try:
        entries = messages_to_legacy([message], coerce_float_to_decimal=False)
    except UnsupportedValueError:
        return
    written = [TypeDeserializer().deserialize(TypeSerializer().serialize(e)) for e in entries]
    number = messages_from_legacy(written)[0].response_metadata["n"]
    if type(number) is int:
        assert Decimal(number) == stored
    else:
        assert type(number) is float and Decimal(repr(number)) == stored


def test_legacy_converters_refuse_what_dynamodb_cannot_hold() -> None:
    for bad in (float("inf"), 1e-131, 1e300, 10**40, b"bytes", {1: "x"}):
        with pytest.raises(UnsupportedValueError):
            messages_to_legacy(
                [HumanMessage("x", additional_kwargs={"v": bad})], coerce_float_to_decimal=True
            )
    for corrupt in ("text", [{"type": "human"}], [{"type": "nope", "data": {"content": "x"}}]):
        with pytest.raises(CorruptHistoryError):
            messages_from_legacy(corrupt)  # type: ignore[arg-type]


def test_an_expired_list_item_reads_empty_and_is_never_appended_to(
    listed: History, hash_table: str, boto3_client: Any
) -> None:
    """DynamoDB deletes expired items days late: until then the list layout treats an item
    whose TTL has passed as gone, as the event layout does with expired events."""
    old = listed(ttl=60)
    old.add_messages([HumanMessage("old 1"), AIMessage("old 2")])
    boto3_client.update_item(  # its TTL passed a while ago
        TableName=hash_table,
        Key={"SessionId": {"S": "s"}},
        UpdateExpression="SET expireAt = :past",
        ExpressionAttributeValues={":past": {"N": str(int(time.time()) - 3600)}},
    )
    assert listed().messages == []
    listed(ttl=60).add_messages([HumanMessage("new")])
    assert [m.content for m in listed().messages] == ["new"]
    item = raw_item(boto3_client, hash_table, {"SessionId": "s"})
    assert item is not None and int(item["expireAt"]["N"]) > time.time()
