"""Tables: create the event-layout table; read (once per process) a table's key schema."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from chathist.core.retry import RetryRule
from chathist.core.steps import Steps, call, sleep
from chathist.dynamo.binding import Binding
from chathist.dynamo.capacity import CapacityMeter
from chathist.dynamo.client import Sender
from chathist.errors import ConfigurationError, StorageError, TableSchemaError

if TYPE_CHECKING:
    import boto3

__all__ = [
    "KeySchema",
    "acreate_table",
    "check_event_schema",
    "check_item_key",
    "create_table",
    "describe_key_schema",
    "forget_key_schema",
    "key_schema",
    "known_key_schema",
    "learn_key_schema",
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


def key_schema(binding: Binding) -> Steps[KeySchema]:
    """The key schema of ``binding``'s table, asked of DynamoDB once per process and cached."""
    with _schemas_lock:
        known = _schemas.get(binding)
    if known is not None:
        return known
    response = yield from call("DescribeTable", TableName=binding.table_name)
    schema = _parse(response["Table"])
    with _schemas_lock:
        _schemas[binding] = schema
    return schema


def known_key_schema(binding: Binding) -> KeySchema | None:
    """The key schema of ``binding``'s table if this process already knows it."""
    with _schemas_lock:
        return _schemas.get(binding)


def learn_key_schema(binding: Binding, schema: KeySchema) -> None:
    """Remember ``schema`` as ``binding``'s table's, learned from a request that could only
    succeed on it (so `key_schema` need not ask DynamoDB)."""
    with _schemas_lock:
        _schemas.setdefault(binding, schema)


def describe_key_schema(binding: Binding, meter: CapacityMeter | None = None) -> KeySchema:
    """`key_schema`, sent now."""
    return Sender(binding, meter or CapacityMeter()).run(key_schema(binding))


def forget_key_schema(binding: Binding | None = None) -> None:
    """Drop the cached key schema of ``binding``'s table (None: of every table), after it was
    deleted or re-created."""
    with _schemas_lock:
        if binding is None:
            _schemas.clear()
        else:
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
    layout: Literal["events", "list"] = "events",
) -> bool:
    """Create the composite-key table of the event layout, with on-demand billing
    (``layout="list"``: LangChain's table instead, a string hash key only, one item per session:
    what a rollback writes into).

    Waits until the table is active and turns on TTL on ``ttl_key_name`` when ``ttl`` is true.
    ``kms_key_id`` encrypts the table at rest with that customer managed KMS key. Returns True if
    it created the table, False (and logs why) if a table of the right schema already exists;
    raises `TableSchemaError` if the existing table has another key schema.
    """
    binding, steps = _creation(
        table_name,
        endpoint_url,
        boto3_session,
        region_name,
        ttl,
        ttl_key_name,
        primary_key_name,
        sort_key_name,
        kms_key_id,
        wait,
        layout,
    )
    sender = Sender(binding, CapacityMeter())
    _ = sender.client  # bad settings fail here, as a ConfigurationError
    return sender.run(steps)


async def acreate_table(
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
    layout: Literal["events", "list"] = "events",
) -> bool:
    """`create_table` in the running event loop (natively with the ``async`` extra, else in
    an executor)."""
    import asyncio

    from chathist.dynamo import aio

    arguments = (
        table_name,
        endpoint_url,
        boto3_session,
        region_name,
        ttl,
        ttl_key_name,
        primary_key_name,
        sort_key_name,
        kms_key_id,
        wait,
        layout,
    )
    if not aio.AVAILABLE:

        def create() -> bool:
            binding, steps = _creation(*arguments)
            return Sender(binding, CapacityMeter()).run(steps)

        return await asyncio.get_running_loop().run_in_executor(None, create)
    binding, steps = _creation(*arguments)
    return await aio.AsyncSender(binding, CapacityMeter()).run(steps)


def _creation(
    table_name: str,
    endpoint_url: str | None,
    boto3_session: boto3.Session | None,
    region_name: str | None,
    ttl: bool,
    ttl_key_name: str,
    primary_key_name: str,
    sort_key_name: str,
    kms_key_id: str | None,
    wait: bool,
    layout: str,
) -> tuple[Binding, Steps[bool]]:
    """The binding and the steps of a table's creation (arguments checked first)."""
    if layout not in ("events", "list"):
        raise ConfigurationError(f"layout must be 'events' or 'list', got {layout!r}")
    binding = Binding.resolve(table_name, endpoint_url, region_name, boto3_session)
    keys = [(primary_key_name, "HASH")]
    if layout == "events":
        keys.append((sort_key_name, "RANGE"))
    return binding, _create(binding, keys, ttl, ttl_key_name, kms_key_id, wait)


def _create(
    binding: Binding,
    keys: list[tuple[str, str]],
    ttl: bool,
    ttl_key_name: str,
    kms_key_id: str | None,
    wait: bool,
) -> Steps[bool]:
    table_name = binding.table_name
    request: dict[str, Any] = {
        "TableName": table_name,
        "AttributeDefinitions": [{"AttributeName": k, "AttributeType": "S"} for k, _ in keys],
        "KeySchema": [{"AttributeName": k, "KeyType": kind} for k, kind in keys],
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
        yield from call("CreateTable", **request)
    except StorageError as exc:
        if exc.code != "ResourceInUseException":
            raise
        created = False
    forget_key_schema(binding)
    if not created:
        schema = yield from key_schema(binding)
        if len(keys) == 2:
            list_table = (
                "it is a LangChain list-layout table: give the event table another name; to"
                f" move the sessions into it: {move_sessions(table_name, 'NEW_NAME')}"
            )
            fix = None if schema.composite else list_table
            check_event_schema(schema, table_name, keys[0][0], keys[1][0], fix=fix)
        elif schema != KeySchema(keys[0][0], "S"):
            raise TableSchemaError(
                f"table {table_name!r} has key schema {schema}; LangChain's list layout needs"
                f" {KeySchema(keys[0][0], 'S')}"
            )
        log.info("table %r already exists with the key schema asked for", table_name)
    if wait or ttl:
        yield from _wait_active(table_name)
    if ttl:
        yield from _enable_ttl(table_name, ttl_key_name)
    return created


ACTIVE_WAIT = RetryRule(attempts=1200, timeout=300.0)
"""How long `create_table` waits for a new table to become active (polling every half second)."""


def _wait_active(table_name: str) -> Steps[None]:
    status = "unknown"
    attempts = ACTIVE_WAIT.start()
    for _ in attempts:
        response = yield from call("DescribeTable", TableName=table_name)
        status = response["Table"]["TableStatus"]
        if status == "ACTIVE":
            return
        yield from sleep(0.5)
    raise StorageError(f"table {table_name!r} is still {status} ({attempts.spent})")


def _enable_ttl(table_name: str, ttl_key_name: str) -> Steps[None]:
    response = yield from call("DescribeTimeToLive", TableName=table_name)
    current = response["TimeToLiveDescription"]
    if current.get("TimeToLiveStatus") in ("ENABLED", "ENABLING"):
        if current.get("AttributeName") != ttl_key_name:
            raise TableSchemaError(
                f"table {table_name!r} already has TTL on {current.get('AttributeName')!r},"
                f" not {ttl_key_name!r}"
            )
        return
    yield from call(
        "UpdateTimeToLive",
        TableName=table_name,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl_key_name},
    )
