"""Consumed-capacity accounting: the history's totals against what DynamoDB Local reported.

DynamoDB Local quirk (measured, jar 3.3.x): for a TransactWriteItems it reports twice the sum of
the *distinct* per-item write units (items of equal size are counted once); the service charges
twice the sum over all items. Expected values below say which they follow.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from chathist import Capacity, DynamoDBChatMessageHistory
from chathist.dynamo.capacity import CapacityMeter, reported
from tests.test_large_messages import (
    KB,
    MB,
    History,
    client_of,
    history,  # noqa: F401 - the fixture
    item_size,
    letters,
    stored_items,
)

pytestmark = pytest.mark.sync_only  # it records the requests on the sync botocore client


@dataclass
class Call:
    """One request a history sent, as botocore saw it."""

    operation: str
    params: dict[str, Any]
    consumed: Any = None

    @property
    def consumed_units(self) -> float:
        """The CapacityUnits the response reported (summed over tables)."""
        entries = self.consumed or []
        if isinstance(entries, dict):
            entries = [entries]
        return float(sum(e["CapacityUnits"] for e in entries))


@dataclass
class Recorder:
    """Records every request of a botocore client, with its parameters and its response's
    ConsumedCapacity, through event hooks."""

    calls: list[Call] = field(default_factory=list)
    _pending: threading.local = field(default_factory=threading.local)

    def before(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self._pending.call = Call(model.name, dict(params))

    def after(self, parsed: dict[str, Any], model: Any, **_: Any) -> None:
        call: Call = self._pending.call
        assert call.operation == model.name
        call.consumed = parsed.get("ConsumedCapacity")
        self.calls.append(call)

    def capacity(self, operations: set[str] | None = None) -> Capacity:
        """What DynamoDB reported for the recorded calls, summed by hand."""
        total = Capacity()
        for call in self.calls:
            if operations is not None and call.operation not in operations:
                continue
            units = call.consumed_units
            is_read = call.operation in {"Query", "GetItem", "Scan"}
            total += Capacity(units if is_read else 0.0, 0.0 if is_read else units, 1)
        return total


DATA_OPERATIONS = {"Query", "PutItem", "TransactWriteItems", "BatchWriteItem", "GetItem"}


@pytest.fixture
def recorder(history: History) -> Iterator[Recorder]:  # noqa: F811
    client = client_of(history())
    recording = Recorder()
    client.meta.events.register("before-parameter-build.dynamodb", recording.before, "rec-in")
    client.meta.events.register("after-call.dynamodb", recording.after, "rec-out")
    try:
        yield recording
    finally:
        client.meta.events.unregister("before-parameter-build.dynamodb", unique_id="rec-in")
        client.meta.events.unregister("after-call.dynamodb", unique_id="rec-out")


def write_units(size: int) -> int:
    return max(1, math.ceil(size / 1024))


# -- totals against the reported values --------------------------------------------------------


def test_totals_equal_what_dynamodb_reported_for_every_request(
    history: History,  # noqa: F811
    recorder: Recorder,
) -> None:
    h = history(compress_threshold=None)
    h.add_message(HumanMessage("hello"))
    h.add_messages([AIMessage("hi"), HumanMessage(letters(2 * MB, 1)), AIMessage("done")])
    h.add_message(AIMessage(letters(600 * KB, 2)))
    assert len(h.messages) == 5
    calls_before = len(recorder.calls)
    assert len(history(history_size=2).messages) == 2  # another history: not counted in h's
    other = Recorder(recorder.calls[calls_before:]).capacity(DATA_OPERATIONS)
    assert other.requests >= 1 and other.write_units == 0
    h.clear()
    assert h.messages == []

    ours = [c for c in recorder.calls if c.operation in DATA_OPERATIONS]
    assert all(c.params.get("ReturnConsumedCapacity") == "TOTAL" for c in ours)
    assert h.consumed_capacity == recorder.capacity(DATA_OPERATIONS) - other
    assert h.consumed_capacity.write_units > 2 * 2 * MB / 1024 / 10
    operations = {c.operation for c in ours}
    assert {"Query", "PutItem", "TransactWriteItems", "BatchWriteItem"} <= operations


def test_reading_costs_what_the_items_weigh(history: History, recorder: Recorder) -> None:  # noqa: F811
    """One query page: strongly consistent reads cost 1 RCU per 4 KB of items (rounded up once),
    eventually consistent ones half."""
    writer = history(compress_threshold=None)
    writer.add_messages([HumanMessage(letters(size, size)) for size in (3_000, 5_000, 9_000)])
    client = client_of(writer)
    weight = sum(item_size(i) for i in stored_items(client, writer.table_name))
    strong, eventual = history(), history(consistent_read=False)
    assert len(strong.messages) == len(eventual.messages) == 3
    assert strong.consumed_capacity == Capacity(math.ceil(weight / 4096), 0.0, 1)
    assert eventual.consumed_capacity == Capacity(math.ceil(weight / 4096) / 2, 0.0, 1)


# -- write units against item sizes -----------------------------------------------------------


def test_a_put_costs_one_wcu_per_kb_of_item(
    history: History,  # noqa: F811
    recorder: Recorder,
    table_name: str,
) -> None:
    h = history(compress_threshold=None)
    h.add_message(HumanMessage("x"))  # the first append also reads the session's last number
    client = client_of(h)
    (first,) = stored_items(client, table_name)
    base = item_size(first) - 1  # the item's bytes besides its one-letter text
    for size in (1_000, 1_024, 1_025, 2_048, 2_049, 3_500):
        before = h.consumed_capacity
        h.add_message(HumanMessage("y" * (size - base)))
        stored = stored_items(client, table_name)[-1]
        assert item_size(stored) == size
        assert h.consumed_capacity - before == Capacity(0.0, float(write_units(size)), 1)
    assert h.consumed_capacity.write_units == recorder.capacity({"PutItem"}).write_units
    assert h.consumed_capacity.write_units == 1 + 1 + 1 + 2 + 2 + 3 + 4


def expected_write_units(call: Call, local: bool) -> int:
    """Write units of one request, from the items it sent: 1 per KB of each item, twice for a
    transaction (DynamoDB Local: twice the sum of the distinct per-item units)."""
    if call.operation == "PutItem":
        return write_units(item_size(call.params["Item"]))
    assert call.operation == "TransactWriteItems"
    units = [write_units(item_size(a["Put"]["Item"])) for a in call.params["TransactItems"]]
    return 2 * sum(set(units) if local else units)


def writes_since(recorder: Recorder, first: int) -> list[Call]:
    return [c for c in recorder.calls[first:] if c.operation in {"PutItem", "TransactWriteItems"}]


def test_a_transaction_costs_twice_its_items(
    history: History,  # noqa: F811
    recorder: Recorder,
    dynamodb_endpoint: str | None,
) -> None:
    """Two messages of one call share an item (a put, no transaction); then a message in parts
    (full part, partial part and header, all of different sizes, so DynamoDB Local counts them
    as the service does) is a transaction, charged twice its items."""
    local = dynamodb_endpoint is not None
    h = history(compress_threshold=None)
    h.add_message(HumanMessage("warm up"))
    before, first = h.consumed_capacity, len(recorder.calls)
    h.add_messages([HumanMessage("a" * 500), AIMessage("b" * 2_500)])
    (call,) = writes_since(recorder, first)  # one item holds both: a put of the bytes it needs
    assert call.operation == "PutItem"
    assert write_units(item_size(call.params["Item"])) == 4
    assert h.consumed_capacity - before == Capacity(0.0, 4.0, 1)

    before, first = h.consumed_capacity, len(recorder.calls)
    h.add_message(AIMessage(letters(550 * KB, 1)))
    calls = writes_since(recorder, first)
    sent = [
        action["Put"]["Item"]
        for call in calls
        if call.operation == "TransactWriteItems"
        for action in call.params["TransactItems"]
    ]
    assert sorted(i["event"]["S"] for i in sent) == ["message", "part", "part"]
    expected = sum(expected_write_units(c, local) for c in calls)
    assert 1_100 < expected < 1_200
    used = h.consumed_capacity - before
    assert used.write_units == expected and used.requests >= len(calls)


def test_a_multi_transaction_write_costs_what_each_transaction_reported(
    history: History,  # noqa: F811
    recorder: Recorder,
    dynamodb_endpoint: str | None,
) -> None:
    """5 MB in 13 parts: more than one transaction, most parts of equal size (where DynamoDB
    Local reports less than the service would charge)."""
    h = history(compress_threshold=None)
    h.add_message(HumanMessage(letters(5 * MB, 2)))
    writes = writes_since(recorder, 0)
    assert len([c for c in writes if c.operation == "TransactWriteItems"]) >= 2
    for call in writes:
        assert call.consumed_units == expected_write_units(call, dynamodb_endpoint is not None)
    service = sum(expected_write_units(c, local=False) for c in writes)
    local = sum(expected_write_units(c, local=True) for c in writes)
    assert service >= 2 * 5 * MB // 1024 > local
    assert h.consumed_capacity.write_units == (local if dynamodb_endpoint else service)
    assert h.consumed_capacity == recorder.capacity(DATA_OPERATIONS)


# -- the meter on its own ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operation", "response", "expected"),
    [
        ("PutItem", {"ConsumedCapacity": {"TableName": "t", "CapacityUnits": 2.0}}, (0, 2)),
        ("Query", {"ConsumedCapacity": {"TableName": "t", "CapacityUnits": 0.5}}, (0.5, 0)),
        (
            "TransactWriteItems",
            {"ConsumedCapacity": [{"TableName": "a", "CapacityUnits": 4.0}, {"CapacityUnits": 6}]},
            (0, 10),
        ),
        (
            "TransactWriteItems",  # with a condition check that read
            {
                "ConsumedCapacity": [
                    {"CapacityUnits": 7.0, "ReadCapacityUnits": 1.0, "WriteCapacityUnits": 6.0}
                ]
            },
            (1, 6),
        ),
        (
            "TransactWriteItems",  # only one of the two split out: the rest is the other
            {"ConsumedCapacity": [{"CapacityUnits": 7.0, "ReadCapacityUnits": 1.0}]},
            (1, 6),
        ),
        ("BatchWriteItem", {"ConsumedCapacity": [{"CapacityUnits": 3.0}]}, (0, 3)),
        ("PutItem", {"Error": {"Code": "ConditionalCheckFailedException"}}, (0, 0)),
        ("PutItem", None, (0, 0)),
    ],
)
def test_reported_reads_each_response_shape(
    operation: str, response: dict[str, Any] | None, expected: tuple[float, float]
) -> None:
    assert reported(operation, response) == Capacity(*map(float, expected), 1)


def test_the_meter_adds_up_across_threads_and_resets() -> None:
    meter = CapacityMeter()
    response = {"ConsumedCapacity": {"CapacityUnits": 1.5}}

    def record() -> None:
        for _ in range(2_000):
            meter.record("PutItem", response)
            meter.record("Query", response)

    threads = [threading.Thread(target=record) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert meter.total == Capacity(24_000.0, 24_000.0, 32_000)
    assert meter.reset() == Capacity(24_000.0, 24_000.0, 32_000)
    assert meter.total == Capacity()


def test_a_history_starts_at_zero_and_deltas_measure_one_operation(
    history: History,  # noqa: F811
) -> None:
    h = history()
    assert h.consumed_capacity == Capacity()
    h.add_message(HumanMessage("one"))
    before = h.consumed_capacity
    h.add_message(HumanMessage("two"))
    assert h.consumed_capacity - before == Capacity(0.0, 1.0, 1)
    assert isinstance(h, DynamoDBChatMessageHistory)


def test_a_window_pays_for_its_messages_not_for_the_large_ones_below(
    history: History,  # noqa: F811
) -> None:
    """Three 1 MB messages under two small ones: a window of the small ones reads a few KB; one
    more message in the window reads that 1 MB message (about 256 RCU), not the other two."""
    writer = history(compress_threshold=None)
    for seed in range(3):
        writer.add_message(AIMessage(letters(MB, seed)))
    writer.add_messages([HumanMessage("small 1"), AIMessage("small 2")])
    two, three = history(history_size=2), history(history_size=3)
    assert [m.content for m in two.messages] == ["small 1", "small 2"]
    assert len(three.messages) == 3
    assert two.consumed_capacity.read_units <= 2
    assert MB / 4096 <= three.consumed_capacity.read_units <= 1.1 * MB / 4096 + 2
