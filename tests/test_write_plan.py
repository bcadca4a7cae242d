"""The write planner on its own (no I/O): sizes around every limit, checked with Hypothesis.

Every plan must number its events contiguously, keep every item and every request within
DynamoDB's limits, add a commit (written last) exactly when it needs more than one request, and
hold each payload byte for byte, in order.
"""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.messages import HumanMessage

from chathist.core.codec import (
    CODEC_JSON,
    CODEC_JSON_LIST,
    CODEC_ZLIB,
    Payload,
    encode_message,
    pack_payloads,
)
from chathist.core.events import FORMAT_VERSION, MAX_SEQ, PLAIN_VERSION, Event
from chathist.core.fold import fold
from chathist.core.plan import (
    CLEAR,
    ITEM_LIMIT,
    MAX_MESSAGE_BYTES,
    TRANSACTION_BYTES,
    TRANSACTION_ITEMS,
    Limits,
    Plan,
    event_size,
    item_overhead,
    plan_write,
)
from chathist.dynamo.items import event_items
from chathist.errors import MessageTooLargeError

# A store that is never used for I/O: it turns events into the items DynamoDB would receive.
STORE = event_items("plan-test")
SESSION = "session-" + "s" * 40
REAL = Limits(item_overhead(STORE.attribute_names, SESSION))
CHUNK = REAL.chunk_bytes
PARTS_PER_TRANSACTION = TRANSACTION_BYTES // ITEM_LIMIT  # 9 full parts fit one transaction
ONE_TRANSACTION = (  # the largest payload whose parts and header fit one transaction
    PARTS_PER_TRANSACTION * CHUNK
    + TRANSACTION_BYTES
    - PARTS_PER_TRANSACTION * ITEM_LIMIT
    - 2 * REAL.overhead
)
CONTENDED_EDGE = REAL.contended_bytes - REAL.overhead
"""The largest payload a write that lost a race still sends directly (bigger is then staged)."""
TINY = Limits(
    overhead=100,
    item_bytes=300,
    transaction_bytes=1_000,
    transaction_items=5,
    max_message_bytes=3_000,
    direct_items=3,
    direct_bytes=700,
)
TINY_DEFAULT_DIRECT = Limits(  # direct-write limits above the transaction limits
    overhead=100,
    item_bytes=300,
    transaction_bytes=1_000,
    transaction_items=5,
    max_message_bytes=3_000,
)
WRITER = uuid.uuid4().hex
NOW = 1_700_000_000


def dynamodb_item_size(item: dict[str, dict[str, Any]]) -> int:
    """Bytes DynamoDB counts for ``item`` (numbers: 1 byte per 2 digits + 1, rounded up)."""
    size = 0
    for name, value in item.items():
        size += len(name.encode("utf-8"))
        ((kind, raw),) = value.items()
        if kind == "S":
            size += len(raw.encode("utf-8"))
        elif kind == "B":
            size += len(raw)
        elif kind == "N":
            size += math.ceil(len(raw.lstrip("-").replace(".", "")) / 2) + 1
        else:
            raise AssertionError(f"unexpected attribute type {kind}")
    return size


def payload(size: int, seed: int = 0, codec: str = CODEC_ZLIB) -> Payload:
    """A payload of ``size`` bytes (ASCII hex digits for the JSON codec, so it is text)."""
    rng = random.Random(seed)
    if codec == CODEC_JSON:
        return Payload(codec, rng.randbytes((size + 1) // 2).hex()[:size].encode("ascii"))
    return Payload(codec, rng.randbytes(size))


def check_plan(
    entries: Sequence[Payload | object],
    start: int,
    plan: Plan,
    limits: Limits,
    expires_at: int | None = None,
) -> list[Event]:
    """Assert every invariant of a plan of ``entries`` appended at ``start``; return its events
    as written (staged ones, then the final request numbered from ``start``)."""
    final = plan.at(start)
    requests = [*plan.staged, final]
    written = [event for request in requests for event in request]
    assert all(requests)
    assert {e.writer for e in written} == {WRITER}
    assert [e.seq for e in final] == list(range(start, start + len(final)))
    for request in requests:
        assert len(request) <= limits.transaction_items
        assert sum(event_size(e, limits.overhead) for e in request) <= limits.transaction_bytes
        for event in request:
            assert event_size(event, limits.overhead) <= limits.item_bytes
    commits = [e for e in written if e.kind == "commit"]
    if plan.staged:
        assert plan.requests == len(requests) > 1
        assert commits == final == [written[-1]], "a staged write ends with one commit, alone"
        body = [e for request in plan.staged for e in request]
        assert [e.seq for e in body] == list(range(len(body))), "stage indexes are contiguous"
        assert all(e.stage == WRITER and e.staged_at == NOW for e in body)
        assert final[0].stage == WRITER and final[0].count == len(body)
        direct_items = min(limits.direct_items, limits.transaction_items)
        direct_bytes = min(limits.direct_bytes, limits.transaction_bytes)
        body_bytes = sum(event_size(e, limits.overhead) for e in body)
        assert len(body) > 1, "one item is always written directly"
        assert len(body) > direct_items or body_bytes > direct_bytes, "staged only when needed"
    else:
        assert plan.requests == 1 and not commits
        body = final
        assert all(e.stage is None and e.staged_at is None for e in body)
        assert len(body) == 1 or (
            len(body) <= limits.direct_items
            and sum(event_size(e, limits.overhead) for e in body) <= limits.direct_bytes
        )
    if expires_at is not None:
        assert all(e.expires_at == expires_at for e in written if e.kind != "clear")
    # Walk the events back into the entries, in order.
    position = 0
    index = 0
    while index < len(entries):
        entry = entries[index]
        index += 1
        event = body[position]
        if entry is CLEAR:
            assert event.kind == "clear" and event.expires_at is None
            position += 1
            continue
        assert isinstance(entry, Payload)
        if event.kind == "message" and event.codec == CODEC_JSON_LIST:
            # several small JSON messages packed into one item, in order
            group = entries[index - 1 : index - 1 + event.count]
            assert event.count > 1 and event.version == FORMAT_VERSION and event.parts == 0
            assert all(isinstance(p, Payload) and p.codec == CODEC_JSON for p in group)
            assert isinstance(event.body, str)
            packed = pack_payloads(group)  # type: ignore[arg-type]
            assert event.body.encode("utf-8") == packed.data
            assert len(packed.data) + limits.overhead <= limits.item_bytes
            index += event.count - 1
            position += 1
            continue
        assert (event.version == PLAIN_VERSION and event.count == 0) or event.kind == "part"
        if event.kind == "message":
            assert event.codec == entry.codec and event.parts == 0
            stored = event.body.encode("utf-8") if isinstance(event.body, str) else event.body
            assert stored == entry.data
            assert len(entry.data) + limits.overhead <= limits.item_bytes
            position += 1
            continue
        assert len(entry.data) + limits.overhead > limits.item_bytes, "split only when needed"
        parts = []
        while body[position].kind == "part":
            parts.append(body[position])
            position += 1
        header = body[position]
        position += 1
        assert header.kind == "message" and header.codec == entry.codec
        assert header.body is None and header.parts == len(parts)
        assert all(p.message_seq == header.seq and isinstance(p.body, bytes) for p in parts)
        assert b"".join(p.body for p in parts) == entry.data  # type: ignore[misc]
    assert position == len(body)
    return written


def around(*points: int, spread: int = 2) -> st.SearchStrategy[int]:
    """Integers within ``spread`` of one of ``points`` (never below 0)."""
    return st.builds(
        lambda point, delta: max(0, point + delta),
        st.sampled_from(points),
        st.integers(-spread, spread),
    )


# Payload sizes at every edge under the real limits: one item, k parts, a full transaction.
REAL_EDGES = around(
    0,
    CONTENDED_EDGE,
    CHUNK,
    2 * CHUNK,
    PARTS_PER_TRANSACTION * CHUNK,
    ONE_TRANSACTION,
    2 * PARTS_PER_TRANSACTION * CHUNK,
)


@settings(max_examples=60)
@given(
    sizes=st.lists(REAL_EDGES, min_size=1, max_size=3),
    start=st.one_of(st.just(0), st.integers(0, 10**6), st.just(MAX_SEQ - 200)),
    expires_at=st.none() | st.integers(1, 2**40),
)
def test_real_limits_at_the_edges(sizes: list[int], start: int, expires_at: int | None) -> None:
    entries = [payload(size, seed) for seed, size in enumerate(sizes)]
    plan = plan_write(entries, WRITER, REAL, expires_at=expires_at, now=NOW)
    check_plan(entries, start, plan, REAL, expires_at)


@settings(max_examples=30)
@given(sizes=st.lists(REAL_EDGES, min_size=1, max_size=2), expires_at=st.none() | st.just(2**33))
def test_every_item_fits_dynamodb(sizes: list[int], expires_at: int | None) -> None:
    """The items as serialized for DynamoDB (names, keys, numbers) stay under 400 KB."""
    long_session = "é" * 1024  # 2,048 bytes: the longest partition key value
    limits = Limits(item_overhead(STORE.attribute_names, long_session))
    entries = [payload(size, seed, CODEC_JSON) for seed, size in enumerate(sizes)]
    plan = plan_write(entries, WRITER, limits, expires_at=expires_at, now=NOW)
    for event in check_plan(entries, MAX_SEQ - 100, plan, limits, expires_at):
        item = STORE.to_item(long_session, event)
        assert dynamodb_item_size(item) <= ITEM_LIMIT
        assert dynamodb_item_size(item) <= event_size(event, limits.overhead)


@pytest.mark.parametrize(
    ("count", "requests"),
    [
        (1, 1),
        (TRANSACTION_ITEMS, 1),
        (TRANSACTION_ITEMS + 1, 3),
        (2 * TRANSACTION_ITEMS, 3),
        (2 * TRANSACTION_ITEMS + 1, 4),
    ],
)
def test_item_count_limits(count: int, requests: int) -> None:
    """Messages that cannot share an item (compressed ones): up to a transaction's 100 items
    are one request; more are staged, 100 items a transaction."""
    entries = [payload(10, seed) for seed in range(count)]
    plan = plan_write(entries, WRITER, REAL, now=NOW)
    written = check_plan(entries, 7, plan, REAL)
    assert plan.requests == requests
    assert len(written) == count + (requests > 1)


@pytest.mark.parametrize(("count", "size"), [(2, 10), (2, 600), (50, 500), (100, 500), (250, 900)])
def test_small_messages_of_one_write_share_items(count: int, size: int) -> None:
    """A turn (2 messages) is one item and one put; a batch fills items in order, as few as
    the 400 KB limit allows, and is one request up to a transaction's 4 MB."""
    entries = [payload(size, seed, CODEC_JSON) for seed in range(count)]
    plan = plan_write(entries, WRITER, REAL, now=NOW)
    written = check_plan(entries, 3, plan, REAL)
    room = REAL.item_bytes - REAL.overhead
    assert len(written) == math.ceil(count * (size + 1) / (room - 1))
    assert plan.requests == 1
    assert sum(e.count for e in written) == count


@pytest.mark.parametrize(
    ("size", "parts", "requests"),
    [
        (1_000, 0, 1),
        (CONTENDED_EDGE + 1, 0, 1),
        (CHUNK, 0, 1),
        (CHUNK + 1, 2, 1),
        (PARTS_PER_TRANSACTION * CHUNK, PARTS_PER_TRANSACTION, 1),
        (PARTS_PER_TRANSACTION * CHUNK + 1, PARTS_PER_TRANSACTION + 1, 1),
        (ONE_TRANSACTION, PARTS_PER_TRANSACTION + 1, 1),
        (ONE_TRANSACTION + 1, PARTS_PER_TRANSACTION + 1, 3),
        (MAX_MESSAGE_BYTES, math.ceil(MAX_MESSAGE_BYTES / CHUNK), 11),
    ],
)
def test_parts_and_requests_of_one_message(size: int, parts: int, requests: int) -> None:
    entries = [payload(size)]
    plan = plan_write(entries, WRITER, REAL, now=NOW)
    written = check_plan(entries, 0, plan, REAL)
    assert [e.parts for e in written if e.kind == "message"] == [parts]
    assert plan.requests == requests


@settings(max_examples=60)
@given(
    sizes=st.lists(around(CONTENDED_EDGE // 2, CONTENDED_EDGE, CHUNK), min_size=1, max_size=3),
    json=st.booleans(),
)
def test_a_write_that_lost_a_race_is_direct_only_up_to_the_contended_bytes(
    sizes: list[int], json: bool
) -> None:
    """`Limits.contended`: the same write, planned again after it lost the end of the sequence,
    is staged if it is several items over 256 KB; anything else is planned as before. ``size``
    bounds the final request."""
    entries = [
        payload(size, seed, CODEC_JSON if json else CODEC_ZLIB) for seed, size in enumerate(sizes)
    ]
    contended = REAL.contended()
    first = plan_write(entries, WRITER, REAL, now=NOW)
    again = plan_write(entries, WRITER, contended, now=NOW)
    check_plan(entries, 5, again, contended)
    direct_size = sum(event_size(e, REAL.overhead) for e in first.final)
    assert first.size == (
        direct_size if not first.staged else event_size(first.final[0], REAL.overhead)
    )
    if first.staged or len(first.final) == 1 or first.size <= REAL.contended_bytes:
        assert again == first
    else:
        assert again.staged and [e.kind for e in again.final] == ["commit"]


def test_too_large_is_refused_before_planning() -> None:
    with pytest.raises(MessageTooLargeError, match="33,554,433 bytes"):
        plan_write([payload(10), payload(MAX_MESSAGE_BYTES + 1)], WRITER, REAL)
    largest = payload(MAX_MESSAGE_BYTES)
    check_plan([largest], 0, plan_write([largest], WRITER, REAL, now=NOW), REAL)


entry_sizes = st.lists(
    st.one_of(
        st.integers(0, TINY.max_message_bytes + 50),
        around(TINY.chunk_bytes, 2 * TINY.chunk_bytes, TINY.max_message_bytes),
        st.just(-1),  # a clear
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=300)
@given(
    sizes=entry_sizes,
    limits=st.sampled_from([TINY, TINY_DEFAULT_DIRECT]),
    start=st.integers(0, 1000),
    json_codec=st.booleans(),
    expires_at=st.none() | st.integers(1, 2**40),
)
def test_tiny_limits(
    sizes: list[int], limits: Limits, start: int, json_codec: bool, expires_at: int | None
) -> None:
    """With tiny limits many items, requests and commits come out of few bytes."""
    codec = CODEC_JSON if json_codec else CODEC_ZLIB
    entries: list[Payload | object] = [
        CLEAR if size < 0 else payload(size, seed, codec) for seed, size in enumerate(sizes)
    ]
    if any(isinstance(e, Payload) and len(e.data) > limits.max_message_bytes for e in entries):
        with pytest.raises(MessageTooLargeError):
            plan_write(entries, WRITER, limits)  # type: ignore[arg-type]
        return
    plan = plan_write(entries, WRITER, limits, expires_at=expires_at, now=NOW)  # type: ignore[arg-type]
    check_plan(entries, start, plan, limits, expires_at)


def _plan(texts: list[str]) -> tuple[str, Plan]:
    """(writer, plan) of a write of ``texts`` as HumanMessages under the tiny limits."""
    writer = uuid.uuid4().hex
    entries = [encode_message(HumanMessage(t), compress_threshold=None) for t in texts]
    return writer, plan_write(entries, writer, TINY)


@settings(max_examples=100)
@given(
    before=st.lists(st.text("xyz", max_size=400), max_size=3),
    batch=st.lists(st.text("abcdefghij", max_size=2_000), min_size=1, max_size=6),
)
def test_no_request_short_of_the_last_shows_anything(before: list[str], batch: list[str]) -> None:
    """A reader sees the whole batch once every request is written, and none of it before."""
    sequence: list[Event] = []
    stages: dict[str, list[Event]] = {}
    for text in before:
        writer, plan = _plan([text])
        stages[writer] = [e for request in plan.staged for e in request]
        sequence.extend(plan.at(len(sequence)))
    writer, plan = _plan(batch)
    for written in range(len(plan.staged) + 1):  # staged requests written, commit not yet
        stages[writer] = [e for request in plan.staged[:written] for e in request]
        assert [m.content for m in fold(sequence, stages=stages)] == before
    sequence.extend(plan.at(len(sequence)))
    everything = [*before, *batch]
    assert [m.content for m in fold(sequence, stages=stages)] == everything
    for window in range(1, len(everything) + 1):
        window_read = fold(sequence, stages=stages, limit=window)
        assert [m.content for m in window_read] == everything[-window:]
