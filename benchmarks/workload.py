"""Messages, sizes and small statistics shared by the scenarios."""

from __future__ import annotations

import base64
import random
import statistics
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

MESSAGE_CHARS = 300
_WORDS = [
    "table",
    "item",
    "write",
    "read",
    "session",
    "message",
    "event",
    "query",
    "page",
    "unit",
    "latency",
    "capacity",
    "history",
    "append",
    "model",
    "token",
    "answer",
    "question",
    "list",
]


@dataclass
class Sizes:
    """Every size a run uses; presets below, overridable with ``--sizes key=value``."""

    append: int = 1000
    """Scenario 1/2: messages appended one at a time per session."""
    points: list[int] = field(default_factory=lambda: [10, 100, 1000])
    """Scenario 1: append numbers reported (append N is always added)."""
    window: int = 9
    """Scenario 1: latency at append #i is the median over this many appends around i."""
    conversation: int = 900
    """Scenario 2: the conversation length of the WCU target."""
    read: list[int] = field(default_factory=lambda: [10000])
    """Scenarios 3/4: session lengths read."""
    history_size: int = 20
    """Scenario 3: the window."""
    populate_chunk: int = 20
    """Scenarios 3/4: messages per add_messages call when filling a session (a chat turn)."""
    window_reads: int = 30
    full_reads: int = 9
    batch: int = 100
    """Scenario 5: messages per add_messages call."""
    writers: int = 8
    per_writer: int = 25
    """Scenario 6: appends per writer thread."""
    large_mb: list[float] = field(default_factory=lambda: [1.0, 10.0])
    large_repeats: int = 2
    migrate_sessions: int = 50
    migrate_messages: int = 20
    async_sessions: list[int] = field(default_factory=lambda: [50, 200, 500])
    """Scenario 9: concurrent sessions (N) of each run."""
    async_appends: int = 20
    """Scenario 9: one-message appends per session before its window read."""
    async_delay_ms: float = 10.0
    """Scenario 9: latency the proxy adds to every request."""
    async_pools: list[int] = field(default_factory=lambda: [512])
    """Scenario 9: native async runs again with these many requests in flight (a gate and a pool
    of that size, to compare with chathist's ``aio.MAX_IN_FLIGHT``; a size equal to it is
    skipped)."""
    async_repeats: int = 1
    """Scenario 9: runs of every contender and N (medians over them; ratios paired by run)."""
    async_proxy_thread: int = 0
    """Scenario 9: 1 runs the proxy in a thread of the benchmark process instead of a process
    of its own (it then shares the GIL with the client it delays)."""
    repeats: int = 3
    """Repeats of scenarios 1, 2, 5 and 6 (medians over them)."""
    max_run_s: float = 60.0
    """Scenario 1: a contender whose append run took longer than this is not repeated
    (LangChain's class needs about 0.3 s per append near 1,000 messages)."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


PRESETS: dict[str, Sizes] = {
    "quick": Sizes(
        append=120,
        points=[10, 100],
        window=5,
        conversation=120,
        read=[300],
        window_reads=5,
        full_reads=3,
        batch=100,
        writers=8,
        per_writer=5,
        large_mb=[1.0],
        large_repeats=1,
        migrate_sessions=5,
        migrate_messages=10,
        async_sessions=[10, 30],
        async_appends=5,
        repeats=1,
    ),
    "default": Sizes(),
    "full": Sizes(
        append=5000,
        points=[10, 100, 1000],
        read=[10000, 50000],
        full_reads=9,
        per_writer=100,
        large_repeats=3,
        migrate_sessions=200,
        migrate_messages=50,
        repeats=5,
        max_run_s=1e9,
        async_repeats=3,
    ),
}


def parse_size_overrides(sizes: Sizes, overrides: Sequence[str]) -> Sizes:
    """Apply ``key=value`` overrides (lists comma-separated) to a copy of ``sizes``."""
    values = sizes.as_dict()
    for override in overrides:
        key, sep, text = override.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in values:
            known = ", ".join(values)
            raise SystemExit(
                f"--sizes: expected key=value with key one of {known}; got {override!r}"
            )
        current = values[key]
        if isinstance(current, list):
            kind = float if key == "large_mb" else int
            values[key] = [kind(v) for v in text.split(",") if v.strip()]
        elif isinstance(current, float):
            values[key] = float(text)
        else:
            values[key] = int(text)
    return Sizes(**values)


def text_of(length: int, rng: random.Random) -> str:
    """Plain words, ``length`` characters."""
    out: list[str] = []
    size = 0
    while size < length:
        word = rng.choice(_WORDS)
        out.append(word)
        size += len(word) + 1
    return " ".join(out)[:length]


def make_messages(count: int, *, chars: int = MESSAGE_CHARS, seed: int = 7) -> list[BaseMessage]:
    """``count`` messages of ``chars`` characters, human and AI in turn."""
    rng = random.Random(seed)
    messages: list[BaseMessage] = []
    for i in range(count):
        text = text_of(chars, rng)
        messages.append(HumanMessage(text) if i % 2 == 0 else AIMessage(text))
    return messages


def large_message(megabytes: float, seed: int = 11) -> BaseMessage:
    """A message of about ``megabytes`` MB of base64 text (zlib saves only about a quarter)."""
    rng = random.Random(seed)
    size = int(megabytes * 1024 * 1024)
    text = base64.b64encode(rng.randbytes(size * 3 // 4 + 3)).decode("ascii")[:size]
    return HumanMessage(text)


def session_id(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:10]}"


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def spread(values: Sequence[float]) -> dict[str, float | int | None]:
    """Median, quartiles, IQR and sample count."""
    if not values:
        return {"median": None, "q1": None, "q3": None, "iqr": None, "n": 0}
    if len(values) == 1:
        q1 = q3 = values[0]
    else:
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return {
        "median": statistics.median(values),
        "q1": q1,
        "q3": q3,
        "iqr": q3 - q1,
        "n": len(values),
    }


def describe_error(exc: BaseException) -> str:
    text = str(exc).replace("\n", " ")
    if len(text) > 240:
        text = text[:240] + "..."
    return f"{type(exc).__name__}: {text}"
