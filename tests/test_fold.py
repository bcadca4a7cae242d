"""The fold, tested on its own: events planned by the write planner fold back into a list model."""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from langchain_core.messages import HumanMessage

from chathist.core.codec import encode_message
from chathist.core.events import FORMAT_VERSION, Event
from chathist.core.fold import TailFold, fold
from chathist.core.plan import CLEAR, Limits, plan_write
from chathist.errors import CorruptHistoryError

# Tiny limits so that parts, several-request writes and commits happen with short texts.
TINY = Limits(
    overhead=100,
    item_bytes=260,
    transaction_bytes=900,
    transaction_items=4,
    direct_items=3,
    direct_bytes=600,
)

texts = st.text(alphabet="abcdefgh", max_size=700)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.lists(texts, min_size=1, max_size=6)),
        st.tuples(st.just("clear"), st.just([])),
        st.tuples(st.just("abandon"), st.lists(texts, min_size=1, max_size=6)),
    ),
    max_size=12,
)


Log = tuple[list[Event], dict[str, list[Event]], list[str]]


def play(ops: list[tuple[str, list[str]]]) -> Log:
    """Apply ``ops`` to an event log as the history writes it (the sequence and the stages) and
    to a plain list model. An abandoned write stages its events but never commits."""
    events: list[Event] = []
    stages: dict[str, list[Event]] = {}
    model: list[str] = []
    for op, batch in ops:
        entries = (
            [CLEAR]
            if op == "clear"
            else [encode_message(HumanMessage(t), compress_threshold=None) for t in batch]
        )
        writer = uuid.uuid4().hex
        plan = plan_write(entries, writer, TINY)
        if plan.staged:
            stages[writer] = [e for request in plan.staged for e in request]
        if op == "abandon":
            continue
        events.extend(plan.at(len(events)))
        model = [] if op == "clear" else [*model, *batch]
    return events, stages, model


@given(operations)
def test_fold_equals_the_list_model(ops: list[tuple[str, list[str]]]) -> None:
    events, stages, model = play(ops)
    assert [m.content for m in fold(events, stages=stages)] == model


@given(operations, st.integers(min_value=0, max_value=8))
def test_window_equals_the_tail_of_the_list_model(
    ops: list[tuple[str, list[str]]], limit: int
) -> None:
    events, stages, model = play(ops)
    window = [m.content for m in fold(events, stages=stages, limit=limit)]
    assert window == (model[-limit:] if limit else [])


@given(operations)
def test_the_fold_stops_at_the_latest_clear(ops: list[tuple[str, list[str]]]) -> None:
    events, stages, _ = play(ops)
    tail = TailFold()
    fed = 0
    for event in reversed(events):
        fed += 1
        if tail.feed(event, reversed(stages.get(event.stage or "", []))):
            break
    clears = [e.seq for e in events if e.kind == "clear"]
    if clears:
        assert tail.cleared_at == max(clears)
        assert fed == len(events) - max(clears)
    else:
        assert fed == len(events)


def msg(seq: int, text: str = "m", **changes: object) -> Event:
    payload = encode_message(HumanMessage(text), compress_threshold=None)
    event = Event(seq, "message", codec=payload.codec, body=payload.data.decode())
    return replace(event, **changes)  # type: ignore[arg-type]


def test_a_gap_is_corruption() -> None:
    with pytest.raises(CorruptHistoryError, match="missing"):
        fold([msg(0), msg(1), msg(3)])


def test_a_duplicate_sequence_number_is_corruption() -> None:
    with pytest.raises(CorruptHistoryError, match="twice"):
        fold([msg(0), msg(1), msg(1)])


def test_events_out_of_order_are_corruption() -> None:
    with pytest.raises(CorruptHistoryError, match="came after"):
        fold([msg(0), msg(2), msg(1)])


def test_a_gap_beside_an_expiring_event_is_tolerated() -> None:
    events = [msg(0, "a", expires_at=100), msg(2, "c", expires_at=100)]
    assert [m.content for m in fold(events, now=50)] == ["a", "c"]


def test_expired_messages_are_never_returned() -> None:
    events = [msg(0, "old", expires_at=10), msg(1, "new", expires_at=1000), msg(2, "forever")]
    assert [m.content for m in fold(events, now=500)] == ["new", "forever"]
    assert [m.content for m in fold(events, now=10)] == ["new", "forever"]
    assert [m.content for m in fold(events, now=5)] == ["old", "new", "forever"]


def test_a_newer_format_version_is_refused() -> None:
    with pytest.raises(CorruptHistoryError, match="upgrade chathist"):
        fold([msg(0, version=FORMAT_VERSION + 1)])


def test_a_part_without_its_message_is_corruption() -> None:
    with pytest.raises(CorruptHistoryError, match="no message above"):
        fold([Event(0, "part", body=b"x", message_seq=1)])


def test_a_message_missing_parts_is_corruption() -> None:
    header = Event(2, "message", codec="json", parts=2)
    with pytest.raises(CorruptHistoryError, match="expects part"):
        fold([msg(0), msg(1), header])
    with pytest.raises(CorruptHistoryError, match="missing some of its parts"):
        fold([Event(4, "part", body=b"{}", message_seq=5), replace(header, seq=5)])


def test_undecodable_payload_names_the_event() -> None:
    with pytest.raises(CorruptHistoryError, match="event 1"):
        fold([msg(0), Event(1, "message", codec="json", body="{garbage")])


def test_a_commit_must_bring_its_whole_stage() -> None:
    writer = uuid.uuid4().hex
    texts = ["x" * 300] * 6
    plan = plan_write([encode_message(HumanMessage(t)) for t in texts], writer, TINY)
    staged = [e for request in plan.staged for e in request]
    commit = plan.at(0)
    assert [m.content for m in fold(commit, stages={writer: staged})] == texts
    for broken in (staged[1:], staged[:-1], [*staged, staged[-1]], []):
        with pytest.raises(CorruptHistoryError, match="stage"):
            fold(commit, stages={writer: broken})


def test_unknown_kind_is_corruption() -> None:
    with pytest.raises(CorruptHistoryError, match="unexpected kind"):
        fold([Event(0, "rename", body="x")])  # type: ignore[arg-type]


@given(operations, st.data())
def test_an_erased_event_above_every_clear_is_corruption(
    ops: list[tuple[str, list[str]]], data: st.DataObject
) -> None:
    """Erased events are what a clear leaves below its tombstone; one above every tombstone
    in a snapshot is an edited item, never a message to skip."""
    events, stages, _ = play(ops)
    clears = [e.seq for e in events if e.kind == "clear"]
    live = [e for e in events if e.seq > max(clears, default=-1)]
    if not live:
        return
    victim = data.draw(st.sampled_from(live))
    edited = [Event(e.seq, "erased") if e is victim else e for e in events]
    with pytest.raises(CorruptHistoryError):
        fold(edited, stages=stages)
