"""Event <-> item: the store's decoder inverts the PynamoDB model's serialisation exactly."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chathist.core.events import MAX_SEQ, Event
from chathist.dynamo.items import event_items
from chathist.errors import CorruptHistoryError

STORE = event_items("ItemsTest", "PK", "SK", "Data", "ttl")
numbers = st.integers(min_value=0, max_value=2**53)
stages = st.none() | st.text(alphabet="0123456789abcdef", min_size=32, max_size=32)


@st.composite
def events(draw: st.DrawFn) -> Event:
    kind = draw(st.sampled_from(["message", "part", "clear", "commit", "erased"]))
    stage = draw(stages)
    return Event(
        seq=draw(st.integers(min_value=0, max_value=MAX_SEQ)),
        kind=kind,
        codec=draw(st.none() | st.sampled_from(["json", "json+zlib", "json-list"])),
        body=draw(st.none() | st.text(min_size=1) | st.binary(min_size=1)),
        parts=draw(st.integers(min_value=0, max_value=50)),
        message_seq=draw(st.none() | numbers),
        count=draw(st.integers(min_value=0, max_value=500)) if kind in ("commit", "message") else 0,
        stage=stage,
        staged_at=draw(st.none() | numbers) if stage else None,
        writer=draw(st.none() | st.text(alphabet="0123456789abcdef", min_size=32, max_size=32)),
        expires_at=draw(st.none() | numbers),
        version=draw(st.integers(min_value=1, max_value=2)),
    )


plain_messages = st.tuples(
    st.integers(min_value=0, max_value=MAX_SEQ),
    st.sampled_from(["message", "part", "clear"]),
    st.sampled_from(["json", "json-list"]),
    st.text(min_size=1),
    st.integers(min_value=1, max_value=3),
).map(lambda f: Event(f[0], f[1], codec=f[2], body=f[3], version=f[4]))
"""Events whose item holds only the key, kind, version, codec and a text payload: what a
reader's projection returns for a message in one item (`to_event`'s first case)."""


@given(events() | plain_messages, st.text(min_size=1, max_size=40))
def test_an_event_survives_its_item(event: Event, session: str) -> None:
    raw = STORE.to_item(session, event)
    assert STORE.to_event(raw) == event  # a staged event's stage travels in its sort key


@given(events(), st.text(min_size=1, max_size=40))
def test_the_fast_item_is_the_models_serialisation(event: Event, session: str) -> None:
    """`to_item` builds the dict itself; it must be exactly what the PynamoDB model (the one
    definition of the item) serialises."""
    for store in (STORE, event_items("ItemsDefault")):
        assert store.to_item(session, event) == store.model_item(session, event)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda raw: raw.pop("v"), "'v' is missing"),
        (lambda raw: raw.update(v={"S": "1"}), "'v' is not of type N"),
        (lambda raw: raw.update(SK={"S": "12"}), "not a 20-digit"),
        (lambda raw: raw.update(Data={"N": "1"}), "'Data' is not of type S"),
        (lambda raw: raw.update(parts={"N": "1.5"}), "invalid literal"),
    ],
)
def test_garbage_items_name_themselves(change: Any, fragment: str) -> None:
    raw = STORE.to_item("s", Event(3, "message", codec="json", body="{}"))
    change(raw)
    with pytest.raises(CorruptHistoryError, match=fragment) as caught:
        STORE.to_event(raw)
    assert caught.value.key is not None and caught.value.key.get("PK") == "s"
