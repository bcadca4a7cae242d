"""The message-list operations (chathist.core.message_ops) against add_messages itself: for
random sequences of appends, replacements, removals and remove-alls, folding the stored diffs
of every version gives the list LangGraph's reducer made."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, RemoveMessage

from chathist.core import message_ops

pytest.importorskip("langgraph")
from langgraph.graph.message import REMOVE_ALL_MESSAGES, add_messages

IDS = [f"m{i}" for i in range(8)]

update = st.one_of(
    st.lists(
        st.tuples(st.sampled_from(IDS), st.text(max_size=5), st.booleans()), min_size=1, max_size=4
    ).map(lambda xs: ("add", xs)),
    st.sampled_from(IDS).map(lambda i: ("remove", i)),
    st.just(("remove_all", None)),
)


def apply(state: list[BaseMessage], change: tuple[str, Any]) -> list[BaseMessage]:
    kind, arg = change
    if kind == "add":
        new = [(HumanMessage if human else AIMessage)(text, id=i) for i, text, human in arg]
        return add_messages(state, new)  # type: ignore[no-any-return]
    if kind == "remove":
        if all(m.id != arg for m in state):
            return state
        return add_messages(state, [RemoveMessage(id=arg)])  # type: ignore[no-any-return]
    return add_messages(state, [RemoveMessage(id=REMOVE_ALL_MESSAGES)])  # type: ignore[no-any-return]


@given(st.lists(update, max_size=15))
def test_folding_the_diffs_gives_every_version(changes: list[tuple[str, Any]]) -> None:
    state: list[BaseMessage] = []
    chain: list[list[Any]] = []
    parent: list[BaseMessage] | None = None
    for change in changes:
        state = apply(state, change)
        assert message_ops.is_message_list(state)
        ops = message_ops.diff(parent, state)
        chain = [ops] if message_ops.starts_over(ops) else [*chain, ops]
        assert message_ops.fold(chain) == state
        parent = state


def test_appends_and_replacements_are_small() -> None:
    before = [HumanMessage("a", id="1"), AIMessage("b", id="2")]
    after = [HumanMessage("a", id="1"), AIMessage("b2", id="2"), HumanMessage("c", id="3")]
    assert message_ops.diff(before, after) == [
        ["r", after[1]],
        ["a", [after[2]]],
    ]
    assert message_ops.diff(after, after[1:]) == [["d", "1"]]
    # A reorder is no add_messages change: a snapshot, never a wrong state.
    assert message_ops.diff(before, before[::-1])[0] == ["x"]
    with pytest.raises(ValueError):
        message_ops.fold([[["d", "nope"]]])


@given(st.text(), st.text(min_size=1), st.text(min_size=1))
def test_a_delta_key_names_its_namespace_channel_and_version(
    ns: str, channel: str, version: str
) -> None:
    from chathist.core.thread_keys import delta_fields, delta_key

    assert delta_fields(delta_key(ns, channel, version)) == (ns, channel, version)


@given(
    st.text(),
    st.dictionaries(st.text(max_size=3), st.lists(st.integers(), max_size=2), max_size=2),
    st.booleans(),
)
def test_a_detached_message_equals_its_original_and_shares_nothing_mutable(
    text: str, kwargs: dict[str, list[int]], ai: bool
) -> None:
    original = (AIMessage if ai else HumanMessage)(text, id="m", additional_kwargs=kwargs)
    copy = message_ops.detached(original)
    assert copy == original and message_ops.same(copy, original)
    assert type(copy) is type(original)
    copy.additional_kwargs.setdefault("new", []).append(1)
    for value in copy.additional_kwargs.values():
        value.append(2)
    copy.response_metadata["x"] = 1
    assert original.additional_kwargs == kwargs and original.response_metadata == {}
    assert not message_ops.same(copy, original)
