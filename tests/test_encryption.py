"""Client-side encryption (``kms_key_id=``, ``local_key=``) against DynamoDB Local, with KMS served
by moto's server mode on 127.0.0.1 (or a real key: see `tests.kms`).

Every test looks at what DynamoDB really holds (a plain boto3 client): no plaintext in any
attribute, an envelope on every payload, and what a tampered, moved or foreign item does.
"""

from __future__ import annotations

import contextlib
import os
import random
import string
import threading
import uuid
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, message_to_dict

from chathist import (
    CapacityMeter,
    ConfigurationError,
    CorruptHistoryError,
    DecryptionError,
    DynamoDBChatMessageHistory,
    KeyAccessError,
)
from chathist.core import envelope
from chathist.core.sizes import item_size, write_units
from chathist.dynamo.encryption import KEYS, KeyCache
from tests.helpers import (
    botocore_made,
    create_list_table,
    list_table_named,
    one_item_per_message,
    partition_items,
)
from tests.kms import Kms, kms_keys
from tests.test_codec import every_message_type

SECRET = "zebra-violet-7734"
"""A marker in every message written: no stored attribute may contain it."""


@pytest.fixture(scope="session")
def kms(dynamodb_endpoint: str | None, dynamodb_region: str | None) -> Iterator[Kms]:
    with kms_keys(dynamodb_region) as keys:
        yield keys


@pytest.fixture(autouse=True)
def fresh_keys() -> Iterator[None]:
    """Each test starts with no cached data key, so KMS call counts are its own."""
    KEYS.clear()
    yield
    KEYS.clear()


@pytest.fixture
def where(table_name: str, dynamodb_endpoint: str | None, dynamodb_region: str | None) -> Any:
    return {
        "table_name": table_name,
        "endpoint_url": dynamodb_endpoint,
        "region_name": dynamodb_region,
    }


def _contains(value: Any, needle: str) -> bool:
    """Whether ``needle`` appears in a wire-form value: in text, in binary (raw, and
    zlib-inflated when it inflates), in lists and maps."""
    if isinstance(value, str):
        return needle in value
    if isinstance(value, (bytes, bytearray)):
        data = bytes(value)
        if needle.encode() in data:
            return True
        try:
            return needle.encode() in zlib.decompress(data)
        except zlib.error:
            return False
    if isinstance(value, dict):
        return any(_contains(k, needle) or _contains(v, needle) for k, v in value.items())
    if isinstance(value, list):
        return any(_contains(v, needle) for v in value)
    return False


def _mark(messages: list[BaseMessage]) -> list[BaseMessage]:
    """``messages`` each carrying `SECRET` (in its content or its kwargs)."""
    marked = []
    for message in messages:
        copy = message.model_copy(deep=True)
        if isinstance(copy.content, str):
            copy.content = f"{copy.content} {SECRET}"
        copy.additional_kwargs = {**copy.additional_kwargs, "secret": SECRET}
        marked.append(copy)
    return marked


def _dicts(messages: list[BaseMessage]) -> list[dict[str, Any]]:
    return [message_to_dict(m) for m in messages]


# -- round trips, and what is stored ------------------------------------------------------------


@pytest.mark.parametrize("keyring", ["kms", "local"])
def test_every_message_type_round_trips_and_no_attribute_holds_plaintext(
    api: Any, where: Any, kms: Kms, boto3_client: Any, monkeypatch: pytest.MonkeyPatch, keyring: str
) -> None:
    one_item_per_message(monkeypatch)  # the test counts items per message
    key = {"kms_key_id": kms.key_id} if keyring == "kms" else {"local_key": os.urandom(32)}
    messages = _mark(every_message_type())
    big = AIMessage(SECRET + " " + "lorem ipsum " * 2000)  # compressed before it is sealed
    history = api.history(session_id="s", **where, **key)
    history.add_messages(messages)
    history.add_message(big)
    assert _dicts(history.messages) == _dicts([*messages, big])
    assert _dicts(api.history(session_id="s", **where, **key).messages) == _dicts([*messages, big])
    items = partition_items(boto3_client, where["table_name"], "s")
    assert len(items) == len(messages) + 1
    for item in items:
        assert not _contains(item, SECRET), item
        assert "History" not in item and item["enc"] == {"S": "1"}
    # The same search finds the marker where nothing is encrypted: it can fail.
    api.history(session_id="plain", **where).add_messages(messages[:1])
    assert _contains(partition_items(boto3_client, where["table_name"], "plain"), SECRET)


@pytest.mark.parametrize("keyring", ["kms", "local"])
def test_messages_packed_in_one_item_round_trip_sealed_as_one(
    api: Any, where: Any, kms: Kms, boto3_client: Any, keyring: str
) -> None:
    """Packing is on (the default): the messages of one call share an item, whose payload is
    sealed whole; every message type reads back, and a second call adds one item."""
    key = {"kms_key_id": kms.key_id} if keyring == "kms" else {"local_key": os.urandom(32)}
    messages = _mark(every_message_type())
    history = api.history(session_id="packed", **where, **key)
    history.add_messages(messages)
    history.add_messages(messages[:2])
    want = _dicts([*messages, *messages[:2]])
    assert _dicts(history.messages) == want
    assert _dicts(api.history(session_id="packed", **where, **key).messages) == want
    items = partition_items(boto3_client, where["table_name"], "packed")
    assert len(items) == 2
    assert [int(item["count"]["N"]) for item in items] == [len(messages), 2]
    for item in items:
        assert not _contains(item, SECRET), item
        assert "History" not in item and item["enc"] == {"S": "1"}
    window = api.history(session_id="packed", history_size=3, **where, **key).messages
    assert _dicts(window) == want[-3:]


def test_a_5_mb_message_round_trips_each_part_sealed(
    api: Any, where: Any, kms: Kms, boto3_client: Any
) -> None:
    rng = random.Random(15)
    content = SECRET + "".join(rng.choices(string.ascii_letters + string.digits, k=5_000_000))
    history = api.history(session_id="big", **where, kms_key_id=kms.key_id)
    history.add_messages([HumanMessage("before"), AIMessage(content), HumanMessage("after")])
    found = api.history(session_id="big", **where, kms_key_id=kms.key_id).messages
    assert [m.content for m in found] == ["before", content, "after"]
    items = partition_items(boto3_client, where["table_name"], "big")
    parts = [i for i in items if i["event"]["S"] == "part"]
    assert len(parts) >= 3
    for item in items:
        assert not _contains(item, SECRET)
        assert item_size(item) <= 400 * 1024
        if item["event"]["S"] in ("part", "message") and "parts" not in item:
            assert item["enc"] == {"S": "1"} and "History" not in item


def test_a_300_character_message_is_one_item_under_1_kb(
    where: Any, kms: Kms, boto3_client: Any
) -> None:
    history = DynamoDBChatMessageHistory(session_id="s", **where, kms_key_id=kms.key_id)
    history.add_user_message("warm up")  # the first append reads the tail and asks KMS once
    before = history.consumed_capacity
    history.add_user_message("é" * 150 + "x" * 150)  # 300 characters, 450 bytes of UTF-8
    spent = history.consumed_capacity - before
    assert (spent.requests, spent.write_units, spent.kms_requests) == (1, 1.0, 0)
    items = partition_items(boto3_client, where["table_name"], "s")
    assert len(items) == 2 and item_size(items[-1]) < 1024
    assert write_units(item_size(items[-1])) == 1


def test_a_second_encrypted_table_makes_no_botocore_session_and_no_client(
    api: Any,
    where: Any,
    kms: Kms,
    boto3_client: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A second table's data key comes from the KMS client of the first (one per region and
    credentials), its items through the first table's DynamoDB client."""
    first = api.history(session_id="s", **where, kms_key_id=kms.key_id)
    first.add_user_message("first table")
    other = f"chathist-test-{uuid.uuid4().hex[:12]}"
    create_list_table(boto3_client, other, "SessionId", "SK")  # not through chathist's client
    try:
        with botocore_made(monkeypatch) as made:
            second = api.history(
                session_id="s", **{**where, "table_name": other}, kms_key_id=kms.key_id
            )
            second.add_user_message("second table")
            assert [m.content for m in second.messages] == ["second table"]
        assert made == {"sessions": 0, "clients": 0}
        assert second.consumed_capacity.kms_requests >= 1  # its own data key, asked of KMS
    finally:
        boto3_client.delete_table(TableName=other)


# -- what does not authenticate is never returned -----------------------------------------------


def _two_sealed(api: Any, where: Any, key: dict[str, Any], session: str = "s") -> Any:
    history = api.history(session_id=session, **where, **key)
    history.add_messages([HumanMessage(f"one {SECRET}"), AIMessage(f"two {SECRET}")])
    return history


def _keyring(name: str, kms: Kms) -> dict[str, Any]:
    return {"kms_key_id": kms.key_id} if name == "kms" else {"local_key": os.urandom(32)}


@pytest.mark.parametrize("keyring", ["kms", "local"])
def test_a_tampered_ciphertext_raises_and_returns_nothing(
    api: Any, where: Any, kms: Kms, boto3_client: Any, keyring: str
) -> None:
    key = _keyring(keyring, kms)
    _two_sealed(api, where, key)
    items = partition_items(boto3_client, where["table_name"], "s")
    blob = bytearray(items[0]["blob"]["B"])
    blob[-20] ^= 0x01
    boto3_client.put_item(
        TableName=where["table_name"], Item={**items[0], "blob": {"B": bytes(blob)}}
    )
    reader = api.history(session_id="s", **where, **key)
    with pytest.raises(DecryptionError) as raised:
        _ = reader.messages
    assert isinstance(raised.value, CorruptHistoryError)
    assert raised.value.key == {"SessionId": "s", "SK": items[0]["SK"]["S"]}
    assert SECRET not in str(raised.value)


@pytest.mark.parametrize("keyring", ["kms", "local"])
@pytest.mark.parametrize("move", ["session", "sort key", "table"])
def test_an_item_moved_elsewhere_raises_and_returns_nothing(
    api: Any,
    where: Any,
    kms: Kms,
    boto3_client: Any,
    keyring: str,
    move: str,
    dynamodb_endpoint: str | None,
    dynamodb_region: str | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    one_item_per_message(monkeypatch)  # the test moves one message's item
    key = _keyring(keyring, kms)
    table = where["table_name"]
    _two_sealed(api, where, key)
    items = partition_items(boto3_client, table, "s")
    if move == "session":  # the victim's message copied into the attacker's session
        api.history(session_id="other", **where, **key).add_message(HumanMessage("mine"))
        moved = {**items[1], "SessionId": {"S": "other"}, "SK": {"S": "0" * 19 + "1"}}
        boto3_client.put_item(TableName=table, Item=moved)
        reader = api.history(session_id="other", **where, **key)
    elif move == "sort key":  # two messages of one session swapped
        first, second = items
        boto3_client.put_item(TableName=table, Item={**first, "blob": second["blob"]})
        boto3_client.put_item(TableName=table, Item={**second, "blob": first["blob"]})
        reader = api.history(session_id="s", **where, **key)
    else:  # copied to another table, same session and sort keys
        from chathist import create_table

        other = f"chathist-test-{uuid.uuid4().hex[:12]}"
        create_table(other, endpoint_url=dynamodb_endpoint, region_name=dynamodb_region)
        try:
            for item in items:
                boto3_client.put_item(TableName=other, Item=item)
            reader = api.history(session_id="s", **{**where, "table_name": other}, **key)
            with pytest.raises(DecryptionError):
                _ = reader.messages
        finally:
            boto3_client.delete_table(TableName=other)
        return
    with pytest.raises(DecryptionError):
        _ = reader.messages


def test_another_local_key_raises_and_a_kms_history_cannot_read_local_items(
    api: Any, where: Any, kms: Kms
) -> None:
    _two_sealed(api, where, {"local_key": os.urandom(32)})
    with pytest.raises(DecryptionError):
        _ = api.history(session_id="s", **where, local_key=os.urandom(32)).messages
    with pytest.raises(KeyAccessError, match="local_key"):
        _ = api.history(session_id="s", **where, kms_key_id=kms.key_id).messages


def test_a_missing_kms_permission_raises_reads_nothing_and_writes_nothing(
    api: Any, where: Any, kms: Kms, boto3_client: Any
) -> None:
    if not kms.local:
        pytest.skip("provoked with moto: the key lives in another region than the caller")
    _two_sealed(api, where, {"kms_key_id": kms.key_id})
    elsewhere = {**where, "region_name": "eu-west-3"}  # KMS there knows no such key
    with pytest.raises(KeyAccessError) as denied:
        _ = api.history(session_id="s", **elsewhere, kms_key_id=kms.key_id).messages
    assert denied.value.code == "AccessDeniedException"
    assert "kms:Decrypt" in str(denied.value)
    writer = api.history(session_id="new", **elsewhere, kms_key_id=kms.key_id)
    with pytest.raises(KeyAccessError):
        writer.add_messages([HumanMessage(SECRET)])
    assert partition_items(boto3_client, where["table_name"], "new") == []
    missing = api.history(session_id="new", **where, kms_key_id="alias/chathist-no-such-key")
    with pytest.raises(KeyAccessError):
        missing.add_messages([HumanMessage(SECRET)])
    assert partition_items(boto3_client, where["table_name"], "new") == []


# -- mixed sessions, other keys -------------------------------------------------------------------


def test_plaintext_and_encrypted_messages_mix_in_one_session(
    api: Any, where: Any, kms: Kms, boto3_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    one_item_per_message(monkeypatch)  # the test counts items per message
    plain = api.history(session_id="s", **where)
    sealed = api.history(session_id="s", **where, kms_key_id=kms.key_id)
    plain.add_messages([HumanMessage("p1"), AIMessage("p2")])
    sealed.add_messages([HumanMessage("e1"), AIMessage("e2")])
    plain.add_message(HumanMessage("p3"))
    sealed.add_message(AIMessage("x" * 450_000))  # two sealed parts and a header
    expected = ["p1", "p2", "e1", "e2", "p3", "x" * 450_000]
    assert [m.content for m in sealed.messages] == expected
    assert [m.content for m in plain.messages] == expected  # reads KMS items with kms:Decrypt
    kinds = [
        ("enc" in i, "History" in i)
        for i in partition_items(boto3_client, where["table_name"], "s")
        if "parts" not in i
    ]
    assert kinds[:5] == [(False, True)] * 2 + [(True, False)] * 2 + [(False, True)]
    sealed.clear()
    assert sealed.messages == [] and plain.messages == []


def test_a_message_sealed_under_another_kms_key_is_still_read(
    api: Any, where: Any, kms: Kms
) -> None:
    api.history(session_id="s", **where, kms_key_id=kms.key_id).add_user_message("under A")
    second = api.history(session_id="s", **where, kms_key_id=kms.other_key_id)
    second.add_user_message("under B")
    assert [m.content for m in second.messages] == ["under A", "under B"]


# -- KMS calls, concurrency -----------------------------------------------------------------------


def test_kms_is_asked_once_per_session_and_key_lifetime_not_per_message(
    api: Any, where: Any, kms: Kms, monkeypatch: pytest.MonkeyPatch
) -> None:
    meter = CapacityMeter()
    history = api.history(session_id="s", **where, kms_key_id=kms.key_id, capacity_meter=meter)
    for i in range(20):
        history.add_user_message(f"message {i}")
    assert len(history.messages) == 20
    # Another history object in this process: the cached data key, no KMS request.
    again = api.history(session_id="s", **where, kms_key_id=kms.key_id, capacity_meter=meter)
    again.add_messages([HumanMessage("a"), AIMessage("b")])
    assert len(again.messages) == 22
    assert meter.total.kms_requests == 1
    api.history(
        session_id="t", **where, kms_key_id=kms.key_id, capacity_meter=meter
    ).add_user_message("another session: another data key")
    assert meter.total.kms_requests == 2
    # An hour later the data key is retired: a new one for new items, and the old ones'
    # data key is unwrapped once (Decrypt) to read them.
    clock = [KEYS.clock()]
    monkeypatch.setattr(KEYS, "clock", lambda: clock[0])
    clock[0] += 3600
    history.add_user_message("an hour later")
    assert meter.total.kms_requests == 3
    assert len(history.messages) == 23
    assert meter.total.kms_requests == 4
    assert len(history.messages) == 23
    assert meter.total.kms_requests == 4


def test_a_fresh_reader_unwraps_each_data_key_once(api: Any, where: Any, kms: Kms) -> None:
    writer = api.history(session_id="s", **where, kms_key_id=kms.key_id)
    writer.add_messages([HumanMessage(str(i)) for i in range(30)])  # staged: over 25 events
    KEYS.clear()  # as another process would start
    reader = api.history(session_id="s", **where)
    assert len(reader.messages) == 30 and len(reader.messages) == 30
    assert reader.consumed_capacity.kms_requests == 1


@pytest.mark.sync_only
def test_concurrent_writers_lose_nothing_and_share_one_data_key(where: Any, kms: Kms) -> None:
    meter = CapacityMeter()
    errors: list[BaseException] = []

    def write(writer: int) -> None:
        try:
            history = DynamoDBChatMessageHistory(
                session_id="s", **where, kms_key_id=kms.key_id, capacity_meter=meter
            )
            for i in range(10):
                history.add_messages([HumanMessage(f"w{writer}-{i}"), AIMessage(f"r{writer}-{i}")])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    found = [m.content for m in DynamoDBChatMessageHistory(session_id="s", **where).messages]
    assert sorted(found) == sorted(f"{p}{w}-{i}" for w in range(6) for i in range(10) for p in "wr")
    for w in range(6):  # each writer's turns in its order, each turn contiguous
        mine = [c for c in found if c[1:].startswith(f"{w}-")]
        assert mine == [f"{p}{w}-{i}" for i in range(10) for p in "wr"]
    assert meter.total.kms_requests == 1  # six first writes waited for one GenerateDataKey


def test_concurrent_async_writers_share_one_data_key(where: Any, kms: Kms, portal: Any) -> None:
    import asyncio

    meter = CapacityMeter()

    async def run() -> list[str]:
        histories = [
            DynamoDBChatMessageHistory(
                session_id="s", **where, kms_key_id=kms.key_id, capacity_meter=meter
            )
            for _ in range(8)
        ]
        await asyncio.gather(
            *(h.aadd_messages([HumanMessage(f"m{n}")]) for n, h in enumerate(histories))
        )
        return [str(m.content) for m in await histories[0].aget_messages()]

    assert sorted(portal.run(run())) == sorted(f"m{n}" for n in range(8))
    assert meter.total.kms_requests == 1


# -- configuration ----------------------------------------------------------------------------


def test_the_list_layout_refuses_encryption_naming_the_event_layout_and_migration(
    where: Any, kms: Kms, boto3_client: Any, dynamodb_endpoint: str | None
) -> None:
    with pytest.raises(ConfigurationError, match="event layout") as refused:
        DynamoDBChatMessageHistory(session_id="s", **where, layout="list", kms_key_id=kms.key_id)
    assert "chathist migrate" in str(refused.value)
    with pytest.raises(ConfigurationError, match="event layout"):
        DynamoDBChatMessageHistory(
            session_id="s", **where, key={"SessionId": "s"}, local_key=os.urandom(32)
        )
    with list_table_named(boto3_client) as table:
        history = DynamoDBChatMessageHistory(
            table, "s", endpoint_url=dynamodb_endpoint, kms_key_id=kms.key_id
        )
        with pytest.raises(ConfigurationError, match="chathist migrate"):
            history.add_user_message("never stored")
        assert boto3_client.scan(TableName=table)["Items"] == []


@pytest.mark.parametrize(
    ("options", "text"),
    [
        ({"local_key": b"short"}, "32 random bytes"),
        ({"local_key": "k" * 32}, "32 random bytes"),
        ({"kms_key_id": ""}, "KMS key id"),
        ({"kms_key_id": "alias/a", "local_key": bytes(32)}, "not both"),
    ],
)
def test_bad_encryption_options_are_refused_before_any_request(
    options: dict[str, Any], text: str
) -> None:
    with pytest.raises(ConfigurationError, match=text):
        DynamoDBChatMessageHistory("T-t", "s", endpoint_url="http://127.0.0.1:9", **options)


def test_a_local_key_is_not_in_the_repr_of_the_options() -> None:
    key = bytes(range(32))
    history = DynamoDBChatMessageHistory(
        "T-t", "s", endpoint_url="http://127.0.0.1:9", local_key=key
    )
    assert repr(key) not in repr(history._options) and key.hex() not in repr(history._options)


# -- the sealing codec (Hypothesis) ---------------------------------------------------------------

places = st.tuples(st.text(min_size=1), st.text(min_size=1), st.text(min_size=1))
attributes = st.dictionaries(
    st.text(min_size=1, max_size=20),
    st.one_of(st.text().map(lambda t: {"S": t}), st.binary().map(lambda b: {"B": b})),
    max_size=3,
)


@given(attributes=attributes, place=places, wrapped=st.binary(min_size=1, max_size=300))
def test_sealed_attributes_open_only_at_their_place(
    attributes: dict[str, Any], place: tuple[str, str, str], wrapped: bytes
) -> None:
    key = os.urandom(32)
    table, session, sort_key = place
    sealed = envelope.seal(
        key,
        envelope.PROVIDER_KMS,
        wrapped,
        envelope.pack_attributes(attributes),
        table=table,
        session=session,
        sort_key=sort_key,
    )
    parsed = envelope.Envelope.parse(sealed)
    assert parsed.wrapped == wrapped
    opened = envelope.open_envelope(key, parsed, table=table, session=session, sort_key=sort_key)
    assert envelope.unpack_attributes(opened) == attributes
    for other in (
        (table + "x", session, sort_key),
        (table, session + "x", sort_key),
        (table, session, sort_key + "x"),
        (table + session, "", sort_key),
    ):
        if other == place:
            continue
        with pytest.raises(DecryptionError):
            envelope.open_envelope(key, parsed, table=other[0], session=other[1], sort_key=other[2])


@given(
    data=st.data(), plaintext=st.binary(max_size=200), wrapped=st.binary(min_size=1, max_size=50)
)
def test_any_changed_byte_of_an_envelope_is_refused(
    data: st.DataObject, plaintext: bytes, wrapped: bytes
) -> None:
    key = os.urandom(32)
    sealed = bytearray(
        envelope.seal(
            key, envelope.PROVIDER_LOCAL, wrapped, plaintext, table="t", session="s", sort_key="k"
        )
    )
    index = data.draw(st.integers(0, len(sealed) - 1))
    sealed[index] ^= data.draw(st.integers(1, 255))
    with pytest.raises(DecryptionError):
        found = envelope.Envelope.parse(bytes(sealed))
        envelope.open_envelope(key, found, table="t", session="s", sort_key="k")


@given(data=st.binary(max_size=64))
def test_garbage_is_never_an_envelope_or_attributes_that_open(data: bytes) -> None:
    try:
        found = envelope.Envelope.parse(data)
    except DecryptionError:
        pass
    else:
        with pytest.raises(DecryptionError):
            envelope.open_envelope(os.urandom(32), found, table="t", session="s", sort_key="k")
    with contextlib.suppress(DecryptionError):
        envelope.unpack_attributes(data)


@given(context=st.dictionaries(st.text(), st.text(), max_size=3), other=st.text(min_size=1))
def test_a_local_wrapped_key_unwraps_only_under_its_key_and_context(
    context: dict[str, str], other: str
) -> None:
    local, data_key = os.urandom(32), os.urandom(32)
    wrapped = envelope.wrap_local(local, data_key, context)
    assert envelope.unwrap_local(local, wrapped, context) == data_key
    with pytest.raises(DecryptionError):
        envelope.unwrap_local(os.urandom(32), wrapped, context)
    changed = {**context, other: context.get(other, "") + "x"}
    with pytest.raises(DecryptionError):
        envelope.unwrap_local(local, wrapped, changed)


def test_the_key_cache_retires_keys_after_their_lifetime_and_uses() -> None:
    now = [0.0]
    cache = KeyCache(lifetime=10, size=2, clock=lambda: now[0])
    cache.put("a", b"1")
    assert cache.take("a") == b"1"
    now[0] = 10
    assert cache.take("a") is None
    cache.put("a", b"1", uses=envelope.MAX_KEY_USES)
    assert cache.take("a") is None
    for name in "xyz":
        cache.put(name, name)
    assert cache.take("x") is None and cache.take("z") == "z"


# -- the operator path: chathist migrate, export, import, show, stats -----------------------------


def test_migrate_encrypts_export_decrypts_import_encrypts_show_and_stats_read(
    kms: Kms,
    boto3_client: Any,
    dynamodb_endpoint: str | None,
    dynamodb_region: str | None,
    table_name: str,
    tmp_path: Any,
) -> None:
    import json

    from chathist import create_table
    from tests.test_cli import run_cli, sample_conversation

    conversation = _mark(sample_conversation())
    where = {"endpoint_url": dynamodb_endpoint, "region_name": dynamodb_region}
    with list_table_named(boto3_client) as source:
        for session in ("a", "b"):
            DynamoDBChatMessageHistory(
                source, session, layout="list", coerce_float_to_decimal=True, **where
            ).add_messages(conversation[:4])
        migrated = run_cli(
            dynamodb_endpoint,
            "migrate",
            "--source",
            source,
            "--target",
            table_name,
            "--kms-key-id",
            kms.key_id,
            "--verify",
            "--quiet",
        )
        assert migrated.returncode == 0, migrated.stderr + migrated.stdout
    for session in ("a", "b"):
        items = partition_items(boto3_client, table_name, session)
        assert _messages_in(items) == 4 and all("enc" in i for i in items)
        assert not _contains(items, SECRET)
        stored = DynamoDBChatMessageHistory(table_name, session, **where).messages
        assert _dicts(stored) == _dicts(conversation[:4])
    DynamoDBChatMessageHistory(table_name, "a", kms_key_id=kms.key_id, **where).add_message(
        conversation[4]  # 450,000 characters: compressed, then sealed
    )

    show = run_cli(dynamodb_endpoint, "show", table_name, "a", "--json")
    assert show.returncode == 0, show.stderr
    assert json.loads(show.stdout) == _dicts(conversation)
    stats = run_cli(dynamodb_endpoint, "stats", table_name, "--json")
    assert stats.returncode == 0, stats.stderr
    report = json.loads(stats.stdout)
    assert (report["sessions"], report["messages"]) == (2, 9)
    # one item per session (its 4 migrated messages packed in it), and the large message
    assert report["encrypted_items"] == report["items"] == 3

    exported = tmp_path / "all.jsonl"
    export = run_cli(dynamodb_endpoint, "export", table_name, "--output", str(exported))
    assert export.returncode == 0, export.stderr
    lines = [json.loads(line) for line in exported.read_text().splitlines()]
    assert {line["session_id"]: line["messages"] for line in lines} == {
        "a": _dicts(conversation),
        "b": _dicts(conversation[:4]),
    }
    other = f"chathist-test-{uuid.uuid4().hex[:12]}"
    create_table(other, **where)
    try:
        imported = run_cli(
            dynamodb_endpoint, "import", other, str(exported), "--kms-key-id", kms.other_key_id
        )
        assert imported.returncode == 0, imported.stderr
        items = partition_items(boto3_client, other, "a")
        assert not _contains(items, SECRET) and all("enc" in i for i in items)
        assert _dicts(DynamoDBChatMessageHistory(other, "a", **where).messages) == _dicts(
            conversation
        )
        again = run_cli(
            dynamodb_endpoint, "import", other, str(exported), "--kms-key-id", kms.other_key_id
        )
        assert again.returncode == 0 and "2 already complete" in again.stderr
    finally:
        boto3_client.delete_table(TableName=other)


def test_an_encrypting_catch_up_seals_the_new_tail_and_moves_it_once(
    kms: Kms,
    boto3_client: Any,
    dynamodb_endpoint: str | None,
    dynamodb_region: str | None,
    table_name: str,
) -> None:
    """LangChain's layout keeps writing after an encrypting migration: the catch-up run seals
    the new tail too (its writer id digests sizes only), and a re-run moves nothing again."""
    from chathist.bulk import MigrationConfig, migrate_list_to_events

    where = {"endpoint_url": dynamodb_endpoint, "region_name": dynamodb_region}
    first = [HumanMessage(f"{SECRET} 1"), AIMessage("a1")]
    tail = [HumanMessage(f"{SECRET} 2"), AIMessage("a2")]
    with list_table_named(boto3_client) as source:
        old = DynamoDBChatMessageHistory(
            source, "s", layout="list", coerce_float_to_decimal=True, **where
        )
        old.add_messages(first)
        config = MigrationConfig(
            source, table_name, kms_key_id=kms.key_id, verify=True, segments=1, **where
        )
        assert migrate_list_to_events(config).migrated == 1
        old.add_messages(tail)  # the old application writes on
        report = migrate_list_to_events(config)
        assert (report.caught_up, report.verified, report.messages) == (1, 1, 2) and report.ok
        again = migrate_list_to_events(config)
        assert (again.already, again.items_written, again.verified) == (1, 0, 1) and again.ok
    items = partition_items(boto3_client, table_name, "s")
    assert len(items) == 2 and all("enc" in i for i in items)  # one packed item per write
    assert not _contains(items, SECRET)
    stored = DynamoDBChatMessageHistory(table_name, "s", kms_key_id=kms.key_id, **where)
    assert _dicts(stored.messages) == _dicts(first + tail)


def test_an_encrypting_migration_stores_no_digest_of_the_content(
    kms: Kms, boto3_client: Any, dynamodb_endpoint: str | None, table_name: str
) -> None:
    from chathist.bulk.to_events import fingerprint
    from chathist.core.codec import encode_message

    payloads = [encode_message(HumanMessage("a guessable secret"))]
    assert fingerprint("s", payloads, None) != fingerprint("s", payloads, None, blind=True)
    guess = [encode_message(HumanMessage("a guessable secreT"))]
    assert fingerprint("s", guess, None, blind=True) == fingerprint("s", payloads, None, blind=True)
    assert fingerprint("s", guess, None) != fingerprint("s", payloads, None)


def test_without_cryptography_encryption_is_refused_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "cryptography.hazmat.primitives.ciphers.aead", None)
    with pytest.raises(ConfigurationError, match=r"chathist\[encryption\]"):
        DynamoDBChatMessageHistory(
            "T-t", "s", endpoint_url="http://127.0.0.1:9", local_key=bytes(32)
        )


def test_a_lazy_migration_seals_the_legacy_messages_it_moves(
    api: Any, where: Any, kms: Kms, boto3_client: Any
) -> None:
    with list_table_named(boto3_client) as legacy:
        DynamoDBChatMessageHistory(
            legacy,
            "s",
            layout="list",
            endpoint_url=where["endpoint_url"],
            region_name=where["region_name"],
        ).add_messages([HumanMessage(f"old {SECRET}"), AIMessage("old answer")])
        history = api.history(
            session_id="s", **where, kms_key_id=kms.key_id, legacy_table_name=legacy
        )
        history.add_user_message(f"new {SECRET}")
        assert [m.content for m in history.messages] == [
            f"old {SECRET}",
            "old answer",
            f"new {SECRET}",
        ]
    items = partition_items(boto3_client, where["table_name"], "s")
    assert _messages_in(items) == 3 and all("enc" in i for i in items)
    assert not _contains(items, SECRET)


@pytest.mark.parametrize(
    ("code", "error", "text"),
    [
        ("AccessDeniedException", KeyAccessError, "kms:Decrypt"),
        ("DisabledException", KeyAccessError, "DisabledException"),
        ("NotFoundException", KeyAccessError, "NotFoundException"),
        ("UnrecognizedClientException", KeyAccessError, "local_key="),
        ("InvalidCiphertextException", DecryptionError, "not returned"),
        ("IncorrectKeyException", DecryptionError, "not returned"),
    ],
)
def test_kms_errors_map_once_to_typed_errors(code: str, error: type, text: str) -> None:
    from botocore.exceptions import ClientError

    from chathist.dynamo.translate import translate

    raised = ClientError({"Error": {"Code": code, "Message": "m"}}, "Decrypt")
    found = translate(raised, "Decrypt", {}, service="kms")
    assert type(found) is error and text in str(found)
    if isinstance(found, KeyAccessError):
        assert found.code == code


def test_an_unreachable_kms_is_a_key_access_error() -> None:
    from botocore.exceptions import EndpointConnectionError

    from chathist.dynamo.translate import translate

    found = translate(
        EndpointConnectionError(endpoint_url="http://127.0.0.1:9"),
        "GenerateDataKey",
        {},
        service="kms",
    )
    assert isinstance(found, KeyAccessError) and "127.0.0.1:9" in str(found)


def _messages_in(items: list[dict[str, Any]]) -> int:
    """Messages the message items of a partition hold (an item may hold several: ``count``)."""
    return sum(
        int(i["count"]["N"]) if "count" in i else 1 for i in items if i["event"]["S"] == "message"
    )
