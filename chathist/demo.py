"""``make demo``: a LangChain conversation grows past DynamoDB's 400 KB item limit, and keeps going.

Starts DynamoDB Local (the embedded jar), creates a table, and chats through a LangChain chain
(a deterministic fake model behind ``RunnableWithMessageHistory``) until the session holds
``--target-kb`` of messages. Prints the append cost at the start and at the end, and where
LangChain's one-item list layout would have failed.

    python -m chathist.demo                 # ~1.5 MB
    python -m chathist.demo --target-kb 600
    CHATHIST_DEMO_TARGET_BYTES=600000 python -m chathist.demo
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

from langchain_core.messages import AIMessage, BaseMessage, message_to_dict

from chathist import DynamoDBChatMessageHistory, create_table
from chathist.core.sizes import ITEM_LIMIT
from chathist.local import DynamoDBLocal, use_local_credentials

__all__ = ["ITEM_LIMIT", "DemoResult", "list_layout_failure", "main", "run_demo"]

"""DynamoDB's largest item (400 KB), which LangChain's list layout puts a whole session in."""
TARGET_ENV = "CHATHIST_DEMO_TARGET_BYTES"
DEFAULT_TARGET_BYTES = 1_536_000
REPLY_BYTES = 10_000
WINDOW = 20
TABLE = "ChatEvents"
SESSION = "demo-session"
SAMPLE = 10

_WORDS = (
    "table",
    "partition",
    "item",
    "event",
    "sequence",
    "message",
    "session",
    "write",
    "read",
    "query",
    "page",
    "capacity",
    "append",
    "clear",
    "window",
    "tombstone",
    "commit",
    "fold",
    "order",
    "key",
    "sort",
    "hash",
    "retry",
    "batch",
    "limit",
    "chain",
    "model",
    "prompt",
    "reply",
    "token",
    "history",
    "latency",
    "throughput",
    "region",
    "endpoint",
    "local",
    "migrate",
)


def reply_text(turn: int, size: int = REPLY_BYTES) -> str:
    """A deterministic, long, not very compressible reply for ``turn``."""
    rng = random.Random(turn)
    words = [f"Answer {turn}:"]
    length = len(words[0])
    while length < size:
        word = rng.choice(_WORDS) + str(rng.randrange(1000))
        words.append(word)
        length += len(word) + 1
    return " ".join(words)[:size]


def message_bytes(message: BaseMessage) -> int:
    """Size of a message in LangChain's list layout (its ``message_to_dict`` as JSON)."""
    return len(json.dumps(message_to_dict(message), ensure_ascii=False).encode("utf-8"))


def list_layout_failure(sizes: Sequence[int], limit: int = ITEM_LIMIT) -> int | None:
    """The 1-based number of the message that pushes a one-item session over ``limit``."""
    total = 0
    for number, size in enumerate(sizes, 1):
        total += size
        if total > limit:
            return number
    return None


class MeasuredHistory(DynamoDBChatMessageHistory):
    """The chathist history, timing each append and the write units it consumed."""

    appends: list[tuple[float, float]]
    sizes: list[int]

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        self.sizes.extend(message_bytes(m) for m in messages)
        before = self.consumed_capacity.write_units
        started = time.perf_counter()
        super().add_messages(messages)
        elapsed = time.perf_counter() - started
        self.appends.append((elapsed, self.consumed_capacity.write_units - before))


@dataclass
class DemoResult:
    """What the demo measured."""

    turns: int = 0
    sizes: list[int] = field(default_factory=list)
    appends: list[tuple[float, float]] = field(default_factory=list)
    read_back: int = 0
    read_seconds: float = 0.0

    @property
    def stored_bytes(self) -> int:
        return sum(self.sizes)


def _chain(history: MeasuredHistory, turns: int) -> Callable[[int], None]:
    """A prompt | fake model chain with ``history`` behind RunnableWithMessageHistory."""
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
    from langchain_core.runnables.history import RunnableWithMessageHistory

    replies = iter([AIMessage(reply_text(turn)) for turn in range(1, turns + 1)])
    model = GenericFakeChatModel(messages=replies)
    prompt = ChatPromptTemplate.from_messages(
        [
            ("system", "You are a patient assistant."),
            MessagesPlaceholder("history"),
            ("human", "{question}"),
        ]
    )
    chain = RunnableWithMessageHistory(
        prompt | model,
        lambda session_id: history,
        input_messages_key="question",
        history_messages_key="history",
    )

    def ask(turn: int) -> None:
        question = f"Question {turn}: tell me more about DynamoDB item number {turn}."
        chain.invoke({"question": question}, config={"configurable": {"session_id": SESSION}})

    return ask


def run_demo(
    endpoint_url: str, target_bytes: int, say: Callable[[str], None] = print
) -> DemoResult:
    """Chat until the session holds ``target_bytes``; return the measurements."""
    create_table(TABLE, endpoint_url=endpoint_url)
    say(f"Table {TABLE} ready: one item per message (partition = session, sort key = seq).")
    history = MeasuredHistory(
        TABLE,
        SESSION,
        endpoint_url=endpoint_url,
        history_size=WINDOW,  # the prompt gets the latest 20 messages: a read of ~20 items
        compress_threshold=None,  # store raw JSON, so sizes compare 1:1 with LangChain's
    )
    history.appends, history.sizes = [], []
    _warm_up(endpoint_url)
    history.clear()
    max_turns = target_bytes // REPLY_BYTES + 2
    ask = _chain(history, max_turns)
    result = DemoResult(sizes=history.sizes, appends=history.appends)
    marks = iter(range(ITEM_LIMIT // 2, 10 * target_bytes, ITEM_LIMIT // 2))
    next_mark = next(marks)
    say(
        f"Chatting through RunnableWithMessageHistory until the session holds"
        f" {target_bytes / 1e6:.1f} MB:"
    )
    while result.stored_bytes < target_bytes:
        result.turns += 1
        ask(result.turns)
        if result.stored_bytes >= next_mark:
            say(
                f"  turn {result.turns:4d}: {len(result.sizes):4d} messages,"
                f" {result.stored_bytes / 1000:7.0f} KB stored,"
                f" last append {history.appends[-1][0] * 1000:5.1f} ms,"
                f" {history.appends[-1][1]:4.0f} WCU"
            )
            while next_mark <= result.stored_bytes:
                next_mark = next(marks)
    reader = DynamoDBChatMessageHistory(
        TABLE, SESSION, endpoint_url=endpoint_url, compress_threshold=None
    )
    started = time.perf_counter()
    result.read_back = len(reader.messages)
    result.read_seconds = time.perf_counter() - started
    return result


def _warm_up(endpoint_url: str, appends: int = 30) -> None:
    """Let the JVM of DynamoDB Local compile its hot paths, so the first turns time fairly."""
    warm = DynamoDBChatMessageHistory(TABLE, "warm-up", endpoint_url=endpoint_url)
    for turn in range(appends):
        warm.add_messages([AIMessage(reply_text(-turn))] * 2)
        warm.messages  # noqa: B018 - a read, for the same reason
    warm.clear()


def summary(result: DemoResult) -> list[str]:
    """The result lines: messages and bytes, cost flat, where the list layout fails."""
    first, last = result.appends[:SAMPLE], result.appends[-SAMPLE:]

    def median_ms(sample: list[tuple[float, float]]) -> float:
        return statistics.median(t for t, _ in sample) * 1000

    def mean_wcu(sample: list[tuple[float, float]]) -> float:
        return statistics.fmean(w for _, w in sample)

    lines = [
        f"chathist: {len(result.sizes)} messages, {result.stored_bytes:,} bytes stored"
        f" in one session, all {result.read_back} read back in {result.read_seconds:.2f} s.",
        f"  append (one turn = 2 messages), first {len(first)} turns:"
        f" {median_ms(first):.1f} ms median, {mean_wcu(first):.1f} WCU",
        f"  append (one turn = 2 messages), last {len(last)} turns: "
        f" {median_ms(last):.1f} ms median, {mean_wcu(last):.1f} WCU"
        "  <- no growth: an append writes only the new items",
    ]
    failed_at = list_layout_failure(result.sizes)
    if failed_at is None:
        lines.append(
            f"LangChain's list layout (one item per session) would still fit:"
            f" {result.stored_bytes:,} bytes <= {ITEM_LIMIT:,}. Try a larger --target-kb."
        )
    else:
        before = sum(result.sizes[: failed_at - 1])
        lines += [
            f"LangChain's list layout (one item per session) would have failed at message"
            f" {failed_at} (turn {math.ceil(failed_at / 2)}): the item would grow past"
            f" {ITEM_LIMIT:,} bytes (400 KB).",
            f"  by then each of its appends rewrote the whole list: ~{math.ceil(before / 1024)}"
            f" WCU per append, and every message after that would have been refused.",
        ]
    return lines


NEXT_STEPS = """\
Where to look next:
  README.md            usage in five lines; the drop-in constructor
  docs/design.md       the item layout, what each operation costs
  docs/migration.md    moving an existing LangChain table, step by step
  docs/comparison.md   chathist vs LangChain's class, claim by claim, with the tests
  chathist --help      local, create-table, show, export, import, stats, migrate
  chathist local       a DynamoDB Local of your own to try it on"""


def _target_bytes(args: argparse.Namespace) -> int:
    if args.target_kb is not None:
        return int(args.target_kb * 1000)
    configured = os.environ.get(TARGET_ENV)
    return int(configured) if configured else DEFAULT_TARGET_BYTES


def main(argv: list[str] | None = None) -> int:
    """Run the demo; return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m chathist.demo", description=__doc__)
    parser.add_argument(
        "--target-kb",
        type=float,
        default=None,
        help=f"grow the session to this many KB (default {DEFAULT_TARGET_BYTES // 1000};"
        f" or ${TARGET_ENV} in bytes)",
    )
    parser.add_argument(
        "--endpoint-url", default=None, help="use this DynamoDB instead of starting one"
    )
    args = parser.parse_args(argv)
    target = _target_bytes(args)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=PendingDeprecationWarning)
    use_local_credentials()

    print("chathist demo: a LangChain chat session grows past DynamoDB's 400 KB item limit.")
    started = time.perf_counter()
    server: AbstractContextManager[object]
    if args.endpoint_url:
        server, endpoint = nullcontext(), args.endpoint_url
        print(f"Using DynamoDB at {endpoint}.")
    else:
        local = DynamoDBLocal()
        server = local
        print("Starting DynamoDB Local (embedded jar, in memory) ...", flush=True)
    with server:
        if not args.endpoint_url:
            endpoint = local.endpoint_url
            print(f"  {endpoint} up in {time.perf_counter() - started:.1f} s.")
        result = run_demo(endpoint, target, say=lambda line: print(line, flush=True))
        for line in summary(result):
            print(line)
    print(f"Done in {time.perf_counter() - started:.1f} s (DynamoDB Local stopped).")
    print(NEXT_STEPS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
