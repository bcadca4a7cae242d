"""Small helpers shared by the tests: reading what is really stored, straight from DynamoDB."""

from __future__ import annotations

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
