"""Tables: create the event-layout table; read (once per process) a table's key schema."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from chathist.errors import StorageError, TableNotFoundError, TableSchemaError
from chathist.models import Binding, botocore_failure, dynamodb_client, event_model

if TYPE_CHECKING:
    import boto3

__all__ = [
    "KeySchema",
    "check_event_schema",
    "check_item_key",
    "create_table",
    "describe_key_schema",
    "forget_key_schema",
    "move_sessions",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeySchema:
    """A table's primary key: the hash key and, on a composite-key table, the range key."""

    hash_key: str
    hash_type: str
    range_key: str | None = None
    range_type: str | None = None

    @property
    def composite(self) -> bool:
        return self.range_key is not None

    def __str__(self) -> str:
        text = f"HASH {self.hash_key} ({self.hash_type})"
        if self.range_key:
            text += f", RANGE {self.range_key} ({self.range_type})"
        return text


_schemas: dict[Binding, KeySchema] = {}
_schemas_lock = threading.Lock()


def _client(binding: Binding) -> Any:
    return dynamodb_client(event_model(binding))


def _parse(description: dict[str, Any]) -> KeySchema:
    types = {d["AttributeName"]: d["AttributeType"] for d in description["AttributeDefinitions"]}
    keys = {k["KeyType"]: k["AttributeName"] for k in description["KeySchema"]}
    range_key = keys.get("RANGE")
    return KeySchema(
        hash_key=keys["HASH"],
        hash_type=types[keys["HASH"]],
        range_key=range_key,
        range_type=types[range_key] if range_key else None,
    )


def describe_key_schema(binding: Binding) -> KeySchema:
    """The key schema of ``binding``'s table, asked of DynamoDB once per process and cached."""
    with _schemas_lock:
        known = _schemas.get(binding)
    if known is not None:
        return known
    try:
        description = _client(binding).describe_table(TableName=binding.table_name)["Table"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            where = binding.endpoint_url or f"AWS region {binding.region}"
            raise TableNotFoundError(
                f"table {binding.table_name!r} does not exist on {where}; create it with"
                f" chathist.create_table({binding.table_name!r}) or `chathist create-table`"
            ) from exc
        raise StorageError(f"cannot describe table {binding.table_name!r}: {exc}") from exc
    except BotoCoreError as exc:
        failure = botocore_failure(exc, binding.endpoint_url)
        raise StorageError(f"cannot describe table {binding.table_name!r}: {failure}") from exc
    schema = _parse(description)
    with _schemas_lock:
        _schemas[binding] = schema
    return schema


def forget_key_schema(binding: Binding) -> None:
    """Drop the cached key schema of ``binding``'s table (after it was deleted or re-created)."""
    with _schemas_lock:
        _schemas.pop(binding, None)


_TYPE_NAMES = {"S": "a string", "N": "a number", "B": "binary"}


def move_sessions(source: str, target: str) -> str:
    """The commands that move the sessions of list-layout table ``source`` into a new event
    table ``target`` (``chathist migrate`` needs the target to exist)."""
    create = f"`chathist create-table {target}`"
    return f"{create}, then `chathist migrate --source {source} --target {target}`"


def check_event_schema(
    schema: KeySchema, table_name: str, hash_key: str, range_key: str, *, fix: str | None = None
) -> None:
    """Raise `TableSchemaError` unless the table fits the event layout with these key names.

    ``fix`` says what to do instead; by default, what a history can be told (other key names,
    or the list layout for a table with only a hash key)."""
    wanted = KeySchema(hash_key, "S", range_key, "S")
    if schema == wanted:
        return
    if fix is None:
        if not schema.composite:
            fix = "a table with only a hash key is LangChain's list layout: use layout='list'"
        elif (schema.hash_type, schema.range_type) == ("S", "S"):
            fix = f"pass primary_key_name={schema.hash_key!r}, sort_key_name={schema.range_key!r}"
        else:
            fix = "the event layout needs string keys: use another table"
    raise TableSchemaError(
        f"table {table_name!r} has key schema {schema}; the event layout needs {wanted} ({fix})"
    )


def check_item_key(schema: KeySchema, table_name: str, key: dict[str, str]) -> None:
    """Raise `TableSchemaError` unless ``key`` (attribute name: DynamoDB type, as in ``S``) is
    the whole primary key of the table: the list layout addresses one item per session."""
    wanted = {schema.hash_key: schema.hash_type}
    if schema.range_key is not None and schema.range_type is not None:
        wanted[schema.range_key] = schema.range_type
    if key == wanted:
        return
    given = ", ".join(f"{name} ({kind})" for name, kind in key.items())
    if set(key) == set(wanted):
        fix = "; ".join(
            f"{name} is {_TYPE_NAMES.get(wanted[name], wanted[name])} in the table"
            for name in key
            if key[name] != wanted[name]
        )
        fix += ": pass key= with values of the table's key types"
    elif schema.composite and len(key) == 1:
        fix = (
            "a table with a sort key is the event layout: use layout='events' or 'auto', or"
            " pass key= with both key attributes to address one LangChain item on it"
        )
    else:
        fix = f"pass primary_key_name={schema.hash_key!r}, or key= naming the table's keys"
    raise TableSchemaError(
        f"table {table_name!r} has key schema {schema}; the list layout's key is {given} ({fix})"
    )


def create_table(
    table_name: str,
    *,
    endpoint_url: str | None = None,
    boto3_session: boto3.Session | None = None,
    region_name: str | None = None,
    ttl: bool = False,
    ttl_key_name: str = "expireAt",
    primary_key_name: str = "SessionId",
    sort_key_name: str = "SK",
    kms_key_id: str | None = None,
    wait: bool = True,
) -> bool:
    """Create the composite-key table of the event layout, with on-demand billing.

    Waits until the table is active and turns on TTL on ``ttl_key_name`` when ``ttl`` is true.
    ``kms_key_id`` encrypts the table at rest with that customer managed KMS key. Returns True if
    it created the table, False (and logs why) if a table of the right schema already exists;
    raises `TableSchemaError` if the existing table has another key schema.
    """
    binding = Binding(table_name, endpoint_url, region_name, boto3_session)
    client = _client(binding)
    request: dict[str, Any] = {
        "TableName": table_name,
        "AttributeDefinitions": [
            {"AttributeName": primary_key_name, "AttributeType": "S"},
            {"AttributeName": sort_key_name, "AttributeType": "S"},
        ],
        "KeySchema": [
            {"AttributeName": primary_key_name, "KeyType": "HASH"},
            {"AttributeName": sort_key_name, "KeyType": "RANGE"},
        ],
        "BillingMode": "PAY_PER_REQUEST",
    }
    if kms_key_id:
        request["SSESpecification"] = {
            "Enabled": True,
            "SSEType": "KMS",
            "KMSMasterKeyId": kms_key_id,
        }
    created = True
    try:
        try:
            client.create_table(**request)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ResourceInUseException":
                raise
            created = False
        forget_key_schema(binding)
        if not created:
            schema = describe_key_schema(binding)
            list_table = (
                "it is a LangChain list-layout table: give the event table another name; to"
                f" move the sessions into it: {move_sessions(table_name, 'NEW_NAME')}"
            )
            fix = None if schema.composite else list_table
            check_event_schema(schema, table_name, primary_key_name, sort_key_name, fix=fix)
            log.info("table %r already exists with the event-layout key schema", table_name)
        if wait or ttl:
            _wait_active(client, table_name)
        if ttl:
            _enable_ttl(client, table_name, ttl_key_name)
    except (ClientError, BotoCoreError) as exc:
        failure = botocore_failure(exc, binding.endpoint_url)
        raise StorageError(f"cannot create table {table_name!r}: {failure}") from exc
    return created


def _wait_active(client: Any, table_name: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        status = client.describe_table(TableName=table_name)["Table"]["TableStatus"]
        if status == "ACTIVE":
            return
        if time.monotonic() > deadline:
            raise StorageError(f"table {table_name!r} is still {status} after {timeout:.0f} s")
        time.sleep(0.5)


def _enable_ttl(client: Any, table_name: str, ttl_key_name: str) -> None:
    current = client.describe_time_to_live(TableName=table_name)["TimeToLiveDescription"]
    if current.get("TimeToLiveStatus") in ("ENABLED", "ENABLING"):
        if current.get("AttributeName") != ttl_key_name:
            raise TableSchemaError(
                f"table {table_name!r} already has TTL on {current.get('AttributeName')!r},"
                f" not {ttl_key_name!r}"
            )
        return
    client.update_time_to_live(
        TableName=table_name,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl_key_name},
    )
