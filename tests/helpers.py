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
