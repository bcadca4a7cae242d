"""The ``chathist`` command line: one entry point, one subcommand module per topic.

Each module in `COMMAND_MODULES` defines ``register(subparsers, common)``; it adds its parsers
with ``parents=[common]`` and ``set_defaults(func=handler)``, where ``handler(args)`` returns the
exit code. Every error reaches `main` as one line on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
import warnings
from collections.abc import Sequence
from types import ModuleType

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

from chathist.cli import local, migrate, sessions, tables
from chathist.cli.common import (
    EXIT_DIFFERENCES,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    CommandError,
)
from chathist.dynamo.binding import ENDPOINT_ENV
from chathist.dynamo.translate import LOCAL_CREDENTIALS_HINT
from chathist.errors import ChatHistoryError
from chathist.local import LocalDatabaseError

__all__ = [
    "COMMAND_MODULES",
    "EXIT_DIFFERENCES",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "build_parser",
    "main",
]

COMMAND_MODULES: tuple[ModuleType, ...] = (local, tables, sessions, migrate)

EPILOG = """\
connection options (every command):
  --endpoint-url URL   e.g. http://127.0.0.1:8000 for DynamoDB Local (`chathist local`);
                       default: $CHATHIST_ENDPOINT_URL, else AWS
  --region REGION      AWS region (default: the environment's, or us-east-1 with an endpoint)
  --profile NAME       a profile from ~/.aws/config
  --debug              show the full traceback on errors

exit codes:
  0    success
  1    error (one line on stderr: `chathist: error: ...`)
  2    usage error (bad arguments)
  3    verification found differences (`chathist migrate --verify`)
  130  interrupted (Ctrl-C)

examples:
  chathist local --port 8000
  chathist create-table ChatEvents --endpoint-url http://127.0.0.1:8000
  chathist show ChatEvents session-1 --last 10 --endpoint-url http://127.0.0.1:8000
  chathist <command> --help
"""

_ERRORS: tuple[type[BaseException], ...] = (
    ChatHistoryError,
    CommandError,
    LocalDatabaseError,
    BotoCoreError,
    ClientError,
    OSError,
)


def common_parser() -> argparse.ArgumentParser:
    """The options every subcommand accepts (a parent parser, no help of its own)."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("connection")
    group.add_argument(
        "--endpoint-url",
        metavar="URL",
        default=None,  # the library reads $CHATHIST_ENDPOINT_URL itself (and names it in errors)
        help=f"DynamoDB endpoint, e.g. DynamoDB Local (default: ${ENDPOINT_ENV}, else AWS)",
    )
    group.add_argument("--region", metavar="REGION", help="AWS region name")
    group.add_argument("--profile", metavar="NAME", help="AWS profile name (~/.aws/config)")
    group.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return common


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every available subcommand registered."""
    from chathist import __version__

    parser = argparse.ArgumentParser(
        prog="chathist",
        description="Operate chathist tables: run DynamoDB Local, create tables, inspect,"
        " export, import and migrate chat sessions.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"chathist {__version__}")
    common = common_parser()
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(subparsers, common)
    return parser


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    """Whether ``exc`` or an exception in its ``__cause__`` chain is a ``kind``."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__
    return False


def _error_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if _caused_by(exc, NoRegionError):
        # The library's message names region_name=; here the user has options.
        text = "no AWS region: pass --region, set AWS_DEFAULT_REGION, or use a --profile with one"
    if _caused_by(exc, NoCredentialsError) and LOCAL_CREDENTIALS_HINT not in text:
        text += f" ({LOCAL_CREDENTIALS_HINT})"
    return f"chathist: error: {text}"


def _one_line_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    line: str | None = None,
) -> str:
    text = " ".join(str(message).split())
    return f"chathist: warning: {text}\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    warnings.formatwarning = _one_line_warning
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help/--version (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    handler = getattr(args, "func", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    debug = bool(getattr(args, "debug", False))
    try:
        code: int = handler(args)
        return code
    except BrokenPipeError:
        # `chathist export ... | head`: the reader went away; not an error of ours.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print("chathist: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except _ERRORS as exc:
        if debug:
            traceback.print_exc()
        print(_error_line(exc), file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
