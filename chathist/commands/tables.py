"""``chathist create-table``: create the event-layout table, or LangChain's list-layout table."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from chathist.commands import CommandError, connection_options, describe, example_epilog
from chathist.errors import StorageError, TableSchemaError
from chathist.models import Binding, dynamodb_client, event_model
from chathist.tables import (
    KeySchema,
    _enable_ttl,
    _wait_active,
    create_table,
    describe_key_schema,
    forget_key_schema,
)

if TYPE_CHECKING:
    import boto3

__all__ = ["create_list_table", "register"]


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``create-table`` subcommand."""
    parser = subparsers.add_parser(
        "create-table",
        parents=[common],
        help="create the composite-key table of the event layout (on-demand billing)",
        description=describe(
            "Create TABLE with a string hash key (session) and a string range key"
            " (sequence number), on-demand billing, and wait until it is active. Does nothing (exit"
            " 0) if TABLE already exists with that key schema; exit 1 if it has another one."
            " --layout list creates LangChain's table instead (a string hash key only, one item"
            " per session): what `chathist rollback` writes into."
        ),
        epilog=example_epilog(
            "chathist create-table ChatEvents --endpoint-url http://127.0.0.1:8000",
            "chathist create-table ChatEvents --ttl                 # TTL on expireAt",
            "chathist create-table ChatEvents --ttl --ttl-key-name ttl",
            "chathist create-table ChatEvents --profile prod --region eu-west-1",
            "chathist create-table SessionTable --layout list       # a rollback target",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("table", metavar="TABLE", help="table name")
    parser.add_argument(
        "--layout",
        choices=("events", "list"),
        default="events",
        help="events: chathist's composite key (default); list: LangChain's hash key only",
    )
    parser.add_argument("--ttl", action="store_true", help="enable DynamoDB TTL on the table")
    parser.add_argument(
        "--ttl-key-name", default="expireAt", metavar="NAME", help="TTL attribute (expireAt)"
    )
    parser.add_argument(
        "--primary-key-name", default="SessionId", metavar="NAME", help="hash key (SessionId)"
    )
    parser.add_argument(
        "--sort-key-name", metavar="NAME", help="range key of the event layout (SK)"
    )
    parser.add_argument(
        "--kms-key-id", default=None, metavar="KEY", help="encrypt at rest with this KMS key"
    )
    parser.set_defaults(func=run_create_table)


def run_create_table(args: argparse.Namespace) -> int:
    """Create the table (or accept an existing one of the right schema)."""
    if args.layout == "list":
        if args.sort_key_name:
            raise CommandError("--layout list has no range key: drop --sort-key-name")
        created = create_list_table(
            args.table,
            ttl=args.ttl,
            ttl_key_name=args.ttl_key_name,
            primary_key_name=args.primary_key_name,
            kms_key_id=args.kms_key_id,
            **connection_options(args),
        )
    else:
        created = create_table(
            args.table,
            ttl=args.ttl,
            ttl_key_name=args.ttl_key_name,
            primary_key_name=args.primary_key_name,
            sort_key_name=args.sort_key_name or "SK",
            kms_key_id=args.kms_key_id,
            **connection_options(args),
        )
    state = "created" if created else f"already exists with the {args.layout}-layout key schema"
    ttl = f"; TTL on {args.ttl_key_name}" if args.ttl else ""
    print(f"table {args.table}: {state}{ttl}")
    return 0


def create_list_table(
    table_name: str,
    *,
    endpoint_url: str | None = None,
    boto3_session: boto3.Session | None = None,
    region_name: str | None = None,
    ttl: bool = False,
    ttl_key_name: str = "expireAt",
    primary_key_name: str = "SessionId",
    kms_key_id: str | None = None,
) -> bool:
    """Create LangChain's list-layout table (a string hash key only, on-demand billing), the
    table a rollback writes into, like `create_table` does the event table: wait until active,
    TTL if asked; True if created, False if it exists with that key schema, else
    `TableSchemaError`."""
    binding = Binding(table_name, endpoint_url, region_name, boto3_session)
    client = dynamodb_client(event_model(binding))
    request: dict[str, Any] = {
        "TableName": table_name,
        "AttributeDefinitions": [{"AttributeName": primary_key_name, "AttributeType": "S"}],
        "KeySchema": [{"AttributeName": primary_key_name, "KeyType": "HASH"}],
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
            wanted = KeySchema(primary_key_name, "S")
            if schema != wanted:
                raise TableSchemaError(
                    f"table {table_name!r} has key schema {schema}; LangChain's list layout"
                    f" needs {wanted}"
                )
        _wait_active(client, table_name)
        if ttl:
            _enable_ttl(client, table_name, ttl_key_name)
    except (ClientError, BotoCoreError) as exc:
        raise StorageError(f"cannot create table {table_name!r}: {exc}") from exc
    return created
