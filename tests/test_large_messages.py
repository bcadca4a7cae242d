"""Messages larger than one item, and compression, against a real DynamoDB Local.

Every test looks at the items DynamoDB really holds (through a plain boto3 client), not only at
what the history reads back.
"""

from __future__ import annotations

import base64
import json
import math
import random
import string
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, message_to_dict

import chathist.event_log
from chathist import DynamoDBChatMessageHistory, MessageTooLargeError, StorageError
from chathist.core.codec import (
    CODEC_JSON,
    CODEC_JSON_LIST,
    CODEC_ZLIB,
    DEFAULT_COMPRESS_THRESHOLD,
    encode_message,
)
from chathist.core.plan import (
    ITEM_LIMIT,
    MAX_MESSAGE_BYTES,
    TRANSACTION_BYTES,
    Limits,
    item_overhead,
)
from chathist.dynamo.items import event_items
from tests.helpers import partition_items

KB = 1024
MB = 1024 * KB
History = Callable[..., DynamoDBChatMessageHistory]
_LETTERS = (string.ascii_letters + string.digits + "+/").encode("ascii")
_TO_LETTERS = bytes(_LETTERS[b % len(_LETTERS)] for b in range(256))
_WORDS = ("the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "tool", "answer")


# -- content --------------------------------------------------------------------------------------


def letters(size: int, seed: int = 0) -> str:
    """``size`` random letters and digits: zlib gets little out of them (about 25 %)."""
    return random.Random(seed).randbytes(size).translate(_TO_LETTERS).decode("ascii")


def prose(size: int, seed: int = 0) -> str:
    """``size`` characters of words from a small vocabulary: compresses well."""
    rng = random.Random(seed)
    words = " ".join(rng.choices(_WORDS, k=size // 4 + 1))
    return words[:size]


def image_block(raw_bytes: int, seed: int = 0) -> list[str | dict[str, Any]]:
    """A content block holding ``raw_bytes`` random bytes as base64 (about 4/3 as many chars)."""
    data = base64.b64encode(random.Random(seed).randbytes(raw_bytes)).decode("ascii")
    return [
        {"type": "text", "text": "what is in this picture?"},
        {"type": "image", "source_type": "base64", "data": data, "mime_type": "image/png"},
    ]


def dicts(messages: list[BaseMessage]) -> list[dict[str, Any]]:
    return [message_to_dict(m) for m in messages]


# -- fixtures and DynamoDB helpers ---------------------------------------------------------------


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


def client_of(history: DynamoDBChatMessageHistory) -> Any:
    """The botocore client ``history`` sends its requests through (shared by every history of
    the same table, endpoint and region), to watch or break its requests with event hooks."""
    return history.client


@pytest.fixture
def client(history: History) -> Any:
    """The botocore client of the histories of the test's table."""
    return client_of(history())


def stored_items(client: Any, table: str, session: str = "s") -> list[dict[str, Any]]:
    """Every item of ``session``'s partition, in sort key order, read straight from DynamoDB."""
    return partition_items(client, table, session)


def chunk_bytes(client_fixture_args: tuple[str, str | None, str | None], session: str = "s") -> int:
    """Payload bytes one item of ``session`` holds (an item's size less its other attributes)."""
    names = event_items(client_fixture_args[0]).attribute_names
    return ITEM_LIMIT - item_overhead(names, session)


@pytest.fixture
def chunk(table_name: str, dynamodb_endpoint: str | None, dynamodb_region: str | None) -> int:
    """Payload bytes one item of session ``s`` holds."""
    return chunk_bytes((table_name, dynamodb_endpoint, dynamodb_region))


def item_size(item: dict[str, dict[str, Any]]) -> int:
    """Bytes DynamoDB counts for a low-level ``item`` (names and values)."""
    size = 0
    for name, value in item.items():
        ((kind, raw),) = value.items()
        size += len(name.encode("utf-8"))
        if kind == "S":
            size += len(raw.encode("utf-8"))
        elif kind == "B":
            size += len(raw)
        elif kind == "N":
            size += math.ceil(len(raw.lstrip("-").replace(".", "")) / 2) + 1
        else:
            raise AssertionError(f"unexpected attribute type {kind}")
    return size


def kind(item: dict[str, Any]) -> str:
    return str(item["event"]["S"])


def _key_parts(key: str) -> tuple[str, int]:
    """(prefix, number) of a sort key: a staged key ``!<stage>#<n>`` or a sequence number."""
    prefix, _, number = key.rpartition("#")
    return prefix, int(number)


def payload_of(items: list[dict[str, Any]], header: dict[str, Any]) -> bytes:
    """The stored payload of message item ``header``: inline, or joined from its parts."""
    if "History" in header:
        return str(header["History"]["S"]).encode("utf-8")
    if "blob" in header:
        return bytes(header["blob"]["B"])
    parts = parts_of(items, header)
    assert len(parts) == int(header["parts"]["N"])
    return b"".join(bytes(p["blob"]["B"]) for p in parts)


def message_items(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [i for i in items if kind(i) == "message"]


def messages_held(items: list[dict[str, Any]]) -> int:
    """How many messages the message items hold (an item may hold several)."""
    return sum(int(i.get("count", {"N": "1"})["N"]) for i in message_items(items))


def stored_message(items: list[dict[str, Any]], message: BaseMessage) -> dict[str, Any]:
    """The message item that stores ``message`` (found by its payload, whatever its position)."""
    wanted = message_to_dict(message)
    for header in message_items(items):
        data = payload_of(items, header)
        if header["codec"]["S"] == CODEC_ZLIB:
            data = zlib.decompress(data)
        found = json.loads(data)
        if found == wanted or (header["codec"]["S"] == CODEC_JSON_LIST and wanted in found):
            return header
    raise AssertionError(f"no stored item holds {str(message.content)[:40]!r}")


def parts_of(items: list[dict[str, Any]], header: dict[str, Any]) -> list[dict[str, Any]]:
    """The part items of message item ``header``, in key order: those with the same key prefix
    (a stage, or none) that name its number in ``msg``."""
    prefix, number = _key_parts(header["SK"]["S"])
    return [
        i
        for i in items
        if kind(i) == "part"
        and _key_parts(i["SK"]["S"])[0] == prefix
        and int(i["msg"]["N"]) == number
    ]


class FailWrites:
    """A botocore hook: the write requests after the first ``allowed`` fail as a lost connection."""

    def __init__(self, client: Any, allowed: int) -> None:
        self.client = client
        self.allowed = allowed
        self.seen = 0
        self.failed = 0

    def __call__(self, **_: Any) -> None:
        self.seen += 1
        if self.seen > self.allowed:
            self.failed += 1
            raise EndpointConnectionError(endpoint_url="simulated-lost-connection")

    def __enter__(self) -> FailWrites:
        for operation in ("PutItem", "TransactWriteItems"):
            self.client.meta.events.register(
                f"before-call.dynamodb.{operation}", self, unique_id=f"fail-{operation}"
            )
        return self

    def __exit__(self, *_: object) -> None:
        for operation in ("PutItem", "TransactWriteItems"):
            self.client.meta.events.unregister(
                f"before-call.dynamodb.{operation}", unique_id=f"fail-{operation}"
            )


# -- round trips of large messages ---------------------------------------------------------------

SIZES = {"350KB": 350 * KB, "400KB": 400 * KB, "1MB": MB, "5MB": 5 * MB}


def _message(shape: str, size: int) -> tuple[BaseMessage, dict[str, Any]]:
    """A message of about ``size`` bytes of the given shape, and the history options to use."""
    if shape == "letters":  # stored as it is: the parts hold the exact JSON
        return HumanMessage(letters(size, size)), {"compress_threshold": None}
    if shape == "prose":
        return AIMessage(prose(size, size), id=f"prose-{size}"), {}
    return HumanMessage(image_block(size * 3 // 4, size)), {}  # base64 makes it ``size`` chars


@pytest.mark.parametrize("shape", ["letters", "prose", "image"])
@pytest.mark.sync_only
def test_large_messages_round_trip_exactly(
    history: History, client: Any, table_name: str, chunk: int, shape: str
) -> None:
    """350 KB, 400 KB, 1 MB and 5 MB, each between two small messages of its session."""
    before, after = HumanMessage("before"), AIMessage("after")
    for label, size in SIZES.items():
        message, options = _message(shape, size)
        history(label, **options).add_messages([before, message])
        history(label, **options).add_message(after)
        assert dicts(history(label).messages) == dicts([before, message, after]), label

        items = stored_items(client, table_name, label)
        assert all(item_size(i) < ITEM_LIMIT for i in items)
        assert messages_held(items) == 3
        encoded = encode_message(message, **options)
        big = stored_message(items, message)
        if big["codec"]["S"] == CODEC_JSON_LIST:  # small enough to share the item of `before`
            assert (shape, label) == ("letters", "350KB")
            assert json.loads(payload_of(items, big)) == dicts([before, message])
            continue
        assert big["codec"]["S"] == encoded.codec
        stored = payload_of(items, big)
        assert stored == encoded.data
        parts = parts_of(items, big)
        assert len([i for i in items if kind(i) == "part"]) == len(parts)
        if len(encoded.data) > chunk:
            expected = math.ceil(len(encoded.data) / chunk)
            assert len(parts) == int(big["parts"]["N"]) == expected >= 2, label
        else:
            assert not parts and "parts" not in big, label
        if shape == "letters":
            assert encoded.codec == CODEC_JSON
            assert len(parts) == {"350KB": 0, "400KB": 2, "1MB": 3, "5MB": 13}[label]
            assert json.loads(stored) == message_to_dict(message)
        else:
            assert encoded.codec == CODEC_ZLIB
            assert json.loads(zlib.decompress(stored)) == message_to_dict(message)


@pytest.mark.sync_only
def test_a_16_mb_image_block_round_trips(history: History, client: Any, table_name: str) -> None:
    """The largest documented size, as 16 MB of base64 in a content block (compressed to ~12 MB,
    some 30 parts written in four transactions and a commit)."""
    picture = HumanMessage(image_block(12 * MB, 16))
    history().add_messages([picture, AIMessage("a cat")])
    assert dicts(history().messages) == dicts([picture, AIMessage("a cat")])
    items = stored_items(client, table_name)
    assert all(item_size(i) < ITEM_LIMIT for i in items)
    header = stored_message(items, picture)
    assert header["codec"]["S"] == CODEC_ZLIB and int(header["parts"]["N"]) >= 30
    assert len(parts_of(items, header)) == int(header["parts"]["N"])


@pytest.mark.sync_only
def test_a_small_message_stays_plain_json_and_a_compressible_one_is_compressed(
    history: History, client: Any, table_name: str
) -> None:
    small = HumanMessage("hello, plain and readable in the console")
    under_threshold = AIMessage(prose(DEFAULT_COMPRESS_THRESHOLD - 200, 1))
    compressible = AIMessage(prose(300 * KB, 2))
    history().add_messages([small, under_threshold, compressible])

    items = stored_items(client, table_name)
    first, second, third = (
        stored_message(items, m) for m in (small, under_threshold, compressible)
    )
    assert first is second  # the two small ones share an item, as plain JSON text
    assert first["codec"]["S"] == CODEC_JSON_LIST and "blob" not in first
    assert json.loads(first["History"]["S"]) == dicts([small, under_threshold])
    assert third["codec"]["S"] == CODEC_ZLIB and "History" not in third
    assert len(third["blob"]["B"]) < 100 * KB
    assert json.loads(zlib.decompress(third["blob"]["B"])) == message_to_dict(compressible)
    sent = dicts([small, under_threshold, compressible])
    assert dicts(history().messages) == sent
    assert dicts(history(compress_threshold=None).messages) == sent  # each item says its codec


@pytest.mark.sync_only
def test_a_message_too_large_even_compressed_is_refused_and_nothing_is_written(
    history: History, client: Any, table_name: str
) -> None:
    h = history()
    h.add_message(HumanMessage("kept"))
    huge = HumanMessage(image_block(34_000_000, 7))  # ~45 MB of base64, ~34 MB compressed
    with pytest.raises(MessageTooLargeError, match=r"payload is 3\d,\d{3},\d{3} bytes") as error:
        h.add_messages([HumanMessage("small, same batch"), huge])
    assert f"{MAX_MESSAGE_BYTES:,}" in str(error.value)
    assert len(stored_items(client, table_name)) == 1
    assert dicts(h.messages) == dicts([HumanMessage("kept")])


# -- atomicity ------------------------------------------------------------------------------------


@pytest.mark.sync_only
def test_a_batch_of_small_and_huge_messages_is_atomic_and_contiguous_while_another_writes(
    history: History, client: Any, table_name: str
) -> None:
    """Another writer appends between the batch's transactions; none of its messages may land
    inside the batch, and the batch shows up whole."""
    writer_a, writer_b = history(compress_threshold=None), history()
    writer_b.add_message(AIMessage("b-first"))
    batch = [
        HumanMessage("a-small-1"),
        HumanMessage(letters(5 * MB, 1)),
        AIMessage("a-small-2"),
        HumanMessage(image_block(MB, 2)),
        AIMessage("a-small-3"),
        AIMessage(letters(600 * KB, 3)),
    ]
    b_count = 0
    b_wrote = threading.Condition()
    stop = threading.Event()
    waited: list[bool] = []

    def writer_b_loop() -> None:
        nonlocal b_count
        while not stop.is_set() and (not waited or b_count < 40):  # keep going until A waited
            writer_b.add_message(AIMessage(f"b-{b_count}"))
            time.sleep(0.005)
            with b_wrote:
                b_count += 1
                b_wrote.notify_all()

    def after_first_transaction(**_: Any) -> None:
        if waited:
            return
        with b_wrote:  # let writer B append at least twice before A goes on
            target = b_count + 2
            waited.append(b_wrote.wait_for(lambda: b_count >= target, timeout=30))

    thread = threading.Thread(target=writer_b_loop)
    event = "after-call.dynamodb.TransactWriteItems"
    client.meta.events.register(event, after_first_transaction, unique_id="let-b-in")
    try:
        thread.start()
        writer_a.add_messages(batch)
    finally:
        stop.set()
        thread.join()
        client.meta.events.unregister(event, unique_id="let-b-in")
    assert waited == [True], "writer B did not get to append while A was writing"

    final = history().messages
    contents = [m.content for m in final]
    start = contents.index("a-small-1")
    assert dicts(final[start : start + len(batch)]) == dicts(batch)
    others = contents[:start] + contents[start + len(batch) :]
    assert others == ["b-first"] + [f"b-{i}" for i in range(b_count)]
    assert start > 1, "the batch should have been retried after B's messages"
    assert all(item_size(i) < ITEM_LIMIT for i in stored_items(client, table_name))


@pytest.mark.parametrize("allowed", [1, 2], ids=["after-1st-transaction", "after-2nd"])
@pytest.mark.sync_only
def test_a_write_interrupted_between_transactions_shows_nothing_and_clear_removes_it(
    history: History,
    client: Any,
    table_name: str,
    allowed: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = history(compress_threshold=None)
    h.add_messages([HumanMessage("one"), AIMessage(letters(500 * KB, 1))])
    kept = h.messages
    parts_before = [i for i in stored_items(client, table_name) if kind(i) == "part"]
    # 13 parts: two staged transactions and a commit. allowed=1 breaks the second transaction,
    # allowed=2 the commit.
    huge = HumanMessage(letters(5 * MB, 2))
    with FailWrites(client, allowed) as failing, pytest.raises(StorageError):
        h.add_messages([AIMessage("small, same batch"), huge])
    assert failing.failed == 1
    parts_after = [i for i in stored_items(client, table_name) if kind(i) == "part"]
    assert len(parts_after) >= len(parts_before) + 9, "the first transaction was written"

    for reader in (h, history(), history(history_size=1), history(history_size=3)):
        assert dicts(reader.messages) == dicts(kept[-(reader.history_size or 2) :])
    h.add_message(AIMessage("later"))
    history().add_message(HumanMessage("later still"))
    expected = [*kept, AIMessage("later"), HumanMessage("later still")]
    assert dicts(history().messages) == dicts(expected)
    assert dicts(history(history_size=3).messages) == dicts(expected[-3:])

    h.clear()
    assert h.messages == [] and history().messages == []
    left = stored_items(client, table_name)
    # A young stage may belong to a write still in flight: clear keeps it until it is abandoned.
    sequence = [kind(i) for i in left if not i["SK"]["S"].startswith("!")]
    assert sequence == ["erased"] * (len(sequence) - 1) + ["clear"]  # numbers stay taken
    monkeypatch.setattr(chathist.event_log, "ABANDONED_AFTER", -1)  # an hour later, say
    h.clear()
    kinds = [kind(i) for i in stored_items(client, table_name)]
    assert kinds == ["erased"] * (len(kinds) - 1) + ["clear"]  # no stage left
    assert h.messages == []


# -- windows --------------------------------------------------------------------------------------


def test_history_size_windows_with_large_messages_inside_and_at_the_edge(
    history: History,
) -> None:
    sent: list[BaseMessage] = [
        HumanMessage("m0"),
        AIMessage(letters(MB, 1)),
        HumanMessage("m2"),
        AIMessage(letters(450 * KB, 3)),
        HumanMessage(image_block(MB, 4)),
        AIMessage("m5"),
        AIMessage(letters(900 * KB, 6)),
    ]
    writer = history(compress_threshold=None)
    writer.add_messages(sent[:3])
    for message in sent[3:]:
        writer.add_message(message)
    for window in range(1, len(sent) + 2):
        assert dicts(history(history_size=window).messages) == dicts(sent[-window:])
    assert dicts(history().messages) == dicts(sent)


# -- sizes around every boundary, through DynamoDB ------------------------------------------------


def boundaries_for(chunk: int) -> dict[str, int]:
    """Payload sizes at which the stored layout changes, when one item holds ``chunk`` bytes."""
    overhead = ITEM_LIMIT - chunk
    full_parts = TRANSACTION_BYTES // ITEM_LIMIT
    # the largest payload whose parts and header still fit one transaction
    one_transaction = (
        full_parts * chunk + TRANSACTION_BYTES - full_parts * ITEM_LIMIT - 2 * overhead
    )
    return {
        "envelope": len(encode_message(HumanMessage(""), compress_threshold=None).data),
        "staged once contended": Limits(overhead).contended_bytes - overhead,
        "one item": chunk,
        "two parts": 2 * chunk,
        "one transaction": one_transaction,
        "compress threshold": DEFAULT_COMPRESS_THRESHOLD,
    }


@settings(max_examples=15, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
@pytest.mark.sync_only
def test_sizes_around_every_boundary_round_trip(
    history: History,
    client: Any,
    table_name: str,
    dynamodb_endpoint: str | None,
    dynamodb_region: str | None,
    data: Any,
) -> None:
    """Each example writes a fresh session of the test's table."""
    session = uuid.uuid4().hex
    boundaries = boundaries_for(
        chunk_bytes((table_name, dynamodb_endpoint, dynamodb_region), session)
    )
    envelope = boundaries.pop("envelope")
    sizes = data.draw(
        st.lists(
            st.builds(
                lambda p, d: max(envelope, p + d),
                st.sampled_from(sorted(boundaries.values())),
                st.integers(-3, 3),
            ),
            min_size=1,
            max_size=2,
        ),
        label="payload sizes",
    )
    compressible = data.draw(st.booleans(), label="compressible")
    make = prose if compressible else letters
    sent = [HumanMessage(make(size - envelope, size)) for size in sizes]
    assert [len(encode_message(m, compress_threshold=None).data) for m in sent] == sizes
    options: dict[str, Any] = {} if compressible else {"compress_threshold": None}
    history(session, **options).add_messages(sent)
    assert dicts(history(session).messages) == dicts(sent)
    assert dicts(history(session, history_size=1).messages) == dicts(sent[-1:])

    items = stored_items(client, table_name, session)
    assert all(item_size(i) < ITEM_LIMIT for i in items)
    assert messages_held(items) == len(sent)
    for message, size in zip(sent, sizes, strict=True):
        header = stored_message(items, message)
        if header["codec"]["S"] == CODEC_JSON_LIST:  # small ones of one call share an item
            assert len(sent) == 2 and header["count"]["N"] == "2"
            continue
        if compressible:
            expected = CODEC_ZLIB if size > DEFAULT_COMPRESS_THRESHOLD else CODEC_JSON
            assert header["codec"]["S"] == expected
        else:
            assert ("parts" in header) == (size > boundaries["one item"])


@pytest.mark.soak
@pytest.mark.sync_only
def test_the_largest_message_round_trips_and_one_byte_more_is_refused(
    history: History, client: Any, table_name: str
) -> None:
    """32 MiB of JSON exactly, stored uncompressed (82 parts in ten transactions)."""
    envelope = len(encode_message(HumanMessage(""), compress_threshold=None).data)
    largest = HumanMessage(letters(MAX_MESSAGE_BYTES - envelope, 32))
    h = history(compress_threshold=None)
    h.add_message(largest)
    assert dicts(history().messages) == dicts([largest])
    items = stored_items(client, table_name)
    assert all(item_size(i) < ITEM_LIMIT for i in items)
    assert (
        payload_of(items, stored_message(items, largest))
        == encode_message(largest, compress_threshold=None).data
    )
    count = len(items)
    with pytest.raises(MessageTooLargeError):
        h.add_message(HumanMessage(letters(MAX_MESSAGE_BYTES - envelope + 1, 33)))
    assert len(stored_items(client, table_name)) == count


def _text(size: int, seed: int) -> str:
    return "".join(random.Random(seed).choices(string.ascii_letters + " ", k=size))


def _base64(raw_bytes: int, seed: int) -> str:
    return base64.b64encode(random.Random(seed).randbytes(raw_bytes)).decode()


WRITES_TABLE = {  # docs/large-messages.md: the first cell of each row, and the call it names
    "one message of 300 KB of text": lambda: [HumanMessage(_text(300_000, 1))],
    "100 messages of 1 KB": lambda: [HumanMessage(_text(1000, i)) for i in range(100)],
    "200 messages of 3 KB": lambda: [HumanMessage(_text(3000, i)) for i in range(200)],
    "one message of 1 MB of base64": lambda: [HumanMessage(_base64(750_000, 2))],
    "one message of 3.6 MB of base64": lambda: [HumanMessage(_base64(2_700_000, 2))],
    "one message of 16 MB of base64": lambda: [HumanMessage(_base64(12_000_000, 3))],
}


@pytest.mark.sync_only
def test_the_table_of_writes_in_large_messages_md_holds(
    history: History, client: Any, table_name: str
) -> None:
    """Each row of the table in docs/large-messages.md, written after one short message: the
    encoded bytes, the items stored (and staged), the write requests and the requests of a full
    read are the table's."""
    doc = (Path(__file__).resolve().parent.parent / "docs" / "large-messages.md").read_text()
    rows = {
        cells[0]: cells[1:]
        for line in doc.splitlines()
        if line.startswith("| ") and (cells := [c.strip() for c in line.strip("|").split("|")])
    }
    for index, (name, make) in enumerate(WRITES_TABLE.items()):
        batch = make()
        session = f"table{index}"
        writer = history(session)
        writer.add_user_message("first")
        before = writer.consumed_capacity.requests
        writer.add_messages(batch)
        writes = writer.consumed_capacity.requests - before
        items = [  # all but the short message, the event numbered 0
            i for i in stored_items(client, table_name, session) if i["SK"]["S"] != "0" * 20
        ]
        staged = [i for i in items if i["SK"]["S"].startswith("!")]
        reader = history(session)
        assert [m.content for m in reader.messages][1:] == [m.content for m in batch]
        encoded = sum(len(encode_message(m).data) for m in batch)
        found = [
            f"{encoded:,} bytes",
            f"{len(items)} ({len(staged)})",
            str(writes),
            str(reader.consumed_capacity.requests),
        ]
        assert rows[name] == found, name
