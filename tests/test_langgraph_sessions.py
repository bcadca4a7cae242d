"""From chat history to threads: a session in chathist's event layout or in LangChain's list
layout (written by langchain_community itself) becomes the first state of a LangGraph thread on
DynamoDBSaver, one at a time or a whole table in bulk; the next turn continues it."""

from __future__ import annotations

import asyncio
import warnings
from typing import Any

import pytest

pytest.importorskip("langgraph")

from langchain_core.messages import AIMessage, HumanMessage

from chathist import ConfigurationError, DynamoDBChatMessageHistory
from chathist.bulk.to_threads import sessions_to_threads
from chathist.langgraph import DynamoDBSaver, astart_thread, start_thread
from tests.test_langgraph import chat_graph, config

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from langchain_community.chat_message_histories import (
        DynamoDBChatMessageHistory as LangChainHistory,
    )

TURN = [HumanMessage("what is 2+2?"), AIMessage("4")]


def contents(graph: Any, thread: str) -> list[str]:
    return [m.content for m in graph.get_state(config(thread)).values["messages"]]


def test_a_thread_from_an_event_layout_session(
    table_name: str, dynamodb_endpoint: str | None
) -> None:
    history = DynamoDBChatMessageHistory(table_name, "s1", endpoint_url=dynamodb_endpoint)
    history.add_messages(TURN)
    graph = chat_graph(DynamoDBSaver(table_name, endpoint_url=dynamodb_endpoint))
    assert start_thread(graph, "s1", history, as_node="chat")
    assert graph.get_state(config("s1")).next == ()
    assert contents(graph, "s1") == ["what is 2+2?", "4"]
    assert not start_thread(graph, "s1", history, as_node="chat")  # already started: left alone
    graph.invoke({"messages": [HumanMessage("and 3+3?")]}, config("s1"))
    assert contents(graph, "s1")[:3] == ["what is 2+2?", "4", "and 3+3?"]
    assert len(contents(graph, "s1")) == 4
    assert [m.content for m in history.messages] == ["what is 2+2?", "4"]  # the session stays
    with pytest.raises(ConfigurationError):
        start_thread(graph, "s2", "not messages")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):  # a graph without a checkpointer
        start_thread(chat_graph(None), "s3", history)  # type: ignore[arg-type]


def test_a_thread_from_a_langchain_list_session_async(
    list_table: str, table_name: str, dynamodb_endpoint: str | None
) -> None:
    theirs = LangChainHistory(list_table, "lc-1", endpoint_url=dynamodb_endpoint)
    theirs.add_messages(TURN)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the list layout's migration hint
        history = DynamoDBChatMessageHistory(list_table, "lc-1", endpoint_url=dynamodb_endpoint)
        graph = chat_graph(DynamoDBSaver(table_name, endpoint_url=dynamodb_endpoint))
        assert asyncio.run(astart_thread(graph, "lc-1", history, as_node="chat"))
    assert contents(graph, "lc-1") == ["what is 2+2?", "4"]


def test_every_session_of_a_table_in_bulk(
    list_table: str, table_name: str, dynamodb_endpoint: str | None
) -> None:
    for n in range(3):
        LangChainHistory(list_table, f"user-{n}", endpoint_url=dynamodb_endpoint).add_messages(
            [HumanMessage(f"question {n}"), AIMessage(f"answer {n}")]
        )
    graph = chat_graph(DynamoDBSaver(table_name, endpoint_url=dynamodb_endpoint))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        counts = sessions_to_threads(
            graph, list_table, endpoint_url=dynamodb_endpoint, as_node="chat"
        )
        assert (counts.started, counts.skipped) == (3, 0)
        again = sessions_to_threads(
            graph, list_table, endpoint_url=dynamodb_endpoint, as_node="chat"
        )
    assert (again.started, again.skipped) == (0, 3)  # a second run resumes: nothing twice
    for n in range(3):
        assert contents(graph, f"user-{n}") == [f"question {n}", f"answer {n}"]
    # An event-layout table holding threads too: the threads' partitions are no sessions.
    DynamoDBChatMessageHistory(table_name, "ev", endpoint_url=dynamodb_endpoint).add_messages(TURN)
    counts = sessions_to_threads(
        graph, table_name, endpoint_url=dynamodb_endpoint, thread_id=lambda s: f"from-{s}"
    )
    assert (counts.started, counts.skipped) == (1, 0)
    assert contents(graph, "from-ev") == ["what is 2+2?", "4"]


def test_session_and_thread_operations_of_a_shared_table_see_only_their_own(
    table_name: str, dynamodb_endpoint: str | None, tmp_path: Any
) -> None:
    """One table holding threads and sessions, one session named like a thread's partition:
    the session commands (stats, export, the bulk rollback and the move to threads) see the
    sessions only, the thread operations that scan (list of every thread, delete_for_runs) the
    threads only."""
    import json

    from chathist.bulk import MigrationConfig, rollback_events_to_list
    from tests.helpers import list_table_named
    from tests.test_cli import run_cli

    saver = DynamoDBSaver(table_name, endpoint_url=dynamodb_endpoint)
    graph = chat_graph(saver)
    graph.invoke({"messages": [HumanMessage("to the thread", id="t")]}, config("a"))
    run = "run-of-b"
    graph.invoke(
        {"messages": [HumanMessage("to thread b", id="t")]},
        {**config("b"), "metadata": {"run_id": run}},
    )
    for session in ("plain", "lg#a"):  # "lg#a" shares thread "a"'s partition
        DynamoDBChatMessageHistory(
            table_name, session, endpoint_url=dynamodb_endpoint
        ).add_messages(TURN)

    stats = run_cli(dynamodb_endpoint, "stats", table_name, "--json")
    assert stats.returncode == 0, stats.stderr
    report = json.loads(stats.stdout)
    assert (report["sessions"], report["empty_sessions"], report["messages"]) == (2, 0, 4)
    assert report["items"] == 2  # one item per call of two messages: no thread item counted
    one = json.loads(run_cli(dynamodb_endpoint, "stats", table_name, "lg#a", "--json").stdout)
    assert (one["items"], one["messages"]) == (1, 2)
    dump = tmp_path / "all.jsonl"
    exported = run_cli(dynamodb_endpoint, "export", table_name, "--output", str(dump))
    assert exported.returncode == 0, exported.stderr
    lines = [json.loads(line) for line in dump.read_text(encoding="utf-8").splitlines()]
    assert [line["session_id"] for line in lines] == ["lg#a", "plain"]
    assert "exported 2 sessions, 4 messages" in exported.stderr

    with list_table_named(saver._sender.client) as target:
        back = rollback_events_to_list(
            MigrationConfig(source=table_name, target=target, endpoint_url=dynamodb_endpoint)
        )
        assert (back.migrated, back.sessions, back.ok) == (2, 2, True), back
    counts = sessions_to_threads(
        graph, table_name, endpoint_url=dynamodb_endpoint, thread_id=lambda s: f"from-{s}"
    )
    assert (counts.started, counts.skipped) == (2, 0)
    assert contents(graph, "from-lg#a") == ["what is 2+2?", "4"]

    every = list(saver.list(None))
    assert {t.config["configurable"]["thread_id"] for t in every} == {
        "a",
        "b",
        "from-plain",
        "from-lg#a",
    }
    saver.delete_for_runs([run])
    assert saver.get_tuple(config("b")) is None
    assert saver.get_tuple(config("a")) is not None
    for session in ("plain", "lg#a"):
        history = DynamoDBChatMessageHistory(table_name, session, endpoint_url=dynamodb_endpoint)
        assert [m.content for m in history.messages] == ["what is 2+2?", "4"]
