"""DynamoDBSaver against DynamoDB Local: each state LangGraph reads back equals what its own
InMemorySaver returns for the same graph and calls (turns, forks, time travel, update_state,
RemoveMessage, replace by id), sync and async; threads beside chat sessions; any size; a put cut
short; flat cost per turn; DeltaChannel history; TTL; errors."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from typing import Annotated, Any

import pytest

pytest.importorskip("langgraph")

from langchain_core.messages import (
    AIMessage,
    AnyMessage,
    HumanMessage,
    RemoveMessage,
    ToolMessage,
)
from langgraph.channels.delta import DeltaChannel
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.graph.message import REMOVE_ALL_MESSAGES, _messages_delta_reducer
from typing_extensions import TypedDict

from chathist import ConfigurationError, CorruptHistoryError, DynamoDBChatMessageHistory
from chathist.core.sizes import item_size
from chathist.dynamo.client import Sender
from chathist.errors import StorageError
from chathist.langgraph import DynamoDBSaver
from tests.helpers import partition_items


class Chat(MessagesState):
    turns: int


def reply(state: Chat) -> dict[str, Any]:
    """A deterministic model: the reply's id and text depend only on the state."""
    n = len(state["messages"])
    last = state["messages"][-1].content if state["messages"] else ""
    return {
        "messages": [
            AIMessage(f"reply {n:05d} to {str(last)[:9]}: " + "x" * 300, id=f"ai-{n}-{len(last)}")
        ],
        "turns": state.get("turns", 0) + 1,
    }


def chat_graph(saver: BaseCheckpointSaver[Any]) -> Any:
    builder = StateGraph(Chat)
    builder.add_node("chat", reply)
    builder.add_edge(START, "chat")
    builder.add_edge("chat", END)
    return builder.compile(checkpointer=saver)


def config(thread: str, checkpoint_id: str | None = None) -> dict[str, Any]:
    configurable = {"thread_id": thread}
    if checkpoint_id:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}


class Driver:
    """Runs graph calls through the sync API or the async one."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __call__(self, graph: Any, method: str, *args: Any, **kwargs: Any) -> Any:
        if self.mode == "sync":
            return getattr(graph, method)(*args, **kwargs)

        async def run() -> Any:
            if method == "get_state_history":
                return [s async for s in graph.aget_state_history(*args, **kwargs)]
            return await getattr(graph, "a" + method)(*args, **kwargs)

        return asyncio.run(run())


@pytest.fixture(params=["sync", "async"])
def drive(request: pytest.FixtureRequest) -> Driver:
    return Driver(request.param)


def saver_for(table_name: str, endpoint: str | None, **kwargs: Any) -> DynamoDBSaver:
    return DynamoDBSaver(table_name, endpoint_url=endpoint, **kwargs)


def snapshot(graph: Any, drive: Driver, cfg: dict[str, Any]) -> list[Any]:
    """What LangGraph shows of a thread: every state of its history, newest first."""
    history = drive(graph, "get_state_history", cfg)
    if not isinstance(history, list):
        history = list(history)
    return [(s.values, s.next, s.metadata.get("source"), s.metadata.get("step")) for s in history]


def same_calls(graphs: list[Any], drive: Driver, calls: Callable[[Any], None]) -> None:
    for graph in graphs:
        calls(graph)


def test_states_equal_in_memory_saver_through_forks_and_updates(
    table_name: str, dynamodb_endpoint: str | None, drive: Driver
) -> None:
    ours = chat_graph(saver_for(table_name, dynamodb_endpoint))
    theirs = chat_graph(InMemorySaver())
    thread = f"t-{drive.mode}"
    cfg = config(thread)

    def script(graph: Any) -> None:
        for turn in range(4):
            drive(graph, "invoke", {"messages": [HumanMessage(f"hi {turn}", id=f"h{turn}")]}, cfg)
        history = drive(graph, "get_state_history", cfg)
        history = list(history)
        old = history[4].config["configurable"]["checkpoint_id"]  # time travel: a fork
        drive(graph, "invoke", {"messages": [HumanMessage("fork", id="hf")]}, config(thread, old))
        drive(graph, "update_state", cfg, {"messages": [RemoveMessage(id="h1")]})
        drive(graph, "update_state", cfg, {"messages": [AIMessage("edited", id="ai-1-4")]})
        drive(graph, "invoke", {"messages": [HumanMessage("after", id="ha")]}, cfg)
        drive(graph, "update_state", cfg, {"messages": [RemoveMessage(id=REMOVE_ALL_MESSAGES)]})
        drive(graph, "invoke", {"messages": [HumanMessage("anew", id="hn")]}, cfg)
        drive(graph, "invoke", None, config(thread, old))  # replay from the past

    same_calls([ours, theirs], drive, script)
    assert drive(ours, "get_state", cfg).values == drive(theirs, "get_state", cfg).values
    assert snapshot(ours, drive, cfg) == snapshot(theirs, drive, cfg)
    # A cold saver (nothing cached) reads the same history from the table alone.
    cold = chat_graph(saver_for(table_name, dynamodb_endpoint))
    assert snapshot(cold, drive, cfg) == snapshot(theirs, drive, cfg)
    # list(): filters, before and limit, in the right order.
    ours_saver, theirs_saver = ours.checkpointer, theirs.checkpointer
    for kwargs in ({"limit": 3}, {"filter": {"source": "update"}}, {"filter": {"step": 2}}):
        mine = [t.checkpoint["channel_values"] for t in ours_saver.list(cfg, **kwargs)]
        memo = [t.checkpoint["channel_values"] for t in theirs_saver.list(cfg, **kwargs)]
        assert mine == memo, kwargs
    middle = list(ours_saver.list(cfg))[5].config
    middle_memo = list(theirs_saver.list(cfg))[5].config
    assert [t.metadata for t in ours_saver.list(cfg, before=middle, limit=4)] == [
        t.metadata for t in theirs_saver.list(cfg, before=middle_memo, limit=4)
    ]


def test_thread_and_chat_session_share_a_table_without_colliding(
    table_name: str, dynamodb_endpoint: str | None
) -> None:
    saver = saver_for(table_name, dynamodb_endpoint)
    graph = chat_graph(saver)
    graph.invoke({"messages": [HumanMessage("to the graph", id="g1")]}, config("shared"))
    # The same partition key as the thread's: only the sort keys keep them apart.
    history = DynamoDBChatMessageHistory(table_name, "lg#shared", endpoint_url=dynamodb_endpoint)
    assert history.messages == []
    history.add_user_message("to the history")
    history.clear()
    history.add_user_message("again")
    assert [m.content for m in history.messages] == ["again"]
    plain = DynamoDBChatMessageHistory(table_name, "shared", endpoint_url=dynamodb_endpoint)
    plain.add_user_message("a session named like the thread")
    state = chat_graph(saver_for(table_name, dynamodb_endpoint)).get_state(config("shared"))
    assert state.values["messages"][0].content == "to the graph"
    assert len(state.values["messages"]) == 2
    saver.delete_thread("shared")
    assert [m.content for m in history.messages] == ["again"]
    assert [m.content for m in plain.messages] == ["a session named like the thread"]


def test_a_ten_megabyte_tool_result(table_name: str, dynamodb_endpoint: str | None) -> None:
    big = "".join(f"{i:08x}" for i in range(10 * 1024 * 1024 // 8))  # 10 MiB of text

    def tool(state: MessagesState) -> dict[str, Any]:
        return {"messages": [ToolMessage(big, tool_call_id="call-1", id="tool-1")]}

    def build(saver: BaseCheckpointSaver[Any]) -> Any:
        builder = StateGraph(MessagesState)
        builder.add_node("tool", tool)
        builder.add_edge(START, "tool")
        builder.add_edge("tool", END)
        return builder.compile(checkpointer=saver)

    build(saver_for(table_name, dynamodb_endpoint)).invoke(
        {"messages": [HumanMessage("run it", id="h")]}, config("big")
    )
    cold = build(saver_for(table_name, dynamodb_endpoint))
    messages = cold.get_state(config("big")).values["messages"]
    assert [m.id for m in messages] == ["h", "tool-1"]
    assert messages[1].content == big
    cold.invoke({"messages": [HumanMessage("and after", id="h2")]}, config("big"))
    after = cold.get_state(config("big")).values["messages"]
    assert [m.id for m in after] == ["h", "tool-1", "h2"]  # the tool's reply replaced by id
    assert after[1].content == big


def test_a_put_cut_short_leaves_nothing_visible(
    table_name: str, dynamodb_endpoint: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    saver = saver_for(table_name, dynamodb_endpoint)
    graph = chat_graph(saver)
    cfg = config("crash")
    graph.invoke({"messages": [HumanMessage("one", id="h1")]}, cfg)
    before = [t.config for t in saver.list(cfg)]
    state_before = graph.get_state(cfg).values
    real_send = Sender.send

    def send(self: Sender, request: Any) -> Any:
        item = request.params.get("Item", {})
        if request.operation == "PutItem" and item.get("k", {}).get("S") == "cp":
            raise StorageError("the process died before the commit")
        return real_send(self, request)

    monkeypatch.setattr(Sender, "send", send)
    with pytest.raises(StorageError):
        graph.invoke({"messages": [HumanMessage("two", id="h2")]}, cfg)
    monkeypatch.setattr(Sender, "send", real_send)
    cold = saver_for(table_name, dynamodb_endpoint)
    assert [t.config for t in cold.list(cfg)] == before
    assert chat_graph(cold).get_state(cfg).values == state_before
    # Items of the put that died are there, but nothing points at them.
    kinds = [i["k"]["S"] for i in partition_items(saver._sender.client, table_name, "lg#crash")]
    assert kinds.count("cp") == len(before)
    chat_graph(cold).invoke({"messages": [HumanMessage("two", id="h2")]}, cfg)
    assert [m.id for m in chat_graph(cold).get_state(cfg).values["messages"]][-2] == "h2"


def test_cost_per_turn_is_flat(table_name: str, dynamodb_endpoint: str | None) -> None:
    saver = saver_for(table_name, dynamodb_endpoint)
    graph = chat_graph(saver)
    cfg = config("flat")
    costs = []
    for turn in range(40):
        saver.reset_consumed_capacity()
        graph.invoke({"messages": [HumanMessage(f"turn {turn:05d} " + "y" * 300)]}, cfg)
        costs.append(saver.reset_consumed_capacity())
    assert costs[39].write_units == costs[4].write_units <= 10
    assert costs[39].requests == costs[4].requests
    assert costs[39].read_units == costs[4].read_units
    cold = saver_for(table_name, dynamodb_endpoint)
    chat_graph(cold).get_state(cfg)
    assert cold.consumed_capacity.requests <= 3  # checkpoint, blobs, message operations
    # list() with a limit reads pages of the newest checkpoints only, not the whole thread.
    saver.reset_consumed_capacity()
    assert len(list(saver.list(cfg, limit=2))) == 2
    listed = saver.reset_consumed_capacity()
    assert listed.requests == 1 and listed.read_units <= 4


def test_returned_and_given_messages_never_alias_what_later_reads_return(
    table_name: str, dynamodb_endpoint: str | None, drive: Driver
) -> None:
    """A caller that changes a message it got from a read, or one it gave to a run, changes
    nothing a later read returns: as with InMemorySaver, which stores bytes."""
    ours = chat_graph(saver_for(table_name, dynamodb_endpoint))
    theirs = chat_graph(InMemorySaver())
    cfg = config(f"alias-{drive.mode}")
    for graph in (ours, theirs):
        given = HumanMessage("as given", id="g", additional_kwargs={"tags": ["a"]})
        drive(graph, "invoke", {"messages": [given]}, cfg)
        given.content = "changed after the run"
        given.additional_kwargs["tags"].append("b")
        state = drive(graph, "get_state", cfg)
        got = state.values["messages"]
        got[0].content = "changed after a read"
        got[0].additional_kwargs["tags"].append("c")
        got[1].response_metadata["x"] = 1
        got.append(HumanMessage("appended to a read", id="x"))
        history = drive(graph, "get_state_history", cfg)
        for snap in history:
            for message in snap.values.get("messages", []):
                message.content = "changed in the history"
        drive(graph, "invoke", {"messages": [HumanMessage("next", id="n")]}, cfg)
    mine = drive(ours, "get_state", cfg).values["messages"]
    assert mine == drive(theirs, "get_state", cfg).values["messages"]
    assert [m.content for m in mine[:1]] == ["as given"]
    assert mine[0].additional_kwargs == {"tags": ["a"]}
    assert mine[1].response_metadata == {}
    assert snapshot(ours, drive, cfg) == snapshot(theirs, drive, cfg)


def test_a_read_of_the_latest_state_costs_as_many_requests_at_turn_1000_as_at_turn_10(
    table_name: str, dynamodb_endpoint: str | None
) -> None:
    """Warm (the saver that wrote the thread) and cold (a new saver: a new process), the
    latest state costs the same requests at turn 1,000 as at turn 10: 1 warm; 3 cold (the
    checkpoint, its blobs, the message operations) while the operations fit one 1 MB page of
    a Query, as they do here. The turns are written with ``durability="exit"`` (one checkpoint
    and one operation item a turn, a third of the requests); with LangGraph's default (two
    operation items a turn), scenario 12's turn 1,000 passes 1 MB and a cold read takes 4
    (docs/langgraph.md, Limits)."""
    saver = saver_for(table_name, dynamodb_endpoint)
    graph = chat_graph(saver)
    reads: dict[int, tuple[int, int]] = {}
    for thread, turns in (("ten", 10), ("thousand", 1000)):
        cfg = config(thread)
        for turn in range(1, turns + 1):
            message = {"messages": [HumanMessage(f"turn {turn:05d} " + "q" * 40, id=f"h{turn}")]}
            graph.invoke(message, cfg, durability="exit")
        saver.reset_consumed_capacity()
        warm = graph.get_state(cfg)
        warm_requests = saver.reset_consumed_capacity().requests
        cold_saver = saver_for(table_name, dynamodb_endpoint)
        cold = chat_graph(cold_saver).get_state(cfg)
        assert cold.values == warm.values and len(cold.values["messages"]) == 2 * turns
        reads[turns] = (warm_requests, cold_saver.consumed_capacity.requests)
    assert reads[1000] == reads[10] == (1, 3), reads
    operations = [
        item_size(i)
        for i in partition_items(saver._sender.client, table_name, "lg#thousand")
        if i["k"]["S"] == "d"
    ]
    assert len(operations) == 1000 and 800 * 1024 < sum(operations) < 1024 * 1024


class KeepObjects:
    """A serializer that keeps copies of the objects: InMemorySaver's reference run of the
    long thread. With its own serializer, InMemorySaver re-encodes the whole message list at
    every put and decodes it at every read, so its 5,000 turns alone would take most of an
    hour; what it stores and returns (versions, writes, history) is its own all the same.
    Lists are copied shallowly (LangGraph never changes a message, but extends lists), all
    else deeply (LangGraph updates a checkpoint's version maps in place)."""

    @staticmethod
    def _copy(obj: Any) -> Any:
        return copy.copy(obj) if isinstance(obj, list) else copy.deepcopy(obj)

    def dumps_typed(self, obj: Any) -> tuple[str, Any]:
        return "object", self._copy(obj)

    def loads_typed(self, data: tuple[str, Any]) -> Any:
        return self._copy(data[1])


def long_signature(graph: Any, cfg: dict[str, Any]) -> list[Any]:
    """Each state of a thread's whole history, newest first, by what must match: next nodes,
    source, step, number of messages and the last message's id."""
    return [
        (
            s.next,
            s.metadata.get("source"),
            s.metadata.get("step"),
            len(s.values.get("messages", [])),
            s.values["messages"][-1].id if s.values.get("messages") else None,
        )
        for s in graph.get_state_history(cfg)
    ]


@pytest.mark.parametrize("long_turns", [500, pytest.param(5000, marks=pytest.mark.soak)])
def test_five_thousand_turns(
    table_name: str, dynamodb_endpoint: str | None, long_turns: int
) -> None:
    """A thread of 5,000 turns (10,000 messages; 500 in the normal suite): its state equals
    InMemorySaver's every 250 turns, at the end warm and cold, and so does its whole history;
    a turn costs the same requests and write units at the last turn as at turn 10. Nine turns
    in ten run with ``durability="exit"`` (one checkpoint a turn) to keep the run short;
    every tenth with LangGraph's default (three checkpoints)."""
    saver = saver_for(table_name, dynamodb_endpoint)
    graph = chat_graph(saver)
    memory = chat_graph(InMemorySaver(serde=KeepObjects()))
    cfg = config("long")
    costs = {}
    for turn in range(1, long_turns + 1):
        message = {"messages": [HumanMessage(f"turn {turn:05d}", id=f"h{turn}")]}
        durability = "async" if turn % 10 == 0 else "exit"
        saver.reset_consumed_capacity()
        graph.invoke(message, cfg, durability=durability)
        costs[turn] = saver.reset_consumed_capacity()
        memory.invoke(message, cfg, durability=durability)
        if turn % 250 == 0:
            assert graph.get_state(cfg).values == memory.get_state(cfg).values, turn
    for early, late in ((10, long_turns), (11, long_turns - 1)):
        assert costs[late].requests == costs[early].requests, (early, costs)
        assert costs[late].write_units == costs[early].write_units <= 10
    assert graph.get_state(cfg).values["messages"][-1].id == f"ai-{2 * long_turns - 1}-10"
    cold = chat_graph(saver_for(table_name, dynamodb_endpoint))
    assert cold.get_state(cfg).values == memory.get_state(cfg).values
    expected = long_signature(memory, cfg)
    assert len(expected) == long_turns // 10 * 3 + long_turns - long_turns // 10
    assert long_signature(cold, cfg) == expected


class DeltaChat(TypedDict):
    messages: Annotated[
        list[AnyMessage], DeltaChannel(_messages_delta_reducer, snapshot_frequency=5)
    ]


def delta_graph(saver: BaseCheckpointSaver[Any]) -> Any:
    def answer(state: DeltaChat) -> dict[str, Any]:
        n = len(state["messages"])
        return {"messages": [AIMessage(f"answer {n}", id=f"a{n}")]}

    builder = StateGraph(DeltaChat)
    builder.add_node("answer", answer)
    builder.add_edge(START, "answer")
    builder.add_edge("answer", END)
    return builder.compile(checkpointer=saver)


def test_delta_channel_history_in_a_bounded_number_of_requests(
    table_name: str, dynamodb_endpoint: str | None
) -> None:
    saver = saver_for(table_name, dynamodb_endpoint)
    ours, theirs = delta_graph(saver), delta_graph(InMemorySaver())
    cfg = config("delta")
    requests = []
    for turn in range(23):
        for graph in (ours, theirs):
            graph.invoke({"messages": [HumanMessage(f"q{turn}", id=f"q{turn}")]}, cfg)
        target = ours.get_state(cfg).config
        saver.reset_consumed_capacity()
        mine = saver.get_delta_channel_history(config=target, channels=["messages"])
        requests.append(saver.reset_consumed_capacity().requests)
        default = BaseCheckpointSaver.get_delta_channel_history(
            saver, config=target, channels=["messages"]
        )
        assert mine == default
    assert ours.get_state(cfg).values == theirs.get_state(cfg).values
    assert max(requests) <= 4  # blob keys, one page of checkpoints, the seed: never per ancestor
    # Its snapshots (every 5 updates) are stored as operations on the previous snapshot, not
    # as a blob of the whole list.
    items = partition_items(saver._sender.client, table_name, "lg#delta")
    snapshots = [i for i in items if "sn" in i]
    assert len(snapshots) >= 4
    assert not [i for i in items if i["SK"]["S"].startswith("b##messages#")]
    assert max(len(i["x"]["B"]) for i in snapshots[1:]) < 2 * min(
        len(i["x"]["B"]) for i in snapshots[1:]
    )
    cold = delta_graph(saver_for(table_name, dynamodb_endpoint))
    assert cold.get_state(cfg).values == theirs.get_state(cfg).values


def test_a_thread_expires_whole(
    table_name: str, dynamodb_endpoint: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    saver = saver_for(table_name, dynamodb_endpoint, ttl=3600)
    graph = chat_graph(saver)
    for turn in range(3):
        graph.invoke({"messages": [HumanMessage(f"t{turn}", id=f"t{turn}")]}, config("ttl"))
    items = partition_items(saver._sender.client, table_name, "lg#ttl")
    first = min(int(i["expireAt"]["N"]) for i in items)
    # Checkpoints and values expire together, with the first checkpoint; writes not before.
    assert {int(i["expireAt"]["N"]) for i in items if i["k"]["S"] != "w"} == {first}
    assert all(int(i["expireAt"]["N"]) >= first for i in items)
    import time as time_module

    later = time_module.time() + 3601
    monkeypatch.setattr(time_module, "time", lambda: later)
    assert saver_for(table_name, dynamodb_endpoint).get_tuple(config("ttl")) is None
    assert list(saver_for(table_name, dynamodb_endpoint).list(config("ttl"))) == []


def test_errors_are_typed(table_name: str, dynamodb_endpoint: str | None) -> None:
    saver = saver_for(table_name, dynamodb_endpoint)
    with pytest.raises(ConfigurationError):
        saver.get_tuple({"configurable": {}})
    with pytest.raises(ConfigurationError):
        DynamoDBSaver(table_name, endpoint_url=dynamodb_endpoint, ttl=-1)
    with pytest.raises(ConfigurationError):
        DynamoDBSaver(table_name, endpoint_url=dynamodb_endpoint, primary_key_name="k")
    graph = chat_graph(saver)
    for turn in range(3):
        graph.invoke({"messages": [HumanMessage(f"t{turn}", id=f"t{turn}")]}, config("bad"))
    client = saver._sender.client
    delta = sorted(
        i["SK"]["S"] for i in partition_items(client, table_name, "lg#bad") if i["k"]["S"] == "d"
    )[0]
    client.delete_item(TableName=table_name, Key={"SessionId": {"S": "lg#bad"}, "SK": {"S": delta}})
    with pytest.raises(CorruptHistoryError):
        saver_for(table_name, dynamodb_endpoint).get_tuple(config("bad"))


class Xor:
    """A toy cipher: enough to show every payload goes through the saver's serde."""

    def encrypt(self, plaintext: bytes) -> tuple[str, bytes]:
        return "xor", bytes(b ^ 0x5A for b in plaintext)

    def decrypt(self, ciphername: str, ciphertext: bytes) -> bytes:
        assert ciphername == "xor"
        return bytes(b ^ 0x5A for b in ciphertext)


def test_payloads_go_through_the_serializer(table_name: str, dynamodb_endpoint: str | None) -> None:
    serde = EncryptedSerializer(Xor())
    saver = saver_for(table_name, dynamodb_endpoint, serde=serde)
    graph = chat_graph(saver)
    graph.invoke({"messages": [HumanMessage("secret words", id="s")]}, config("enc"))
    raw = repr(partition_items(saver._sender.client, table_name, "lg#enc"))
    assert "secret words" not in raw
    cold = chat_graph(saver_for(table_name, dynamodb_endpoint, serde=serde))
    assert cold.get_state(config("enc")).values["messages"][0].content == "secret words"


def test_copy_and_prune_keep_the_state(table_name: str, dynamodb_endpoint: str | None) -> None:
    saver = saver_for(table_name, dynamodb_endpoint)
    graph = chat_graph(saver)
    for turn in range(5):
        graph.invoke({"messages": [HumanMessage(f"t{turn}", id=f"t{turn}")]}, config("src"))
    graph.update_state(config("src"), {"messages": [RemoveMessage(id="t2")]})
    expected = graph.get_state(config("src")).values
    saver.copy_thread("src", "dst")
    fresh = chat_graph(saver_for(table_name, dynamodb_endpoint))
    assert fresh.get_state(config("dst")).values == expected
    client = saver._sender.client
    before = len(partition_items(client, table_name, "lg#src"))
    saver.prune(["src"])
    assert len(partition_items(client, table_name, "lg#src")) < before
    fresh = chat_graph(saver_for(table_name, dynamodb_endpoint))
    assert fresh.get_state(config("src")).values == expected
    assert len(list(fresh.checkpointer.list(config("src")))) == 1
    fresh.invoke({"messages": [HumanMessage("more", id="more")]}, config("src"))
    assert fresh.get_state(config("src")).values["messages"][-2].id == "more"


def test_concurrent_runs_and_two_savers_on_one_thread(
    table_name: str, dynamodb_endpoint: str | None
) -> None:
    import threading

    saver = saver_for(table_name, dynamodb_endpoint)
    graph, memory = chat_graph(saver), chat_graph(InMemorySaver())
    errors: list[BaseException] = []

    def run(thread: str) -> None:
        try:
            for turn in range(8):
                graph.invoke(
                    {"messages": [HumanMessage(f"{thread} {turn}", id=f"h{turn}")]}, config(thread)
                )
        except BaseException as exc:  # reported below
            errors.append(exc)

    workers = [threading.Thread(target=run, args=(f"par-{n}",)) for n in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    for n in range(4):
        for turn in range(8):
            memory.invoke(
                {"messages": [HumanMessage(f"par-{n} {turn}", id=f"h{turn}")]}, config(f"par-{n}")
            )
        assert (
            graph.get_state(config(f"par-{n}")).values
            == memory.get_state(config(f"par-{n}")).values
        )
    # Two processes taking turns on one thread: each continues from what the other wrote.
    other = chat_graph(saver_for(table_name, dynamodb_endpoint))
    for turn in range(6):
        (graph if turn % 2 else other).invoke(
            {"messages": [HumanMessage(f"alt {turn}", id=f"a{turn}")]}, config("alt")
        )
        memory.invoke({"messages": [HumanMessage(f"alt {turn}", id=f"a{turn}")]}, config("alt"))
    for g in (graph, other):
        assert snapshot(g, Driver("sync"), config("alt")) == snapshot(
            memory, Driver("sync"), config("alt")
        )
