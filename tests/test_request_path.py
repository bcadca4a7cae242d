"""The request path: error mapping, paging, steps driving, the retry rule and the size model."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from botocore import useragent
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chathist import (
    ConfigurationError,
    ItemTooLargeError,
    StorageError,
    TableNotFoundError,
    TableSchemaError,
)
from chathist.core.retry import BACKOFF_CAP, RetryRule
from chathist.core.sizes import ITEM_LIMIT, attribute_size, item_size, number_size, write_units
from chathist.core.steps import Steps, call, sleep
from chathist.dynamo.binding import ENDPOINT_ENV, Binding, check_endpoint_url
from chathist.dynamo.capacity import CapacityMeter
from chathist.dynamo.client import USER_AGENT, Sender, client_for
from chathist.dynamo.paging import Cursor
from chathist.dynamo.translate import ConditionFailed, TransactionCanceled, translate
from tests.helpers import hooked


def client_error(code: str, message: str = "", **extra: Any) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}, **extra}, "PutItem")


@pytest.mark.parametrize(
    ("error", "kind", "fragment"),
    [
        (client_error("ResourceNotFoundException"), TableNotFoundError, "does not exist"),
        (
            client_error("ValidationException", "Item size has exceeded the maximum allowed size"),
            ItemTooLargeError,
            "400 KB",
        ),
        (
            client_error("ValidationException", "The number of conditions on the keys is invalid"),
            TableSchemaError,
            "key schema",
        ),
        (client_error("ValidationException", "Type mismatch for key"), TableSchemaError, "key"),
        (client_error("ThrottlingException", "slow down"), StorageError, "ThrottlingException"),
        (EndpointConnectionError(endpoint_url="http://x"), StorageError, "Could not connect"),
    ],
)
def test_every_botocore_error_becomes_a_typed_error(
    error: Exception, kind: type[Exception], fragment: str
) -> None:
    translated = translate(error, "PutItem", {"TableName": "T"})
    assert type(translated) is kind
    assert fragment in str(translated)


def test_condition_and_transaction_failures_keep_what_the_caller_decides_on() -> None:
    item = {"SK": {"S": "1"}}
    failed = translate(client_error("ConditionalCheckFailedException", Item=item), "PutItem", {})
    assert isinstance(failed, ConditionFailed) and failed.item == item
    reasons = [{"Code": "None"}, {"Code": "ConditionalCheckFailed"}]
    canceled = translate(
        client_error("TransactionCanceledException", CancellationReasons=reasons),
        "TransactWriteItems",
        {"TransactItems": [{"Put": {"TableName": "T"}}]},
    )
    assert isinstance(canceled, TransactionCanceled)
    assert canceled.codes == ["None", "ConditionalCheckFailed"]
    assert "'T'" in str(canceled)


def test_keys_dynamodb_local_rejects_get_a_hint() -> None:
    error = client_error("UnrecognizedClientException", "The Access Key ID is invalid.")
    local = translate(error, "Query", {"TableName": "T"}, where="http://h:1")
    assert "letters and digits only" in str(local)
    assert "letters" not in str(translate(error, "Query", {"TableName": "T"}, where="AWS x"))


def test_missing_credentials_against_an_endpoint_hint_at_dummy_keys() -> None:
    local = translate(NoCredentialsError(), "Query", {"TableName": "T"}, where="http://h:1")
    assert isinstance(local, StorageError) and "AWS_ACCESS_KEY_ID" in str(local)
    aws = translate(NoCredentialsError(), "Query", {"TableName": "T"}, where="AWS region x")
    assert "AWS_ACCESS_KEY_ID" not in str(aws)


@pytest.mark.parametrize("url", ["127.0.0.1:8000", "localhost", "ftp://h", "http://"])
def test_endpoint_urls_without_scheme_or_host_are_refused(url: str) -> None:
    with pytest.raises(ConfigurationError, match="http"):
        check_endpoint_url(url)


def test_the_endpoint_variable_sits_below_the_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENDPOINT_ENV, "http://127.0.0.1:1")
    assert Binding.resolve("T").endpoint_url == "http://127.0.0.1:1"
    assert Binding.resolve("T", "http://127.0.0.1:2").endpoint_url == "http://127.0.0.1:2"
    binding = Binding.resolve("T")
    monkeypatch.setenv(ENDPOINT_ENV, "http://127.0.0.1:3")
    assert binding == Binding.resolve("T", "http://127.0.0.1:1")  # settled when made
    assert hash(binding) == hash(Binding.resolve("T", "http://127.0.0.1:1"))


# -- against DynamoDB Local ------------------------------------------------------------------------


@pytest.fixture
def sender(table_name: str, dynamodb_endpoint: str | None, dynamodb_region: str | None) -> Sender:
    return Sender(Binding.resolve(table_name, dynamodb_endpoint, dynamodb_region), CapacityMeter())


def put(table: str, sort: str, **extra: Any) -> Steps[dict[str, Any]]:
    return call(
        "PutItem",
        TableName=table,
        Item={"SessionId": {"S": "s"}, "SK": {"S": sort}, **extra},
        ConditionExpression="attribute_not_exists(SK)",
    )


def test_the_user_agent_is_built_once_not_per_request(
    sender: Sender, table_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """botocore would rebuild the User-Agent twice per request, sanitising every component;
    chathist's clients send the one built at import."""
    built: list[str] = []
    original = useragent.sanitize_user_agent_string_component

    def counted(raw: str, allow_hash: bool) -> str:
        built.append(raw)
        return original(raw, allow_hash)

    monkeypatch.setattr(useragent, "sanitize_user_agent_string_component", counted)
    headers: list[str] = []

    def seen(request: Any, **_: Any) -> None:
        headers.append(request.headers["User-Agent"].decode())

    client = client_for(sender.binding)
    with hooked(client, "before-send.dynamodb", seen):
        for sort in ("a", "b", "c"):
            sender.run(put(table_name, sort))
    assert headers == [USER_AGENT] * 3 and " lib/chathist" in USER_AGENT
    assert built == []


def test_a_failed_condition_is_thrown_into_the_steps_and_metered(
    sender: Sender, table_name: str
) -> None:
    def twice() -> Steps[str]:
        yield from put(table_name, "a")
        try:
            yield from put(table_name, "a")
        except ConditionFailed:
            return "taken"
        return "free"

    assert sender.run(twice()) == "taken"
    total = sender.meter.total
    assert total.requests == 2  # (DynamoDB Local reports no capacity for a failed condition)


def test_an_error_the_steps_do_not_catch_reaches_the_caller(sender: Sender) -> None:
    with pytest.raises(TableNotFoundError):
        sender.call("GetItem", TableName="no-such-table", Key={"SessionId": {"S": "s"}})


def test_sleep_steps_are_slept(sender: Sender, monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr("chathist.dynamo.client.time.sleep", slept.append)

    def nap() -> Steps[int]:
        yield from sleep(0.25)
        yield from sleep(0)  # nothing to do
        return 7

    assert sender.run(nap()) == 7
    assert slept == [0.25]


@pytest.fixture
def thirty(sender: Sender, table_name: str) -> Iterator[None]:
    for i in range(30):
        sender.call(
            "PutItem",
            TableName=table_name,
            Item={"SessionId": {"S": "s"}, "SK": {"S": f"{i:02d}"}},
        )
    sender.meter.reset()
    yield


def query(table: str, limit: int) -> Cursor:
    return Cursor(
        "Query",
        {
            "TableName": table,
            "KeyConditionExpression": "SessionId = :s",
            "ExpressionAttributeValues": {":s": {"S": "s"}},
            "Limit": limit,
        },
    )


def test_a_cursor_follows_every_page_in_order(
    sender: Sender, table_name: str, thirty: None
) -> None:
    keys = [item["SK"]["S"] for item in sender.items(query(table_name, 7))]
    assert keys == [f"{i:02d}" for i in range(30)]
    assert sender.meter.total.requests == 5  # 7+7+7+7+2, the last page says there is no more


def test_a_reader_that_stops_fetches_no_further_page(
    sender: Sender, table_name: str, thirty: None
) -> None:
    for item in sender.items(query(table_name, 7)):
        if item["SK"]["S"] == "09":
            break
    assert sender.meter.total.requests == 2


def test_an_answer_without_items_is_an_error_not_an_empty_page(
    sender: Sender, table_name: str, thirty: None
) -> None:
    def cut(parsed: dict[str, Any], **kwargs: Any) -> None:
        parsed.pop("Items", None)  # as a body cut on the wire that still parsed

    with (
        hooked(sender.client, "after-call.dynamodb.Query", cut),
        pytest.raises(StorageError, match="no Items list"),
    ):
        list(sender.items(query(table_name, 7)))


# -- the retry rule --------------------------------------------------------------------------------


def test_attempts_stop_at_the_count_or_the_deadline() -> None:
    assert list(RetryRule(attempts=4).start()) == [0, 1, 2, 3]
    now = [0.0]
    attempts = RetryRule(attempts=100, timeout=10.0).start(clock=lambda: now[0])
    seen = []
    for attempt in attempts:
        seen.append(attempt)
        now[0] += 4.0
    assert seen == [0, 1, 2]  # the fourth would start after 12 s > 10 s
    assert attempts.spent == "gave up after 3 attempts, 10 s budget"


@given(st.integers(min_value=0, max_value=10_000))
def test_backoff_is_jittered_and_capped(attempt: int) -> None:
    delay = RetryRule.backoff(attempt)
    assert 0.0 <= delay <= BACKOFF_CAP


# -- the size model --------------------------------------------------------------------------------


def test_sizes_follow_the_documented_rules() -> None:
    assert number_size("1000") == number_size("1") == 2  # trailing zeros are trimmed
    assert number_size("0.001") == 2 and number_size("12345") == 4
    assert number_size("1" * 38) == 20 and number_size("-" + "1" * 38) == 21
    assert number_size("0") == number_size("-0.0") == 1 and number_size("-1") == 3
    assert attribute_size({"L": [{"S": "ab"}, {"NULL": True}]}) == 3 + (1 + 2) + (1 + 1)
    assert attribute_size({"M": {"k": {"BOOL": True}}}) == 3 + 1 + 1 + 1
    assert item_size({"PK": {"S": "é"}, "n": {"N": "-12.5"}}) == 2 + 2 + 1 + 4


values = st.recursive(
    st.one_of(
        st.text(max_size=300).map(lambda s: {"S": s}),
        st.integers(-(10**30), 10**30).map(lambda n: {"N": str(n)}),
        st.binary(min_size=1, max_size=300).map(lambda b: {"B": b}),
        st.booleans().map(lambda b: {"BOOL": b}),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=5).map(lambda items: {"L": items}),
        st.dictionaries(st.text(min_size=1, max_size=8), inner, max_size=5).map(lambda m: {"M": m}),
    ),
    max_leaves=20,
)


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.dictionaries(
        st.text(min_size=1, max_size=10).filter(lambda n: n not in ("SessionId", "SK")),
        values,
        max_size=6,
    ),
    st.integers(min_value=0, max_value=3000),
)
def test_the_size_model_prices_a_put_as_dynamodb_does(
    sender: Sender, table_name: str, attributes: dict[str, Any], padding: int
) -> None:
    item = {"SessionId": {"S": "s"}, "SK": {"S": uuid.uuid4().hex}, "pad": {"S": "x" * padding}}
    item.update(attributes)
    before = sender.meter.total.write_units
    sender.call("PutItem", TableName=table_name, Item=item)
    assert sender.meter.total.write_units - before == write_units(item_size(item))
    assert item_size(item) < ITEM_LIMIT


def test_a_binding_settles_its_region_when_made(monkeypatch: pytest.MonkeyPatch) -> None:
    """Setting AWS_DEFAULT_REGION after a history was made changes nothing about it: the
    binding (and so the schema cache, the client cache and the once-per-table warning, all
    keyed by it) hashes on what it settled."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.delenv("AWS_REGION", raising=False)
    binding = Binding.resolve("T")
    before = hash(binding)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ap-south-1")
    assert binding.region_name == "eu-west-1" and hash(binding) == before
    assert Binding.resolve("T") != binding  # a new one settles anew


def test_the_async_sender_runs_the_same_steps(
    sender: Sender, table_name: str, thirty: None
) -> None:
    """The asyncio twin of `Sender`: the same steps, the same errors thrown in, the same
    paging and metering."""
    import asyncio

    from chathist.dynamo import aio

    if not aio.AVAILABLE:
        pytest.skip("needs the async extra (aiobotocore)")
    twin = aio.AsyncSender(sender.binding, CapacityMeter())

    def taken_twice() -> Steps[str]:
        yield from put(table_name, "zz")
        try:
            yield from put(table_name, "zz")
        except ConditionFailed:
            return "taken"
        return "free"

    def all_keys() -> Steps[list[str]]:
        cursor = query(table_name, 7)
        keys: list[str] = []
        while (page := (yield from cursor.next_page())) is not None:
            keys += [item["SK"]["S"] for item in page]
        return keys

    async def run() -> tuple[str, list[str]]:
        try:
            outcome = await twin.run(taken_twice())
            keys = await twin.run(all_keys())
            with pytest.raises(TableNotFoundError):
                await twin.run(call("GetItem", TableName="no-such", Key={"SessionId": {"S": "s"}}))
            return outcome, keys
        finally:
            await aio.aclose_clients()

    outcome, keys = asyncio.run(run())
    assert outcome == "taken"
    assert keys == [f"{i:02d}" for i in range(30)] + ["zz"]
    assert twin.meter.total.requests == 2 + 5 + 1
