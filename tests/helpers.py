"""Small helpers shared by the tests: reading what is really stored, straight from DynamoDB."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any


def partition_items(
    client: Any, table: str, session: str, *, hash_key: str = "SessionId"
) -> list[dict[str, Any]]:
    """Every raw item stored under ``session`` (staged events first, then the sequence), read
    with strongly consistent queries across all pages."""
    items: list[dict[str, Any]] = []
    request: dict[str, Any] = {
        "TableName": table,
        "KeyConditionExpression": "#h = :s",
        "ExpressionAttributeNames": {"#h": hash_key},
        "ExpressionAttributeValues": {":s": {"S": session}},
        "ConsistentRead": True,
    }
    while True:
        page = client.query(**request)
        items += page["Items"]
        if "LastEvaluatedKey" not in page:
            return items
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def create_list_table(
    client: Any, name: str, hash_key: str = "SessionId", range_key: str | None = None
) -> None:
    """Create a LangChain-style table (a string hash key, optionally a string range key) and
    wait until it exists."""
    keys = [(hash_key, "HASH")] + ([(range_key, "RANGE")] if range_key else [])
    client.create_table(
        TableName=name,
        AttributeDefinitions=[{"AttributeName": k, "AttributeType": "S"} for k, _ in keys],
        KeySchema=[{"AttributeName": k, "KeyType": t} for k, t in keys],
        BillingMode="PAY_PER_REQUEST",
    )
    client.get_waiter("table_exists").wait(TableName=name)


@contextlib.contextmanager
def list_table_named(
    client: Any, hash_key: str = "SessionId", range_key: str | None = None, prefix: str = "list"
) -> Iterator[str]:
    """A fresh LangChain-style table, deleted afterwards."""
    name = f"chathist-test-{prefix}-{uuid.uuid4().hex[:10]}"
    create_list_table(client, name, hash_key, range_key)
    try:
        yield name
    finally:
        with contextlib.suppress(Exception):
            client.delete_table(TableName=name)


@contextlib.contextmanager
def hooked(client: Any, event: str, handler: Any) -> Iterator[None]:
    """Register a botocore event ``handler`` (e.g. on ``after-call.dynamodb.PutItem``) on
    ``client`` (a history's ``client``) for the duration of the block."""
    unique = f"test-{uuid.uuid4().hex}"
    client.meta.events.register(event, handler, unique_id=unique)
    try:
        yield
    finally:
        client.meta.events.unregister(event, unique_id=unique)


@contextlib.contextmanager
def botocore_made(monkeypatch: Any) -> Iterator[dict[str, int]]:
    """Count the botocore sessions (aiobotocore's too: they are botocore sessions) and the
    clients (sync and async) made inside the block."""
    import botocore.session

    made = {"sessions": 0, "clients": 0}
    classes: list[Any] = [botocore.session.Session]
    with contextlib.suppress(ImportError):
        from aiobotocore.session import AioSession

        classes.append(AioSession)
    init = botocore.session.Session.__init__

    def counted_init(self: Any, *args: Any, **kwargs: Any) -> None:
        made["sessions"] += 1
        init(self, *args, **kwargs)

    def counting(original: Any) -> Any:
        def create_client(self: Any, *args: Any, **kwargs: Any) -> Any:
            made["clients"] += 1
            return original(self, *args, **kwargs)

        return create_client

    with monkeypatch.context() as patch:
        patch.setattr(botocore.session.Session, "__init__", counted_init)
        for cls in classes:
            patch.setattr(cls, "create_client", counting(cls.__dict__["create_client"]))
        yield made


def transaction_outcome(parsed: dict[str, Any]) -> str:
    """``done``, ``legacy-changed`` (the last action's condition failed: a lazy migration's
    retirement of the legacy item) or ``taken`` (a sequence number was taken) of a parsed
    TransactWriteItems answer."""
    if "Error" not in parsed:
        return "done"
    codes = [reason.get("Code") for reason in parsed.get("CancellationReasons") or []]
    return "legacy-changed" if codes and codes[-1] == "ConditionalCheckFailed" else "taken"


def without_aws_credentials(monkeypatch: Any, folder: Any) -> None:
    """Leave botocore no credentials to find (``monkeypatch``: pytest's; ``folder``: an empty
    directory for the config files that do not exist): no keys, no profile, no metadata."""
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(folder / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(folder / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    # chathist keeps one botocore session per process, which caches what it found: give this
    # test a fresh one, and the next test the one it had.
    from chathist.dynamo import client

    monkeypatch.setattr(client, "_sessions", {})
    monkeypatch.setattr(client, "_clients", {})


class AsyncPortal:
    """An event loop on a thread of its own, so that sync test code can drive the async API:
    ``portal.run(coroutine)`` waits for its result."""

    def __init__(self) -> None:
        import asyncio
        import threading

        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coroutine: Any) -> Any:
        import asyncio

        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def close(self) -> None:
        from chathist.dynamo.aio import aclose_clients

        self.run(aclose_clients())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


def async_driven(portal: AsyncPortal) -> type[Any]:
    """A `DynamoDBChatMessageHistory` whose sync API runs its async twin in ``portal``'s loop:
    every behavioural test written against the sync API then checks the async API too."""
    from chathist import DynamoDBChatMessageHistory

    class AsyncDriven(DynamoDBChatMessageHistory):
        @property
        def messages(self) -> Any:
            return portal.run(self.aget_messages())

        @messages.setter
        def messages(self, value: Any) -> None:
            raise NotImplementedError

        def add_messages(self, messages: Any) -> None:
            portal.run(self.aadd_messages(messages))

        def clear(self) -> None:
            portal.run(self.aclear())

        def repair(self, older_than: float | None = None) -> int:
            result: int = portal.run(self.arepair(older_than))
            return result

        @property
        def client(self) -> Any:
            raise AssertionError("a test hooking the sync client is marked sync_only")

    return AsyncDriven


def _planning_with(monkeypatch: Any, **limits: Any) -> None:
    """Make writes planned from now on (event logs' and the bulk migration's) use `Limits` with
    these fields changed."""
    import functools

    import chathist.bulk.to_events
    import chathist.event_log
    from chathist.core.plan import Limits

    for module in (chathist.event_log, chathist.bulk.to_events):
        monkeypatch.setattr(module, "Limits", functools.partial(Limits, **limits))


def staged_over_256_kb(monkeypatch: Any) -> None:
    """Stage anything of several items over 256 KB, as a write that lost two races does
    (`Limits.contended`): tests of a migration killed between a stage and its commit get a
    staged write out of a session small enough for a legacy item."""
    _planning_with(monkeypatch, direct_bytes=256 * 1024)


def one_item_per_message(monkeypatch: Any) -> None:
    """Plan as chathist did before items carried several messages: one item per message, and
    writes of more than 25 events staged. Tests of staging, clearing and repair use it to get
    many items and staged writes out of a few short messages; everything else about the write
    is unchanged."""
    _planning_with(monkeypatch, pack=False, direct_items=25)
