"""The tables of a bulk run: their key schemas, checked before anything is read, with hints
that say what to do when a table is missing or of the wrong kind."""

from __future__ import annotations

from typing import Final

from chathist.dynamo.binding import Binding
from chathist.dynamo.client import Sender
from chathist.dynamo.tables import KeySchema, check_event_schema, describe_key_schema
from chathist.errors import StorageError, TableNotFoundError, TableSchemaError

__all__ = ["CHECK_SOURCE", "estimated_items", "event_key_names", "key_schema"]

CHECK_SOURCE: Final = "check --source, --endpoint-url and --region"
"""The hint for a source table that does not exist."""


def key_schema(binding: Binding, missing: str) -> KeySchema:
    """The key schema of ``binding``'s table; if there is no such table, `TableNotFoundError`
    ending in ``missing``: what to do about it in this direction of the migration."""
    try:
        return describe_key_schema(binding)
    except TableNotFoundError as exc:
        raise TableNotFoundError(
            f"table {binding.table_name!r} does not exist on {binding.where}; {missing}"
        ) from exc


def event_key_names(
    binding: Binding, missing: str, sort_key_name: str | None = None
) -> tuple[str, str]:
    """Hash and range key names of the event-layout table of ``binding`` (range key:
    ``sort_key_name`` if given); `TableSchemaError` if the table cannot hold events."""
    table = binding.table_name
    schema = key_schema(binding, missing)
    if not schema.composite:
        raise TableSchemaError(
            f"table {table!r} has only a hash key ({schema}); the event layout needs a composite"
            " key: create one with `chathist create-table`"
        )
    range_key = sort_key_name or schema.range_key
    assert range_key is not None
    check_event_schema(schema, table, schema.hash_key, range_key)
    return schema.hash_key, range_key


def estimated_items(sender: Sender) -> int | None:
    """The item count of the sender's table as DynamoDB last refreshed it (None if unknown)."""
    try:
        response = sender.call("DescribeTable", TableName=sender.binding.table_name)
    except StorageError:
        return None
    count = response["Table"].get("ItemCount")
    return int(count) if count else None
