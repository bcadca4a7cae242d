"""The asyncio API beyond the behavioural tests (which run against both APIs, see `api` in
conftest.py): client lifecycle across loops, mixing sync and async, the executor fallback,
`acreate_table` and an async LangChain chain."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
import uuid
import warnings
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage

import chathist
from chathist import DynamoDBChatMessageHistory, aclose_clients, acreate_table
from chathist.dynamo import aio
from chathist.dynamo.binding import Binding

pytestmark = pytest.mark.skipif(not aio.AVAILABLE, reason="needs the async extra (aiobotocore)")


def test_loops_one_after_another_leave_no_unclosed_client(
    dynamodb_endpoint: str | None, table_name: str
) -> None:
    """Two ``asyncio.run`` in a row, a history made in one and used in the next, then the
    process ends: no "Unclosed client session" and no ResourceWarning."""
    if dynamodb_endpoint is None:
        pytest.skip("needs an endpoint URL (DynamoDB Local)")
    script = textwrap.dedent(
        f"""
        import asyncio, gc, warnings
        warnings.simplefilter("always")
        from langchain_core.messages import HumanMessage
        from chathist import DynamoDBChatMessageHistory

        history = DynamoDBChatMessageHistory({table_name!r}, "s", {dynamodb_endpoint!r})

        async def turn(text):
            await history.aadd_messages([HumanMessage(text)])
            return [m.content for m in await history.aget_messages()]

        print(asyncio.run(turn("one")))
        print(asyncio.run(turn("two")))
        gc.collect()
        """
    )
    done = subprocess.run(
        [sys.executable, "-X", "dev", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONWARNINGS": "always"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["['one']", "['one', 'two']"]
    assert "Unclosed" not in done.stderr and "ResourceWarning" not in done.stderr, done.stderr


def test_one_client_per_binding_and_loop_reused_by_every_history(
    dynamodb_endpoint: str | None, table_name: str
) -> None:
    async def clients() -> tuple[Any, Any, Any]:
        first = DynamoDBChatMessageHistory(table_name, "a", dynamodb_endpoint)
        second = DynamoDBChatMessageHistory(table_name, "b", dynamodb_endpoint)
        await first.aadd_messages([HumanMessage("x")])
        await second.aadd_messages([HumanMessage("y")])
        found = aio._loops[asyncio.get_running_loop()].clients
        assert len(found) == 1  # both histories, one binding: one client
        (client,) = found.values()
        await aclose_clients()
        assert not aio._loops[asyncio.get_running_loop()].clients
        assert [m.content for m in await second.aget_messages()] == ["y"]  # reopened
        (reopened,) = aio._loops[asyncio.get_running_loop()].clients.values()
        return client, reopened, asyncio.get_running_loop()

    client, reopened, loop = asyncio.run(clients())
    assert client is not reopened
    assert loop not in aio._loops or not aio._loops[loop].clients  # closed at loop shutdown


def test_requests_beyond_the_limit_in_flight_wait_their_turn_first_come_first_served(
    dynamodb_endpoint: str | None, table_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With room for one request in flight, ten sessions appending at once are served in turn
    (s0, s1, ..., s9, s0, ...): a session that gets its answer queues behind the others instead
    of taking the connection again, as aiohttp's pool alone would let it."""
    monkeypatch.setattr(aio, "MAX_IN_FLIGHT", 1)
    sent: list[str] = []
    in_flight = peak = 0

    def before_send(request: Any, **_: Any) -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        body = request.body.decode() if isinstance(request.body, bytes) else str(request.body)
        sent.extend(f"s{i}" for i in range(10) if f'"turn-s{i}"' in body)  # not DescribeTable

    def after_call(**_: Any) -> None:
        nonlocal in_flight
        in_flight -= 1

    async def appends() -> list[list[str]]:
        histories = [
            DynamoDBChatMessageHistory(table_name, f"turn-s{i}", dynamodb_endpoint)
            for i in range(10)
        ]
        client = await aio.async_client_for(histories[0]._options.binding)
        assert client.meta.config.max_pool_connections == 1
        client.meta.events.register("before-send.dynamodb", before_send)
        client.meta.events.register("after-call.dynamodb", after_call)

        async def session(history: DynamoDBChatMessageHistory) -> None:
            for n in range(3):
                await history.aadd_messages([HumanMessage(f"{n}")])

        await asyncio.gather(*(session(h) for h in histories))
        return [[str(m.content) for m in await h.aget_messages()] for h in histories]

    assert asyncio.run(appends()) == [["0", "1", "2"]] * 10
    assert peak == 1
    rounds = len(sent) // 10
    assert len(sent) == 10 * rounds and rounds >= 3
    assert sent == [f"s{i}" for _ in range(rounds) for i in range(10)]


def test_sync_and_async_calls_mix_on_one_history(
    dynamodb_endpoint: str | None, table_name: str
) -> None:
    history = DynamoDBChatMessageHistory(table_name, "s", dynamodb_endpoint, history_size=3)
    history.add_messages([HumanMessage("sync 1")])

    async def mixed() -> list[str]:
        await history.aadd_messages([AIMessage("async 2")])
        history.add_messages([HumanMessage("sync 3")])
        await history.aadd_messages([AIMessage("async 4")])
        return [str(m.content) for m in await history.aget_messages()]

    assert asyncio.run(mixed()) == ["async 2", "sync 3", "async 4"]
    assert [m.content for m in history.messages] == ["async 2", "sync 3", "async 4"]
    asyncio.run(history.aclear())
    assert history.messages == []


def test_without_aiobotocore_the_async_methods_run_in_an_executor(
    dynamodb_endpoint: str | None, table_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(aio, "AVAILABLE", False)
    threads: list[str] = []
    history = DynamoDBChatMessageHistory(table_name, "s", dynamodb_endpoint)
    original = DynamoDBChatMessageHistory.add_messages

    def recorded(self: DynamoDBChatMessageHistory, messages: Any) -> None:
        threads.append(threading.current_thread().name)
        original(self, messages)

    monkeypatch.setattr(DynamoDBChatMessageHistory, "add_messages", recorded)

    async def use() -> list[Any]:
        await history.aadd_messages([HumanMessage("via a thread")])
        return await history.aget_messages()

    assert [m.content for m in asyncio.run(use())] == ["via a thread"]
    assert threads and threads[0] != threading.main_thread().name
    with pytest.raises(chathist.ConfigurationError, match="chathist\\[async\\]"):
        asyncio.run(aio.async_client_for(Binding.resolve(table_name, dynamodb_endpoint)))


def test_acreate_table_creates_and_accepts_an_existing_table(
    dynamodb_endpoint: str | None, dynamodb_region: str | None, boto3_client: Any
) -> None:
    name = f"chathist-test-async-{uuid.uuid4().hex[:8]}"

    async def create() -> tuple[bool, bool]:
        first = await acreate_table(
            name, endpoint_url=dynamodb_endpoint, region_name=dynamodb_region
        )
        again = await acreate_table(
            name, endpoint_url=dynamodb_endpoint, region_name=dynamodb_region
        )
        history = DynamoDBChatMessageHistory(
            name, "s", dynamodb_endpoint, region_name=dynamodb_region
        )
        await history.aadd_messages([HumanMessage("in a new table")])
        return first, again

    try:
        assert asyncio.run(create()) == (True, False)
        keys = boto3_client.describe_table(TableName=name)["Table"]["KeySchema"]
        assert [k["KeyType"] for k in keys] == ["HASH", "RANGE"]
    finally:
        boto3_client.delete_table(TableName=name)


def test_an_async_chain_keeps_its_history(dynamodb_endpoint: str | None, table_name: str) -> None:
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
    from langchain_core.runnables.history import RunnableWithMessageHistory

    model = GenericFakeChatModel(messages=iter([AIMessage("Hello Ada."), AIMessage("Ada.")]))
    prompt = ChatPromptTemplate.from_messages(
        [MessagesPlaceholder("history"), ("human", "{question}")]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        chain = RunnableWithMessageHistory(
            prompt | model,
            lambda session_id: DynamoDBChatMessageHistory(
                table_name, session_id, dynamodb_endpoint, history_size=20
            ),
            input_messages_key="question",
            history_messages_key="history",
        )
    config: Any = {"configurable": {"session_id": "user-42"}}

    async def talk() -> None:
        await chain.ainvoke({"question": "I am Ada."}, config=config)
        await chain.ainvoke({"question": "Who am I?"}, config=config)

    asyncio.run(talk())
    stored = DynamoDBChatMessageHistory(table_name, "user-42", dynamodb_endpoint).messages
    assert [m.content for m in stored] == ["I am Ada.", "Hello Ada.", "Who am I?", "Ada."]
