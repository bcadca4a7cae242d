"""``chathist show``, ``export``, ``import`` and ``stats``: sessions as an operator sees them.

Sessions are read and written only through `DynamoDBChatMessageHistory`, so these commands see
exactly what an application sees. The table's key schema (looked up once) gives the key names
and the layout: a composite key is the event layout, a hash key alone LangChain's list layout.
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TextIO

from langchain_core.messages import BaseMessage, messages_from_dict, messages_to_dict

from chathist.cli.common import (
    EXIT_ERROR,
    EXIT_OK,
    CommandError,
    Progress,
    connection_options,
    describe,
    example_epilog,
)
from chathist.core.sizes import item_size
from chathist.core.thread_keys import is_thread_key
from chathist.dynamo.binding import Binding
from chathist.dynamo.capacity import CapacityMeter
from chathist.dynamo.client import Sender
from chathist.dynamo.items import EventModel
from chathist.dynamo.paging import Cursor
from chathist.dynamo.tables import KeySchema, key_schema
from chathist.history import DynamoDBChatMessageHistory

__all__ = ["SHOW_LIMIT", "ImportOutcome", "import_plan", "register", "shorten"]


SHOW_LIMIT = 2000
"""Characters of one value `chathist show` prints before it cuts it short (without --full)."""


# -- wiring -------------------------------------------------------------------------------------


class Target:
    """One table as the commands use it: its binding, key schema and history factory."""

    def __init__(self, args: argparse.Namespace, table: str) -> None:
        self.table = table
        self.connection = connection_options(args)
        self.binding = Binding.resolve(
            table,
            self.connection["endpoint_url"],
            self.connection["region_name"],
            self.connection["boto3_session"],
        )
        self.sender = Sender(self.binding, CapacityMeter())
        self.history_key: str = getattr(args, "history_key", None) or "History"
        self.schema: KeySchema = self.sender.run(key_schema(self.binding))

    @property
    def layout(self) -> str:
        """``events`` for a composite-key table, ``list`` for a hash-key-only one."""
        return "events" if self.schema.composite else "list"

    def history(self, session_id: str, **options: Any) -> DynamoDBChatMessageHistory:
        """The public history class for ``session_id`` on this table."""
        names: dict[str, Any] = {"primary_key_name": self.schema.hash_key}
        if self.schema.range_key is not None:
            names["sort_key_name"] = self.schema.range_key
        return DynamoDBChatMessageHistory(
            self.table,
            session_id,
            history_messages_key=self.history_key,
            **names,
            **options,
            **self.connection,
        )

    def scan(self, *, keys_only: bool, segments: int) -> Iterator[dict[str, Any]]:
        """Every item of a session (or only its keys), by a parallel Scan of ``segments``
        segments; the items of LangGraph threads sharing the table are left out.

        Items come out as the segments deliver their pages, a few pages at a time: memory stays
        flat however large the table is.
        """
        base: dict[str, Any] = {"TableName": self.table, "ConsistentRead": True}
        if keys_only:
            names = {"#h": self.schema.hash_key}
            if self.schema.range_key is not None:
                names["#r"] = self.schema.range_key
            base["ProjectionExpression"] = ", ".join(names)
            base["ExpressionAttributeNames"] = names
        cursors = [
            Cursor("Scan", dict(base, Segment=segment, TotalSegments=segments))
            for segment in range(segments)
        ]
        if segments == 1:
            items = self.sender.items(cursors[0])
        else:
            items = _interleave(self.sender, cursors)
        yield from self._sessions_only(items)

    def _sessions_only(self, items: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """``items`` without those of LangGraph threads (`chathist.langgraph`): a thread's sort
        keys are never a session's (`chathist.core.thread_keys`)."""
        range_key = self.schema.range_key
        for item in items:
            if range_key is None or not is_thread_key(item[range_key].get("S", "")):
                yield item

    def session_ids(self, segments: int) -> list[str]:
        """Every session id in the table, sorted (a keys-only parallel Scan, deduplicated)."""
        found: set[str] = set()
        progress = Progress(f"scanning {self.table}", unit="items")
        for item in self.scan(keys_only=True, segments=segments):
            value = item[self.schema.hash_key]
            found.add(value.get("S") or next(iter(value.values())))
            progress.advance(extra=f"{len(found)} sessions")
        progress.finish()
        return sorted(found)

    def session_items(self, session_id: str) -> Iterator[dict[str, Any]]:
        """The raw items of one session (a paged Query)."""
        cursor = Cursor(
            "Query",
            {
                "TableName": self.table,
                "KeyConditionExpression": "#h = :h",
                "ExpressionAttributeNames": {"#h": self.schema.hash_key},
                "ExpressionAttributeValues": {":h": {"S": session_id}},
                "ConsistentRead": True,
            },
        )
        return self._sessions_only(self.sender.items(cursor))


_DONE = object()


def _interleave(sender: Sender, cursors: list[Cursor]) -> Iterator[dict[str, Any]]:
    """The pages of ``cursors``, fetched by one thread each (at most 16 at a time) and handed
    over through a small queue, so at most a few pages are held at once."""
    pages: queue.Queue[Any] = queue.Queue(maxsize=4)
    stop = threading.Event()

    def fetch(cursor: Cursor) -> None:
        try:
            while not stop.is_set() and (page := sender.run(cursor.next_page())) is not None:
                pages.put(page)
        except BaseException as exc:  # handed to the reader
            pages.put(exc)
        finally:
            pages.put(_DONE)

    with ThreadPoolExecutor(max_workers=min(len(cursors), 16)) as pool:
        for cursor in cursors:
            pool.submit(fetch, cursor)
        running = len(cursors)
        try:
            while running:
                page = pages.get()
                if page is _DONE:
                    running -= 1
                elif isinstance(page, BaseException):
                    raise page
                else:
                    yield from page
        finally:
            stop.set()
            while running:  # let blocked fetchers finish
                if pages.get() is _DONE:
                    running -= 1


def _add_table_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("table", metavar="TABLE", help="table name")
    parser.add_argument(
        "--history-key",
        metavar="NAME",
        default="History",
        help="attribute holding each message's payload (default: History)",
    )


def _segments(value: str) -> int:
    number = int(value)
    if not 1 <= number <= 1000:
        raise argparse.ArgumentTypeError("must be between 1 and 1000")
    return number


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """Add ``show``, ``repair``, ``export``, ``import`` and ``stats``."""
    raw = argparse.RawDescriptionHelpFormatter

    show = subparsers.add_parser(
        "show",
        parents=[common],
        help="print one session as a readable transcript (or JSON)",
        description=describe(
            "Print SESSION's messages oldest first, one block per message: its type, name or"
            " tool call id, content and tool calls. --last N prints only the latest N (reading"
            f" about N items). A text longer than {SHOW_LIMIT:,} characters (a base64 image, a"
            " long document) shows its start and how many characters follow; --full prints"
            " everything. --json prints LangChain's message_to_dict form instead, always in full."
        ),
        epilog=example_epilog(
            "chathist show ChatEvents session-1",
            "chathist show ChatEvents session-1 --last 5",
            "chathist show ChatEvents session-1 --full",
            "chathist show ChatEvents session-1 --json > session-1.json",
        ),
        formatter_class=raw,
    )
    _add_table_options(show)
    show.add_argument("session", metavar="SESSION", help="session id")
    show.add_argument("--last", type=int, metavar="N", help="only the latest N messages")
    show.add_argument("--json", action="store_true", help="print a JSON list of message dicts")
    show.add_argument(
        "--full",
        action="store_true",
        help=f"print texts longer than {SHOW_LIMIT:,} characters in full",
    )
    show.set_defaults(func=run_show)

    repair = subparsers.add_parser(
        "repair",
        parents=[common],
        help="delete what interrupted writes and stray items left in sessions",
        description=describe(
            "Run repair() on each SESSION (event layout): delete the staged events of large"
            " writes that never committed (staged over --older-than seconds ago, default and"
            " minimum 3600), and items whose sort key no chathist write stores (a key such as"
            " '1' or one of 21 digits, which every read and write of the session meets and"
            " reports as CorruptHistoryError). Prints how many items each session lost."
        ),
        epilog=example_epilog("chathist repair ChatEvents session-1 session-2"),
        formatter_class=raw,
    )
    _add_table_options(repair)
    repair.add_argument("sessions", metavar="SESSION", nargs="+", help="session ids")
    repair.add_argument("--older-than", type=float, metavar="SECONDS", help="stage age")
    repair.set_defaults(func=run_repair)

    export = subparsers.add_parser(
        "export",
        parents=[common],
        help="write sessions as JSON lines (all sessions, or those named)",
        description=describe(
            'Write one JSON line per session to stdout (or --output): {"session_id": ...,'
            ' "messages": [message_to_dict, ...]}. Without SESSION arguments every session of'
            " the table is exported: a keys-only parallel Scan (--segments) finds them, and"
            " each is read like an application reads it. Empty (cleared) sessions are skipped."
            " Progress goes to stderr."
        ),
        epilog=example_epilog(
            "chathist export ChatEvents > all.jsonl",
            "chathist export ChatEvents session-1 session-2 > two.jsonl",
            "chathist export ChatEvents --segments 8 --output all.jsonl",
        ),
        formatter_class=raw,
    )
    _add_table_options(export)
    export.add_argument("sessions", metavar="SESSION", nargs="*", help="session ids (default: all)")
    export.add_argument("--output", "-o", metavar="FILE", help="write to FILE instead of stdout")
    export.add_argument(
        "--segments", type=_segments, default=4, metavar="N", help="parallel scan segments (4)"
    )
    export.set_defaults(func=run_export)

    import_ = subparsers.add_parser(
        "import",
        parents=[common],
        help="load sessions from an export file (lossless, resumable)",
        description=describe(
            "Append the sessions of FILE (JSON lines written by `chathist export`; - for stdin)"
            " to TABLE. Each session is written atomically (one add_messages call). The rule"
            " that makes a run resumable: if the target session already holds exactly the"
            " file's messages it is skipped; if it holds a prefix of them, only the rest is"
            " appended; if it is empty, everything is; if it holds anything else it is left"
            " alone and reported as a conflict (exit 1). Re-running an interrupted import"
            " therefore finishes it without duplicating a message."
        ),
        epilog=example_epilog(
            "chathist import ChatEvents all.jsonl",
            "chathist export OldTable | chathist import NewTable -",
            "chathist import ChatEvents all.jsonl --ttl 2592000   # messages expire in 30 days",
            "chathist import ChatEvents all.jsonl --kms-key-id alias/chat   # encrypted",
        ),
        formatter_class=raw,
    )
    _add_table_options(import_)
    import_.add_argument("file", metavar="FILE", help="JSON-lines file from `chathist export`")
    import_.add_argument(
        "--ttl", type=int, default=None, metavar="SECONDS", help="expire imported messages"
    )
    import_.add_argument(
        "--kms-key-id",
        metavar="KEY",
        help="client-side encryption: seal the imported messages with data keys from this KMS"
        " key (id, ARN or alias/NAME); event layout only",
    )
    import_.set_defaults(func=run_import)

    stats = subparsers.add_parser(
        "stats",
        parents=[common],
        help="count sessions, messages and bytes; find the largest session and the layout",
        description=describe(
            "Report the table's layout (events for a composite key, list for LangChain's"
            " hash-key-only tables), and for every session (or only SESSION): messages as an"
            " application reads them, items and stored bytes (DynamoDB's item-size rules: names"
            " and values, so about what the table is billed for), and the largest session."
            " Reads the whole table: a Scan, then each session."
        ),
        epilog=example_epilog(
            "chathist stats ChatEvents",
            "chathist stats ChatEvents session-1",
            "chathist stats ChatEvents --json | jq .largest_session",
        ),
        formatter_class=raw,
    )
    _add_table_options(stats)
    stats.add_argument("session", metavar="SESSION", nargs="?", help="only this session")
    stats.add_argument("--json", action="store_true", help="print the report as JSON")
    stats.add_argument(
        "--segments", type=_segments, default=4, metavar="N", help="parallel scan segments (4)"
    )
    stats.set_defaults(func=run_stats)


# -- show ---------------------------------------------------------------------------------------


def shorten(value: Any, limit: int | None) -> Any:
    """``value`` with every string longer than ``limit`` characters cut to its first ``limit``
    and a note of how many follow, in lists and dicts too (a base64 image in a content block);
    ``limit=None`` keeps everything."""
    if limit is None:
        return value
    if isinstance(value, str):
        if len(value) <= limit:
            return value
        return f"{value[:limit]}... ({len(value) - limit:,} more characters)"
    if isinstance(value, dict):
        return {key: shorten(item, limit) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [shorten(item, limit) for item in value]
    return value


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return json.dumps(content, ensure_ascii=False, indent=2)


def transcript(messages: Iterable[BaseMessage], limit: int | None = None) -> str:
    """A readable transcript: a header line per message, then its content indented; strings
    longer than ``limit`` characters are cut short (`shorten`)."""
    blocks = []
    for number, message in enumerate(messages, 1):
        label = f"[{number}] {message.type}"
        name = getattr(message, "name", None)
        if name:
            label += f" ({name})"
        tool_call_id = getattr(message, "tool_call_id", None)
        if tool_call_id:
            label += f" -> tool call {tool_call_id}"
        lines = [label]
        body = _text(shorten(message.content, limit))
        lines += ["    " + line for line in body.splitlines() or [""]]
        for call in getattr(message, "tool_calls", None) or []:
            arguments = json.dumps(shorten(call.get("args", {}), limit), ensure_ascii=False)
            lines.append(f"    tool call {call.get('id')}: {call.get('name')}({arguments})")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def run_show(args: argparse.Namespace) -> int:
    """Print one session."""
    if args.last is not None and args.last < 1:
        raise CommandError("--last must be at least 1")
    target = Target(args, args.table)
    messages = target.history(args.session, history_size=args.last).messages
    if args.json:
        json.dump(messages_to_dict(messages), sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
    elif messages:
        print(transcript(messages, None if args.full else SHOW_LIMIT))
    else:
        print(f"session {args.session!r} has no messages", file=sys.stderr)
    return EXIT_OK


def run_repair(args: argparse.Namespace) -> int:
    """Repair sessions."""
    target = Target(args, args.table)
    for session in args.sessions:
        deleted = target.history(session).repair(args.older_than)
        print(f"{session}: {deleted} items deleted")
    return EXIT_OK


# -- export -------------------------------------------------------------------------------------


def run_export(args: argparse.Namespace) -> int:
    """Write sessions as JSON lines."""
    target = Target(args, args.table)
    sessions = list(args.sessions) or target.session_ids(args.segments)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as out:
            return _export(target, sessions, out)
    return _export(target, sessions, sys.stdout)


def _export(target: Target, sessions: list[str], out: TextIO) -> int:
    progress = Progress("exporting", unit="sessions", total=len(sessions))
    written = messages = empty = 0
    for session_id in sessions:
        history = target.history(session_id)
        dicts = messages_to_dict(history.messages)
        if dicts:
            line = {"session_id": session_id, "messages": dicts}
            out.write(json.dumps(line, ensure_ascii=False, allow_nan=False) + "\n")
            written += 1
            messages += len(dicts)
        else:
            empty += 1
        progress.advance(extra=f"{messages} messages")
    out.flush()
    progress.finish()
    skipped = f", {empty} empty skipped" if empty else ""
    print(f"exported {written} sessions, {messages} messages{skipped}", file=sys.stderr)
    return EXIT_OK


# -- import -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportOutcome:
    """What importing one session does: append ``messages[start:]``, or nothing."""

    action: str  # "skip" | "append" | "conflict"
    start: int = 0


def _normal(dicts: list[dict[str, Any]]) -> list[Any]:
    """``dicts`` as JSON would give them back (tuples become lists...), for comparison."""
    normal: list[Any] = json.loads(json.dumps(dicts))
    return normal


def import_plan(stored: list[dict[str, Any]], wanted: list[dict[str, Any]]) -> ImportOutcome:
    """The resume rule: skip a session holding exactly ``wanted``, append the rest to one
    holding a prefix of it, and leave one holding anything else alone (a conflict)."""
    stored, wanted = _normal(stored), _normal(wanted)
    if stored == wanted:
        return ImportOutcome("skip", len(stored))
    if len(stored) < len(wanted) and wanted[: len(stored)] == stored:
        return ImportOutcome("append", len(stored))
    return ImportOutcome("conflict", len(stored))


@dataclass
class _Line:
    number: int
    session_id: str
    messages: list[dict[str, Any]] = field(default_factory=list)


def _read_lines(stream: TextIO, name: str) -> Iterator[_Line]:
    for number, text in enumerate(stream, 1):
        if not text.strip():
            continue
        where = f"{name}, line {number}"
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CommandError(f"{where}: not JSON ({exc.msg})") from exc
        if not isinstance(record, dict):
            raise CommandError(f"{where}: expected an object with session_id and messages")
        session_id, messages = record.get("session_id"), record.get("messages")
        if not isinstance(session_id, str) or not session_id:
            raise CommandError(f"{where}: session_id must be a non-empty string")
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise CommandError(f"{where}: messages must be a list of message dicts")
        yield _Line(number, session_id, messages)


def run_import(args: argparse.Namespace) -> int:
    """Load sessions from a JSON-lines file, resumably."""
    target = Target(args, args.table)
    if args.file == "-":
        return _import(target, sys.stdin, "<stdin>", args.ttl, args.kms_key_id)
    with open(args.file, encoding="utf-8") as stream:
        return _import(target, stream, args.file, args.ttl, args.kms_key_id)


def _import(
    target: Target, stream: TextIO, name: str, ttl: int | None, kms_key_id: str | None = None
) -> int:
    progress = Progress("importing", unit="sessions")
    counts = {"skip": 0, "append": 0, "conflict": 0}
    appended = 0
    for line in _read_lines(stream, name):
        try:
            incoming = messages_from_dict(line.messages)
        except (KeyError, TypeError, ValueError) as exc:
            raise CommandError(f"{name}, line {line.number}: not a message dict ({exc})") from exc
        history = target.history(line.session_id, ttl=ttl, kms_key_id=kms_key_id)
        outcome = import_plan(messages_to_dict(history.messages), line.messages)
        counts[outcome.action] += 1
        if outcome.action == "append":
            history.add_messages(incoming[outcome.start :])
            appended += len(incoming) - outcome.start
        elif outcome.action == "conflict":
            print(
                f"chathist: conflict: session {line.session_id!r} ({name}, line {line.number})"
                f" already holds {outcome.start} messages that are not a prefix of the file's"
                f" {len(line.messages)}; left unchanged",
                file=sys.stderr,
            )
        progress.advance(extra=f"{appended} messages written")
    progress.finish()
    print(
        f"imported {counts['append']} sessions ({appended} messages);"
        f" {counts['skip']} already complete; {counts['conflict']} conflicts",
        file=sys.stderr,
    )
    return EXIT_ERROR if counts["conflict"] else EXIT_OK


# -- stats --------------------------------------------------------------------------------------


@dataclass
class _SessionStats:
    items: int = 0
    bytes: int = 0
    messages: int = 0
    encrypted: int = 0


def run_stats(args: argparse.Namespace) -> int:
    """Report sessions, messages, bytes, the largest session and the layout."""
    target = Target(args, args.table)
    per_session: dict[str, _SessionStats] = {}
    if args.session:
        per_session[args.session] = _SessionStats()
        items: Iterable[dict[str, Any]] = target.session_items(args.session)
    else:
        items = target.scan(keys_only=False, segments=args.segments)
    progress = Progress(f"scanning {args.table}", unit="items")
    sealed = EventModel.get_attributes()["sealed"].attr_name
    for item in items:
        value = item[target.schema.hash_key]
        session_id = value.get("S") or next(iter(value.values()))
        stats = per_session.setdefault(session_id, _SessionStats())
        stats.items += 1
        stats.bytes += item_size(item)
        stats.encrypted += sealed in item and target.layout == "events"
        progress.advance(extra=f"{len(per_session)} sessions")
    progress.finish()
    progress = Progress("reading", unit="sessions", total=len(per_session))
    for session_id, stats in per_session.items():
        stats.messages = len(target.history(session_id).messages)
        progress.advance()
    progress.finish()
    report = _report(target, per_session)
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        print(_format_report(report))
    return EXIT_OK


def _report(target: Target, per_session: dict[str, _SessionStats]) -> dict[str, Any]:
    largest = max(per_session.items(), key=lambda kv: (kv[1].bytes, kv[0]), default=None)
    return {
        "table": target.table,
        "layout": target.layout,
        "key_schema": str(target.schema),
        "sessions": sum(1 for s in per_session.values() if s.messages),
        "empty_sessions": sum(1 for s in per_session.values() if not s.messages),
        "messages": sum(s.messages for s in per_session.values()),
        "items": sum(s.items for s in per_session.values()),
        "encrypted_items": sum(s.encrypted for s in per_session.values()),
        "bytes": sum(s.bytes for s in per_session.values()),
        "largest_session": None
        if largest is None
        else {
            "session_id": largest[0],
            "messages": largest[1].messages,
            "items": largest[1].items,
            "bytes": largest[1].bytes,
        },
    }


def _format_report(report: dict[str, Any]) -> str:
    lines = [
        f"table:           {report['table']}",
        f"layout:          {report['layout']} ({report['key_schema']})",
        f"sessions:        {report['sessions']:,}"
        + (f" (+{report['empty_sessions']:,} empty)" if report["empty_sessions"] else ""),
        f"messages:        {report['messages']:,}",
        f"items:           {report['items']:,}"
        + (f" ({report['encrypted_items']:,} encrypted)" if report["encrypted_items"] else ""),
        f"bytes:           {report['bytes']:,}",
    ]
    largest = report["largest_session"]
    if largest is not None:
        lines.append(
            f"largest session: {largest['session_id']} ({largest['bytes']:,} bytes,"
            f" {largest['messages']:,} messages, {largest['items']:,} items)"
        )
    return "\n".join(lines)
