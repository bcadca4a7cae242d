"""``chathist migrate`` and ``chathist rollback``: bulk moves between the list and event layouts.

Both run a versioned script of the ``migrations`` package (``--script``, default 0001), print a
progress line on stderr while they run and a report at the end (``--json`` for the report as
JSON on stdout). Exit codes: 0 done, 1 some sessions failed, conflicted or were too large (listed;
this wins over 3), 3 verification found differences (and nothing else went wrong), 130
interrupted (the report then counts what was done; running the command again resumes).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from typing import Any, TextIO

from chathist.bulk import MigrationConfig, MigrationInterrupted, Problem, Report
from chathist.cli.common import (
    EXIT_DIFFERENCES,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    CommandError,
    connection_options,
    describe,
    example_epilog,
)

__all__ = [
    "ProgressLine",
    "exit_code",
    "register",
    "render_report",
    "run_migrate",
    "run_rollback",
]


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``migrate`` and ``rollback`` subcommands."""
    migrate = subparsers.add_parser(
        "migrate",
        parents=[common],
        help="move list-layout sessions (LangChain's one item per session) into the event layout",
        description=describe(
            "Scan SOURCE (a table written by LangChain's DynamoDBChatMessageHistory: one item per"
            " session holding a History list) in parallel segments and write every session as"
            " events into TARGET (a composite-key table; it may be SOURCE itself). Idempotent and"
            " resumable: stop it at any point (Ctrl-C prints what was done) and run it again."
            " Expired sessions are skipped; TTL carries over to every event. Nothing is deleted"
            " unless --delete-source is given."
        ),
        epilog=example_epilog(
            "chathist migrate --source SessionTable --target ChatEvents --dry-run",
            "chathist migrate --source SessionTable --target ChatEvents --verify --max-wcu 500",
            "chathist migrate --source Chats --target Chats --primary-key-name PK"
            " --sort-key-name SK",
            "chathist migrate --source SessionTable --target ChatEvents --verify --delete-source",
            "chathist migrate --source SessionTable --target ChatEvents --kms-key-id alias/chat",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    migrate.add_argument("--source", required=True, metavar="TABLE", help="list-layout table")
    migrate.add_argument("--target", required=True, metavar="TABLE", help="event-layout table")
    _add_shared(migrate)
    migrate.add_argument(
        "--kms-key-id",
        metavar="KEY",
        help="client-side encryption: seal every message written with data keys from this KMS"
        " key (id, ARN or alias/NAME), as DynamoDBChatMessageHistory(kms_key_id=KEY) does",
    )
    migrate.add_argument(
        "--delete-source",
        action="store_true",
        help="delete each source item once its events are written and verified (and only if"
        " the item did not change meanwhile)",
    )
    migrate.set_defaults(func=run_migrate)

    rollback = subparsers.add_parser(
        "rollback",
        parents=[common],
        help="write event-layout sessions back as LangChain list items (those that fit 400 KB)",
        description=describe(
            "Read every session of SOURCE (an event-layout table) and write it into TARGET as"
            " one list item in LangChain's format (numbers as DynamoDB numbers, TTL carried"
            " over), which LangChain's DynamoDBChatMessageHistory reads. TARGET has a string"
            " hash key only (`chathist create-table TARGET --layout list` makes one), or a range"
            " key too with --legacy-sort-value. Sessions that do not fit one 400 KB item are"
            " reported and left as events, never truncated. A list item that holds other"
            " messages is a conflict unless --overwrite is given. Idempotent; nothing is deleted"
            " unless --delete-source is given."
        ),
        epilog=example_epilog(
            "chathist rollback --source ChatEvents --target SessionTable --dry-run",
            "chathist rollback --source ChatEvents --target SessionTable --verify",
            "chathist rollback --source ChatEvents --target SessionTable --overwrite --verify",
            "chathist rollback --source Chats --target Chats --legacy-sort-value langchain_history",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rollback.add_argument("--source", required=True, metavar="TABLE", help="event-layout table")
    rollback.add_argument("--target", required=True, metavar="TABLE", help="list-layout table")
    _add_shared(rollback)
    rollback.add_argument(
        "--legacy-sort-value",
        metavar="VALUE",
        help="if TARGET has a range key: its value in every list item (e.g. langchain_history)",
    )
    rollback.add_argument(
        "--delete-source",
        action="store_true",
        help="delete each session's events once its list item is written and verified",
    )
    rollback.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a target list item that holds other messages (a session changed after"
        " the migration), only if it is still the item read; listed as overwritten",
    )
    rollback.set_defaults(func=run_rollback)


def _add_shared(parser: argparse.ArgumentParser) -> None:
    names = parser.add_argument_group("attribute names")
    names.add_argument(
        "--primary-key-name",
        metavar="NAME",
        help="hash key of the list-layout table (default: read from the table)",
    )
    names.add_argument(
        "--sort-key-name",
        metavar="NAME",
        help="range key of the event-layout table (default: read from the table)",
    )
    names.add_argument(
        "--history-key",
        default="History",
        metavar="NAME",
        help="list attribute of a list item, payload attribute of an event (History)",
    )
    names.add_argument(
        "--ttl-key-name", default="expireAt", metavar="NAME", help="TTL attribute (expireAt)"
    )
    run = parser.add_argument_group("run")
    run.add_argument(
        "--segments", type=_positive_int, default=8, metavar="N", help="parallel scan segments (8)"
    )
    run.add_argument(
        "--max-wcu",
        type=_positive_float,
        metavar="N",
        help="cap writes at N write units per second (as DynamoDB reports them)",
    )
    run.add_argument("--dry-run", action="store_true", help="write nothing; report what would be")
    run.add_argument(
        "--verify",
        action="store_true",
        help="read every session back and compare it message for message; exit 3 on a difference",
    )
    run.add_argument(
        "--script", type=int, default=1, metavar="N", help="migration script number (1 = 0001)"
    )
    output = parser.add_argument_group("output")
    output.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    output.add_argument("--quiet", action="store_true", help="no progress line")
    output.add_argument(
        "--show", type=int, default=20, metavar="N", help="sessions listed per problem kind (20)"
    )


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def _config(args: argparse.Namespace) -> MigrationConfig:
    return MigrationConfig(
        source=args.source,
        target=args.target,
        primary_key_name=args.primary_key_name,
        sort_key_name=args.sort_key_name,
        history_key=args.history_key,
        ttl_key_name=args.ttl_key_name,
        legacy_sort_value=getattr(args, "legacy_sort_value", None),
        segments=args.segments,
        dry_run=args.dry_run,
        verify=args.verify,
        delete_source=args.delete_source,
        max_wcu=args.max_wcu,
        overwrite=getattr(args, "overwrite", False),
        kms_key_id=getattr(args, "kms_key_id", None),
        **connection_options(args),
    )


def _script(number: int) -> Any:
    from chathist import migrations  # type: ignore[attr-defined]  # from migrations/, see Makefile

    try:
        return migrations.load(number)
    except KeyError as exc:
        raise CommandError(str(exc.args[0])) from exc


def run_migrate(args: argparse.Namespace) -> int:
    """List layout -> event layout."""
    return _run(args, "migrate")


def run_rollback(args: argparse.Namespace) -> int:
    """Event layout -> list layout."""
    return _run(args, "rollback")


def _run(args: argparse.Namespace, direction: str) -> int:
    config = _config(args)
    script = _script(args.script)
    progress = None if args.quiet else ProgressLine(direction)
    if config.dry_run and config.delete_source:
        raise CommandError("--dry-run deletes nothing: drop --delete-source or --dry-run")
    try:
        report: Report = getattr(script, direction)(
            config, on_progress=None if progress is None else progress.update
        )
    except MigrationInterrupted as exc:  # Ctrl-C: say what was done, then exit 130
        report = exc.report
    finally:
        if progress is not None:
            progress.close()
    if args.json:
        json.dump(report.as_dict(), sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render_report(report, script, show=args.show))
    if report.interrupted:
        print(
            f"chathist: interrupted after {report.sessions:,} sessions; run the same command"
            " again to resume (finished sessions are skipped)",
            file=sys.stderr,
        )
    return exit_code(report)


def exit_code(report: Report) -> int:
    """130 if interrupted; 1 if sessions failed, conflicted, diverged or were too large (left
    undone); else 3 if verification found differences; else 0."""
    if report.interrupted:
        return EXIT_INTERRUPTED
    if report.conflicts or report.failures or report.too_large or report.diverged:
        return EXIT_ERROR
    if report.differences:
        return EXIT_DIFFERENCES
    return EXIT_OK


class ProgressLine:
    """Sessions, messages, their rates and an ETA on one stderr line (a line every 5 s when
    stderr is not a terminal). The ETA comes from the items scanned so far against the table's
    item count, which DynamoDB refreshes only every few hours: treat it as a guide."""

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = 0.25 if self.tty else 5.0
        self._last = time.monotonic()  # the first line after one interval, with real rates
        self._drawn = False
        self._lock = threading.Lock()

    def update(self, report: Report) -> None:
        """Called by the workers after each session; draws at most every ``interval``."""
        with self._lock:  # workers call this concurrently
            now = time.monotonic()
            if now - self._last < self.interval:
                return
            self._last = now
            self._draw(report)

    def line(self, report: Report) -> str:
        elapsed = max(report.elapsed, 1e-9)
        parts = [
            f"{self.label}: {report.sessions:,} sessions ({report.sessions / elapsed:,.0f}/s)",
            f"{report.messages:,} messages ({report.messages / elapsed:,.0f}/s)",
            f"{report.capacity.write_units:,.0f} WCU",
        ]
        done = None
        if report.estimated_sessions:
            done = min(report.sessions / report.estimated_sessions, 1.0)
        elif report.estimated_items:
            # Items are scanned a page ahead of the sessions written: no percentage from them.
            parts.append(f"scanned {report.scanned_items:,} of ~{report.estimated_items:,} items")
        if done is not None:
            parts.append(f"{100 * done:.0f}%")
            if done > 0:
                parts.append(f"ETA {_duration(elapsed * (1 - done) / done)}")
        problems = sum(report.count(kind) for kind, _, _ in _PROBLEM_NAMES)
        if problems:
            parts.append(f"problems: {problems:,}")
        return " | ".join(parts)

    def _draw(self, report: Report) -> None:
        text = self.line(report)
        if self.tty:
            self.stream.write(f"\r\x1b[2K{text}")
            self._drawn = True
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        """End the progress line (the report follows on stdout)."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1024 or unit == "GB":
            return f"{count:,.0f} {unit}" if unit == "B" else f"{count:,.1f} {unit}"
        count /= 1024
    return f"{count:,.1f} GB"  # pragma: no cover


_PROBLEM_TITLES = {
    Problem.DIFFERENCE: "differences found by --verify",
    Problem.CONFLICT: "conflicts (left alone)",
    Problem.FAILURE: "failures",
    Problem.TOO_LARGE: "too large for one item (left as events)",
    Problem.OVERWRITTEN: "overwritten (a differing list item replaced)",
    Problem.DIVERGED: "diverged (the legacy list no longer starts with what was migrated; left"
    " alone)",
    Problem.CAUGHT_UP: "caught up (the legacy list's new tail moved)",
    Problem.CLEARED: "cleared since the migration (the legacy list is not moved)",
}

_CATCH_UP_ROWS = (
    (Problem.CAUGHT_UP, "new tails moved"),
    (Problem.CLEARED, "cleared since"),
    (Problem.DIVERGED, "diverged"),
)

_PROBLEM_NAMES = (
    (Problem.CONFLICT, "conflict", "conflicts"),
    (Problem.FAILURE, "failure", "failures"),
    (Problem.TOO_LARGE, "too large", "too large"),
    (Problem.DIFFERENCE, "difference", "differences"),
    (Problem.DIVERGED, "diverged", "diverged"),
)


def outcome(report: Report) -> str:
    """The report's last line: what kept the run from being clean, and the exit code."""
    counts = [(report.count(kind), one, many) for kind, one, many in _PROBLEM_NAMES]
    problems = ", ".join(f"{n:,} {one if n == 1 else many}" for n, one, many in counts if n)
    code = exit_code(report)
    if report.interrupted:
        so_far = f" with {problems} so far" if problems else ""
        return f"result: interrupted{so_far} (exit {code}); run the same command again to resume"
    return f"result: {problems or 'ok'} (exit {code})"


def render_report(report: Report, script: Any = None, *, show: int = 20) -> str:
    """The final report as text."""
    arrow = f"{report.source} -> {report.target}"
    head = f"{report.direction} {arrow}"
    if script is not None:
        head += f"  (script {script.VERSION:04d}, event format v{report.format_version})"
    if report.dry_run:
        head += "  DRY RUN: nothing written"
    if report.interrupted:
        head += "  INTERRUPTED"
    elapsed = max(report.elapsed, 1e-9)
    verb = "migrated" if report.direction == "list-to-events" else "rolled back"
    done = f"would be {verb}" if report.dry_run else verb
    rows = [
        ("sessions seen", f"{report.sessions:,}"),
        (f"sessions {done}", f"{report.migrated:,}"),
        ("already done", f"{report.already:,}"),
        ("expired (skipped)", f"{report.expired:,}"),
        ("empty (skipped)", f"{report.empty:,}"),
        ("conflicts", f"{report.conflicts:,}"),
        ("failures", f"{report.failures:,}"),
    ]
    if report.direction == "events-to-list":
        rows.append(("too large", f"{report.too_large:,}"))
    for kind, label in _CATCH_UP_ROWS:
        if report.count(kind):  # a catch-up run's outcomes, shown once there are any
            rows.append((label, f"{report.count(kind):,}"))
    if report.verify or report.verified:
        plural = "" if report.differences == 1 else "s"
        rows.append(
            ("verified", f"{report.verified:,} ({report.differences:,} difference{plural})")
        )
    if report.overwritten:
        label = "would overwrite" if report.dry_run else "overwritten"
        rows.append((label, f"{report.overwritten:,}"))
    if report.deleted_sources:
        rows.append(("sources deleted", f"{report.deleted_sources:,}"))
    rows += [
        ("messages", f"{report.messages:,}"),
        ("items written" if not report.dry_run else "items to write", f"{report.items_written:,}"),
        ("bytes to write" if report.dry_run else "bytes written", _bytes(report.payload_bytes)),
        ("source bytes", _bytes(report.source_bytes)),
    ]
    if report.dry_run:
        rows.append(("estimated cost", f"about {report.estimated_wcu:,.0f} WCU (upper bound)"))
    per_message, per_append = report.wcu_per_message, report.source_item_wcu
    if report.direction == "list-to-events" and per_message is not None and per_append:
        rows.append(
            (
                "WCU per message",
                f"{per_message:,.2f} (LangChain's layout: {per_append:,.0f} WCU per append"
                " to a session of the mean source item's size)",
            )
        )
    capacity = report.capacity
    rows += [
        (
            "consumed capacity",
            f"{capacity.write_units:,.1f} WCU, {capacity.read_units:,.1f} RCU,"
            f" {capacity.requests:,} requests",
        ),
        (
            "elapsed",
            f"{elapsed:,.1f} s: {report.sessions / elapsed:,.0f} sessions/s,"
            f" {report.messages / elapsed:,.0f} messages/s,"
            f" {capacity.write_units / elapsed:,.0f} WCU/s",
        ),
    ]
    if report.limiter_units or report.limiter_wait_seconds:
        rows.append(
            (
                "write limiter",
                f"{report.limiter_units:,.0f} WCU, waited {report.limiter_wait_seconds:,.1f} s",
            )
        )
    width = max(len(name) for name, _ in rows)
    lines = [head] + [f"  {name:<{width}}  {value}" for name, value in rows]
    for kind, title in _PROBLEM_TITLES.items():
        listed = report.problems.get(kind, [])
        count = report.count(kind)
        if not count:
            continue
        if kind is Problem.OVERWRITTEN and report.dry_run:
            title = "would overwrite (a differing list item, with --overwrite)"
        lines.append(f"{title}: {count:,}")
        for session, detail in listed[:show]:
            lines.append(f"  {session}: {detail}")
        if count > min(len(listed), show):
            lines.append(
                f"  ... and {count - min(len(listed), show):,} more (--json lists up to 1,000)"
            )
    if report.dry_run:
        lines.append("dry run: run again without --dry-run to write")
    lines.append(outcome(report))
    return "\n".join(lines) + "\n"
