"""From chat history to threads: start a LangGraph thread from an existing chat session.

`start_thread` reads a session (a `DynamoDBChatMessageHistory` in chathist's event layout or
LangChain's list layout, or any list of messages) and writes its messages as the first state of
a thread through LangGraph's own ``update_state``: the graph's reducer sees them as it would
see any update (``add_messages`` gives messages without an id one), and the checkpointer stores
them as it stores every state. A thread that already has a state is left alone, so a bulk run
(`chathist.bulk.to_threads`) can be resumed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.messages import BaseMessage
from langchain_core.runnables import RunnableConfig

from chathist.errors import ConfigurationError
from chathist.history import DynamoDBChatMessageHistory

__all__ = ["astart_thread", "start_thread"]


def _thread_config(thread_id: str) -> RunnableConfig:
    if not isinstance(thread_id, str) or not thread_id:
        raise ConfigurationError(f"thread_id must be a non-empty str, got {thread_id!r}")
    return {"configurable": {"thread_id": thread_id}}


def _checked(graph: Any, thread_id: str) -> RunnableConfig:
    """The thread's config, once the graph is known to have a checkpointer."""
    config = _thread_config(thread_id)
    if graph.checkpointer is None or graph.checkpointer is True:
        raise ConfigurationError("the graph has no checkpointer: compile it with checkpointer=")
    return config


def _messages(source: DynamoDBChatMessageHistory | Sequence[BaseMessage]) -> list[BaseMessage]:
    if isinstance(source, DynamoDBChatMessageHistory):
        return list(source.messages)
    if isinstance(source, Sequence) and all(isinstance(m, BaseMessage) for m in source):
        return list(source)
    raise ConfigurationError(
        "start_thread takes a DynamoDBChatMessageHistory or a sequence of messages,"
        f" got {type(source).__name__}"
    )


def start_thread(
    graph: Any,
    thread_id: str,
    source: DynamoDBChatMessageHistory | Sequence[BaseMessage],
    *,
    key: str = "messages",
    as_node: str | None = None,
) -> bool:
    """Make ``source``'s messages the state channel ``key`` of a new thread of ``graph`` (a
    compiled graph with a checkpointer). ``as_node``: the node the update counts as (pass the
    node that ends a turn, e.g. the model's, so the thread rests until the next input).
    Returns False, writing nothing, if the thread already has a state or the session is
    empty."""
    config = _checked(graph, thread_id)
    if graph.checkpointer.get_tuple(config) is not None:
        return False
    messages = _messages(source)
    if not messages:
        return False
    graph.update_state(config, {key: messages}, as_node=as_node)
    return True


async def astart_thread(
    graph: Any,
    thread_id: str,
    source: DynamoDBChatMessageHistory | Sequence[BaseMessage],
    *,
    key: str = "messages",
    as_node: str | None = None,
) -> bool:
    """`start_thread` with the async APIs (the history's and the graph's)."""
    config = _checked(graph, thread_id)
    if await graph.checkpointer.aget_tuple(config) is not None:
        return False
    if isinstance(source, DynamoDBChatMessageHistory):
        messages = await source.aget_messages()
    else:
        messages = _messages(source)
    if not messages:
        return False
    await graph.aupdate_state(config, {key: messages}, as_node=as_node)
    return True
