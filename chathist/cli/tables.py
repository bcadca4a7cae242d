"""``chathist create-table``: create the event-layout table, or LangChain's list-layout table."""

from __future__ import annotations

import argparse
from typing import Any

from chathist.cli.common import CommandError, connection_options, describe, example_epilog
from chathist.dynamo.tables import create_table

__all__ = ["register"]


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
    if args.layout == "list" and args.sort_key_name:
        raise CommandError("--layout list has no range key: drop --sort-key-name")
    created = create_table(
        args.table,
        ttl=args.ttl,
        ttl_key_name=args.ttl_key_name,
        primary_key_name=args.primary_key_name,
        sort_key_name=args.sort_key_name or "SK",
        kms_key_id=args.kms_key_id,
        layout=args.layout,
        **connection_options(args),
    )
    state = "created" if created else f"already exists with the {args.layout}-layout key schema"
    ttl = f"; TTL on {args.ttl_key_name}" if args.ttl else ""
    print(f"table {args.table}: {state}{ttl}")
    return 0
