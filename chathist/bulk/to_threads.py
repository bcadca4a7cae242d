"""Every chat session of a table to LangGraph threads, in bulk (`sessions_to_threads`).

The sessions are found by a keys-only Scan of the table (chathist's event layout or LangChain's
list layout; the items of LangGraph threads are skipped), each is read with
`chathist.DynamoDBChatMessageHistory` and started as a thread with
`chathist.langgraph.start_thread`. Threads that already have a state are skipped, so a run that
stopped can be run again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chathist.bulk.schemas import CHECK_SOURCE, key_schema
from chathist.core.thread_keys import is_thread_key
from chathist.dynamo.binding import Binding
from chathist.dynamo.capacity import CapacityMeter
from chathist.dynamo.client import Sender
from chathist.dynamo.paging import Cursor
from chathist.history import DynamoDBChatMessageHistory
from chathist.langgraph.sessions import start_thread

if TYPE_CHECKING:
    import boto3

__all__ = ["ThreadCounts", "sessions_to_threads"]


@dataclass
class ThreadCounts:
    """What a bulk run did."""

    started: int = 0
    skipped: int = 0
    """Sessions whose thread already had a state, or that hold no message."""


def session_ids(sender: Sender, hash_key: str, range_key: str | None) -> list[str]:
    """Every session id of the sender's table (a keys-only Scan); the items of LangGraph
    threads are left out by their sort keys (`is_thread_key`), so a session named like a
    thread's partition is still found."""
    names = {"#h": hash_key} if range_key is None else {"#h": hash_key, "#r": range_key}
    cursor = Cursor(
        "Scan",
        {
            "TableName": sender.binding.table_name,
            "ProjectionExpression": ", ".join(names),
            "ExpressionAttributeNames": names,
            "ConsistentRead": True,
        },
    )
    found = {
        item[hash_key]["S"]
        for item in sender.items(cursor)
        if "S" in item[hash_key]
        and (range_key is None or not is_thread_key(item[range_key].get("S", "")))
    }
    return sorted(found)


def sessions_to_threads(
    graph: Any,
    table_name: str,
    *,
    endpoint_url: str | None = None,
    region_name: str | None = None,
    boto3_session: boto3.Session | None = None,
    sessions: Iterable[str] | None = None,
    thread_id: Callable[[str], str] = lambda session_id: session_id,
    key: str = "messages",
    as_node: str | None = None,
    **history_options: Any,
) -> ThreadCounts:
    """Start a thread of ``graph`` from each session of ``table_name`` (or of ``sessions``);
    ``thread_id`` names each session's thread. ``history_options`` go to the history (e.g.
    ``history_messages_key``, ``primary_key_name``)."""
    binding = Binding.resolve(table_name, endpoint_url, region_name, boto3_session)
    sender = Sender(binding, CapacityMeter())
    schema = key_schema(binding, CHECK_SOURCE)
    history_options.setdefault("primary_key_name", schema.hash_key)
    if schema.range_key is not None:
        history_options.setdefault("sort_key_name", schema.range_key)
    counts = ThreadCounts()
    for session in (
        sessions if sessions is not None else session_ids(sender, schema.hash_key, schema.range_key)
    ):
        history = DynamoDBChatMessageHistory(
            table_name,
            session,
            endpoint_url=endpoint_url,
            region_name=region_name,
            boto3_session=boto3_session,
            **history_options,
        )
        if start_thread(graph, thread_id(session), history, key=key, as_node=as_node):
            counts.started += 1
        else:
            counts.skipped += 1
    return counts
