"""The fold, tested on its own: events planned by the write planner fold back into a list model."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.messages import HumanMessage

from chathist.core.codec import encode_message, pack_payloads
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
    return event._replace(**changes)  # type: ignore[arg-type]


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
        fold([Event(4, "part", body=b"{}", message_seq=5), header._replace(seq=5)])


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


@given(operations, st.integers(min_value=1, max_value=8))
def test_a_reader_asking_for_wanted_items_reads_only_what_it_needs(
    ops: list[tuple[str, list[str]]], limit: int
) -> None:
    """Pages of `TailFold.wanted` items (as the reader asks) give the window, and read at most
    one item per message of the window, besides parts and commits."""
    events, stages, model = play(ops)
    newest_first = list(reversed(events))
    tail = TailFold(limit=limit)
    read = 0
    while not tail.done and read < len(newest_first):
        wanted = tail.wanted
        assert wanted is not None and wanted >= 1
        page = newest_first[read : read + wanted]
        read += len(page)
        for event in page:
            if tail.feed(event, reversed(stages.get(event.stage or "", []))):
                break
    seen = newest_first[:read]
    extra = sum(1 for e in seen if e.kind in ("part", "commit", "clear"))
    assert read <= limit + extra
    assert [m.content for m in tail.messages] == model[-limit:]


def test_a_window_takes_the_newest_messages_of_a_packed_event() -> None:
    payloads = [encode_message(HumanMessage(t), compress_threshold=None) for t in "abcd"]
    packed = pack_payloads(payloads[1:])
    events = [
        msg(0, "z"),
        Event(1, "message", codec=packed.codec, body=packed.data.decode(), count=3, version=2),
    ]
    assert [m.content for m in fold(events)] == ["z", "b", "c", "d"]
    assert [m.content for m in fold(events, limit=2)] == ["c", "d"]
    assert [m.content for m in fold(events, limit=4)] == ["z", "b", "c", "d"]
    tail = TailFold(limit=2)
    assert tail.feed(events[1]) and [m.content for m in tail.messages] == ["c", "d"]


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


# -- TTL: what a gap can legitimately mean ---------------------------------------------------------
#
# DynamoDB's TTL deletes expired items, and only those, at any time after their expiry and in any
# order. So a gap in the sequence is legitimate exactly when TTL can have made it; writers leave the
# evidence: an event that expires carries its expiry, and one that does not, written right above an
# event that does, is marked ``after_expiring``. A session whose items all expired and were deleted
# starts again at the end of what is left (a writer reads where the end is, or trusts a remembered
# number only while the event below it cannot have been deleted): numbers are reused, and the
# property checks that no read then mixes old and new.

_add = st.tuples(st.just("add"), st.lists(texts, min_size=1, max_size=4), st.booleans())
ttl_operations = st.lists(
    st.one_of(
        _add,
        _add,
        st.tuples(st.just("clear"), st.just([]), st.just(False)),
        st.tuples(st.just("expire"), st.just([]), st.just(False)),
    ),
    max_size=16,
)


def _some(data: st.DataObject, found: list[int]) -> list[int]:
    """A subset of ``found`` TTL deletes now: often all of it, else any part."""
    if not found:
        return []
    every: st.SearchStrategy[list[int]] = st.just(found)
    return data.draw(every | st.lists(st.sampled_from(found), unique=True))


TTL = 10


@dataclass
class Stored:
    """A session as DynamoDB holds it: items by sort key (sequence events and staged ones)."""

    sequence: dict[int, Event] = field(default_factory=dict)
    stages: dict[str, dict[int, Event]] = field(default_factory=dict)

    def fold(self, now: int, limit: int | None = None) -> list[str]:
        events = [self.sequence[s] for s in sorted(self.sequence)]
        stages = {k: [v[i] for i in sorted(v)] for k, v in self.stages.items()}
        return [str(m.content) for m in fold(events, stages=stages, now=now, limit=limit)]


def play_with_ttl(
    ops: list[tuple[str, list[str], bool]], data: st.DataObject, *, deleting: bool = True
) -> tuple[Stored, list[tuple[str, int | None]], int]:
    """Writers with and without ``ttl``, time passing, and TTL deleting expired items (a drawn
    subset, in any order). Each write goes right after the highest stored event, marked as
    `chathist.event_log.EventLog.place` marks it. Returns the store, the list model (text,
    expiry) and the time."""
    stored = Stored()
    model: list[tuple[str, int | None]] = []
    now = 1000
    for op, batch, ttl in ops:
        if op == "expire":  # time passes; TTL deletes some expired items, in any order
            now += TTL
            if not deleting:
                continue
            for seq in _some(data, [s for s, e in stored.sequence.items() if _gone(e, now)]):
                del stored.sequence[seq]
            for stage in stored.stages.values():
                for index in _some(data, [i for i, e in stage.items() if _gone(e, now)]):
                    del stage[index]
            continue
        entries = (
            [CLEAR]
            if op == "clear"
            else [encode_message(HumanMessage(t), compress_threshold=None) for t in batch]
        )
        writer = uuid.uuid4().hex
        expires = now + TTL if ttl else None
        plan = plan_write(entries, writer, TINY, expires_at=expires, now=now)
        if plan.staged:
            stored.stages[writer] = {e.seq: e for request in plan.staged for e in request}
        top = max(stored.sequence, default=-1)
        below = stored.sequence.get(top)
        for event in plan.at(
            top + 1, below_expires=below is not None and below.expires_at is not None
        ):
            stored.sequence[event.seq] = event
        model = [] if op == "clear" else [*model, *((t, expires) for t in batch)]
    return stored, model, now


def _gone(event: Event, now: int) -> bool:
    return event.expires_at is not None and event.expires_at <= now


@settings(max_examples=300)
@given(ttl_operations, st.data(), st.integers(min_value=0, max_value=5))
def test_ttl_gaps_and_reused_numbers_read_as_the_unexpired_model(
    ops: list[tuple[str, list[str], bool]], data: st.DataObject, limit: int
) -> None:
    stored, model, now = play_with_ttl(ops, data)
    visible = [t for t, expires in model if expires is None or expires > now]
    assert stored.fold(now) == visible
    assert stored.fold(now, limit=limit) == (visible[-limit:] if limit else [])


@settings(max_examples=300)
@given(ttl_operations, st.data())
def test_a_gap_ttl_cannot_have_made_is_corruption(
    ops: list[tuple[str, list[str], bool]], data: st.DataObject
) -> None:
    """Delete one event TTL would never delete (it does not expire), between two that do not
    expire either, above the latest clear, under an event not marked ``after_expiring``: the
    fold reports the gap."""
    stored, _, now = play_with_ttl(ops, data, deleting=False)
    seqs = sorted(stored.sequence)
    clears = [s for s in seqs if stored.sequence[s].kind == "clear"]
    candidates = [
        s
        for s in seqs
        if s > max(clears, default=-1)
        and s - 1 in stored.sequence
        and s + 1 in stored.sequence
        and all(stored.sequence[n].expires_at is None for n in (s - 1, s, s + 1))
        and not stored.sequence[s + 1].after_expiring
    ]
    if not candidates:
        return
    del stored.sequence[data.draw(st.sampled_from(candidates))]
    with pytest.raises(CorruptHistoryError, match="missing"):
        stored.fold(now)


def test_a_plain_event_written_above_an_expiring_one_tolerates_its_deletion() -> None:
    """The issue's case: plain ``keep0``, a ``ttl`` history's ``temp1``, plain ``keep2``;
    TTL deleted ``temp1``."""
    plan = plan_write([encode_message(HumanMessage("keep2"))], "w", TINY)
    keep2 = plan.at(2, below_expires=True)
    assert keep2[0].after_expiring
    assert [m.content for m in fold([msg(0, "keep0"), *keep2], now=5000)] == ["keep0", "keep2"]
    with pytest.raises(CorruptHistoryError, match="missing"):
        fold([msg(0, "keep0"), *plan.at(2)], now=5000)
