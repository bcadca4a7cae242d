"""What the ``chathist`` subcommands share: exit codes, connection options, errors, progress."""

from __future__ import annotations

import argparse
import sys
import textwrap
import time
from typing import Any, TextIO

__all__ = [
    "EXIT_DIFFERENCES",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "CommandError",
    "Progress",
    "connection_options",
    "describe",
    "example_epilog",
]


EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_DIFFERENCES = 3
EXIT_INTERRUPTED = 130


class CommandError(Exception):
    """A command cannot do what was asked (bad input file, nothing to do...): one line, exit 1."""


def connection_options(args: argparse.Namespace) -> dict[str, Any]:
    """``endpoint_url``, ``region_name`` and ``boto3_session`` from the common options.

    ``boto3_session`` is a ``boto3.Session(profile_name=...)`` when ``--profile`` was given, else
    None (boto's default credential chain). Pass the dict to `DynamoDBChatMessageHistory` and
    `create_table` as keyword arguments.
    """
    session = None
    profile = getattr(args, "profile", None)
    if profile:
        import boto3
        from botocore.exceptions import BotoCoreError

        try:
            session = boto3.Session(profile_name=profile)
        except BotoCoreError as exc:  # no such profile
            raise CommandError(f"--profile {profile}: {exc}") from exc
    return {
        "endpoint_url": getattr(args, "endpoint_url", None),
        "region_name": getattr(args, "region", None),
        "boto3_session": session,
    }


def describe(text: str, width: int = 88) -> str:
    """``text`` wrapped for a ``description=`` under RawDescriptionHelpFormatter."""
    return textwrap.fill(" ".join(text.split()), width=width)


def example_epilog(*lines: str) -> str:
    """An ``examples:`` block for a subcommand's ``--help`` (RawDescriptionHelpFormatter)."""
    return "examples:\n" + "\n".join(f"  {line}" for line in lines) + "\n"


_BAR_WIDTH = 24


class Progress:
    """A one-line progress counter on stderr, redrawn at most a few times a second.

    On a terminal it rewrites one line (``\\r``); otherwise it prints a line every few seconds,
    so a log stays readable. ``total`` (if known) adds a bar and a percentage.
    """

    def __init__(
        self,
        label: str,
        *,
        unit: str = "",
        total: int | None = None,
        stream: TextIO | None = None,
    ) -> None:
        self.label = label
        self.unit = unit
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.count = 0
        self.extra = ""
        self.started = time.monotonic()
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._interval = 0.2 if self._tty else 5.0
        self._last = self.started

    def advance(self, step: int = 1, extra: str = "") -> None:
        """Count ``step`` more units; ``extra`` is appended to the line (e.g. message totals)."""
        self.count += step
        if extra:
            self.extra = extra
        now = time.monotonic()
        if now - self._last >= self._interval:
            self._last = now
            self._draw(final=False)

    def _line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        done = f"{self.count:,}"
        if self.total:
            share = min(self.count / self.total, 1.0)
            filled = round(share * _BAR_WIDTH)
            bar = "#" * filled + "." * (_BAR_WIDTH - filled)
            done = f"[{bar}] {done}/{self.total:,} ({100 * share:.0f}%)"
        if self.unit:
            done += f" {self.unit}"
        rate = self.count / elapsed
        extra = f", {self.extra}" if self.extra else ""
        return f"{self.label}: {done}{extra}, {rate:.1f}/s, {elapsed:.1f} s"

    def _draw(self, *, final: bool) -> None:
        if self._tty:
            end = "\n" if final else ""
            self.stream.write(f"\r\x1b[2K{self._line()}{end}")
        else:
            self.stream.write(self._line() + "\n")
        self.stream.flush()

    def finish(self) -> None:
        """Print the final line."""
        self._draw(final=True)
