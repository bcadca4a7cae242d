"""The eight scenarios. Each takes the contenders and the sizes and returns plain data (JSON)."""

from __future__ import annotations

import cProfile
import importlib.util
import io
import pstats
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from langchain_core.messages import BaseMessage

from benchmarks.contenders import Chathist, Contender, Handle
from benchmarks.meter import Usage
from benchmarks.workload import (
    Sizes,
    describe_error,
    large_message,
    make_messages,
    median,
    session_id,
    spread,
)

Log = Callable[[str], None]
T = TypeVar("T")
BATCHED = "@batched"
"""Key suffix of the reads of a session written in ``Sizes.batch``-message calls."""
RAW_KEY = "raw-boto3"


def usage_dict(usage: Usage, per: int = 1) -> dict[str, float]:
    per = max(per, 1)
    return {
        "rcu": usage.read_units / per,
        "wcu": usage.wcu / per,
        "wcu_reported": usage.write_units / per,
        "requests": usage.requests / per,
        "items": usage.items / per,
        "conflicts": usage.conflicts / per,
    }


def rotated(items: Sequence[T], turn: int) -> list[T]:
    """``items`` in a different order each turn, so none always runs first."""
    shift = turn % len(items) if items else 0
    return list(items[shift:]) + list(items[:shift])


def warm_up(contenders: Sequence[Contender], log: Log) -> None:
    """Warm the JVM and the connection pools; nothing is recorded."""
    messages = make_messages(60, seed=1)
    for contender in contenders:
        handle = contender.open(session_id("warmup"))
        for message in messages:
            handle.add([message])
        for _ in range(5):
            handle.read()
        contender.open(session_id("warmup"), history_size=20).read()
    log("warm-up done")


# -- 1 and 2: appends one at a time ----------------------------------------------------------


class AppendRun:
    """One contender appending to one new session, one message at a time, until it fails."""

    def __init__(self, contender: Contender) -> None:
        self.contender = contender
        self.handle = contender.open(session_id("append"))
        self.latency: list[float] = []
        self.wcu: list[float] = []
        self.rcu: list[float] = []
        self.failed: dict[str, Any] | None = None
        self.busy_s = 0.0

    def append(self, number: int, message: BaseMessage) -> None:
        if self.failed is not None:
            return
        before = self.contender.usage()
        start = time.perf_counter()
        try:
            self.handle.add([message])
        except Exception as exc:
            self.failed = {
                "at": number,
                "error": describe_error(exc),
                "wcu_of_last_append": self.wcu[-1] if self.wcu else None,
            }
            return
        elapsed = time.perf_counter() - start
        used = self.contender.usage() - before
        self.busy_s += elapsed
        self.latency.append(elapsed * 1000)
        self.wcu.append(used.wcu)
        self.rcu.append(used.read_units)

    def result(self) -> dict[str, Any]:
        return {
            "latency_ms": self.latency,
            "wcu": self.wcu,
            "rcu": self.rcu,
            "failed": self.failed,
            "busy_s": self.busy_s,
        }


def window_bounds(point: int, reached: int, width: int) -> tuple[int, int] | None:
    """1-based inclusive bounds of a window of ``width`` appends around append ``point``."""
    if point > reached:
        return None
    low = max(1, point - width // 2)
    high = min(reached, low + width - 1)
    low = max(1, high - width + 1)
    return low, high


def append_scaling(contenders: Sequence[Contender], sizes: Sizes, log: Log) -> dict[str, Any]:
    messages = make_messages(sizes.append)
    runs: dict[str, list[dict[str, Any]]] = {c.key: [] for c in contenders}
    slow: dict[str, float] = {}
    for turn in range(sizes.repeats):
        # Lockstep: append #i of every contender before append #i+1 of any, so all see the
        # same machine load at the same history length; the order rotates with i, so each
        # contender follows each other one equally often (a 400 KB rewrite keeps DynamoDB
        # Local busy for a moment after it returns).
        active = [AppendRun(c) for c in contenders if c.key not in slow]
        if not active:
            break
        for number, message in enumerate(messages, 1):
            for run in rotated(active, number + turn):
                run.append(number, message)
        for run in active:
            key = run.contender.key
            runs[key].append(run.result())
            if run.busy_s > sizes.max_run_s:
                slow[key] = run.busy_s
            where = f" (failed at #{run.failed['at']})" if run.failed else ""
            log(
                f"  1/2 append {key} repeat {turn + 1}: {len(run.latency)}{where},"
                f" {run.busy_s:.1f} s in appends"
            )
    points = sorted({*(p for p in sizes.points if p < sizes.append), sizes.append})
    result: dict[str, Any] = {"points": points, "window": sizes.window, "contenders": {}}
    for contender in contenders:
        result["contenders"][contender.key] = summarize_appends(
            runs[contender.key], points, sizes.window
        )
        if contender.key in slow:
            result["contenders"][contender.key]["note"] = (
                f"one run only: it took {slow[contender.key]:.0f} s (> max_run_s ="
                f" {sizes.max_run_s:g} s)"
            )
    return result


def summarize_appends(runs: list[dict[str, Any]], points: list[int], width: int) -> dict[str, Any]:
    at: dict[str, Any] = {}
    for point in points:
        latency: list[float] = []
        wcu: list[float] = []
        rcu: list[float] = []
        for run in runs:
            bounds = window_bounds(point, len(run["latency_ms"]), width)
            if bounds is None:
                continue
            low, high = bounds
            latency += run["latency_ms"][low - 1 : high]
            wcu += run["wcu"][low - 1 : high]
            rcu += run["rcu"][low - 1 : high]
        at[str(point)] = {
            "latency_ms": spread(latency),
            "wcu": median(wcu),
            "rcu": median(rcu),
            "wcu_exact": run_values_at(runs, point, "wcu"),
        }
    failures = [run["failed"] for run in runs if run["failed"]]
    steady = [x for run in runs for x in run["latency_ms"][5:]]
    return {
        "at": at,
        "all_appends_latency_ms": spread(steady),
        "reached": [len(run["latency_ms"]) for run in runs],
        "failures": failures,
        "runs": runs,
    }


def run_values_at(runs: list[dict[str, Any]], point: int, key: str) -> list[float]:
    return [run[key][point - 1] for run in runs if len(run[key]) >= point]


def conversation_cost(append: dict[str, Any], sizes: Sizes) -> dict[str, Any]:
    """Scenario 2, from scenario 1's appends: cumulative time and capacity of a conversation."""
    target = sizes.conversation
    result: dict[str, Any] = {"conversation": target, "contenders": {}}
    for key, data in append["contenders"].items():
        totals = []
        for run in data["runs"]:
            reached = len(run["latency_ms"])
            upto = min(reached, target)
            totals.append(
                {
                    "messages": reached,
                    "wall_s": sum(run["latency_ms"]) / 1000,
                    "wcu": sum(run["wcu"]),
                    "rcu": sum(run["rcu"]),
                    "failed_at": run["failed"]["at"] if run["failed"] else None,
                    "conversation_reached": reached >= target,
                    "conversation_wall_s": sum(run["latency_ms"][:upto]) / 1000,
                    "conversation_wcu": sum(run["wcu"][:upto]),
                    "conversation_rcu": sum(run["rcu"][:upto]),
                }
            )
        summary: dict[str, Any] = {
            name: median([t[name] for t in totals]) for name in ("messages", "wall_s", "wcu", "rcu")
        }
        reached_all = all(t["conversation_reached"] for t in totals) and bool(totals)
        for name in ("conversation_wall_s", "conversation_wcu", "conversation_rcu"):
            summary[name] = median([t[name] for t in totals]) if reached_all else None
        summary["failed_at"] = [t["failed_at"] for t in totals if t["failed_at"]]
        result["contenders"][key] = {"summary": summary, "runs": totals}
    return result


# -- 3 and 4: reads ---------------------------------------------------------------------------


def populate(contender: Contender, count: int, chunk: int) -> tuple[str, int, str | None]:
    """A new session with up to ``count`` messages, added ``chunk`` at a time (one
    ``add_messages`` call each); stops at the first failure."""
    session = session_id("read")
    handle = contender.open(session)
    messages = make_messages(count, seed=3)
    stored = 0
    for low in range(0, count, chunk):
        part = messages[low : low + chunk]
        try:
            handle.add(part)
        except Exception as exc:
            return session, stored, describe_error(exc)
        stored += len(part)
    return session, stored, None


@dataclass
class ReadTarget:
    """One populated session of one contender, and what reading it cost."""

    contender: Contender
    key: str
    session: str
    stored: int
    note: str | None
    latency: list[float] = field(default_factory=list)
    used: Usage = field(default_factory=Usage)
    returned: int = 0

    def read(self, handle: Handle) -> None:
        before = self.contender.usage()
        start = time.perf_counter()
        self.returned = len(handle.read())
        self.latency.append((time.perf_counter() - start) * 1000)
        self.used = self.used + (self.contender.usage() - before)


def interleaved_reads(
    targets: list[ReadTarget], rounds: int, history_size: int | None
) -> dict[str, dict[str, Any]]:
    """Read every target once per round, in turn (so all share the machine's load), and
    compare each round's time with the raw loop's time in the same round."""
    handles = [t.contender.open(t.session, history_size=history_size) for t in targets]
    for target, handle in zip(targets, handles, strict=True):
        target.latency, target.used = [], Usage()
        handle.read()  # first read: describe_table, connection set-up
    for turn in range(rounds):
        order = list(zip(targets, handles, strict=True))
        order = order[turn % len(order) :] + order[: turn % len(order)]
        for target, handle in order:
            target.read(handle)
    raw = next((t for t in targets if t.key == RAW_KEY), None)
    out: dict[str, dict[str, Any]] = {}
    for target, handle in zip(targets, handles, strict=True):
        lat = spread(target.latency)
        paired = (
            [a / b for a, b in zip(target.latency, raw.latency, strict=True) if b]
            if raw is not None and raw.stored == target.stored
            else []
        )
        entry: dict[str, Any] = {
            "stored": target.stored,
            "note": target.note,
            "messages_returned": target.returned,
            "latency_ms": lat,
            "messages_per_s": target.returned / (lat["median"] / 1000) if lat["median"] else None,
            "per_read": usage_dict(target.used, rounds),
            "vs_raw_paired": spread(paired),
        }
        if history_size is None:
            entry["profile"] = profile_read(handle)
        out[target.key] = entry
    return out


PROFILED = {
    "chathist EventItems.to_event (attribute map -> Event)": (
        "chathist/dynamo/items.py",
        "to_event",
    ),
    "chathist fold (TailFold.feed)": ("chathist/core/fold.py", "feed"),
    "chathist.core.codec.decode_message": ("chathist/core/codec.py", "decode_message"),
    "botocore request + response parsing (_make_api_call)": (
        "botocore/client.py",
        "_make_api_call",
    ),
    "  botocore response parsing (ResponseParser.parse)": ("botocore/parsers.py", "parse"),
    "langchain messages_from_dict": ("langchain_core/messages/utils.py", "messages_from_dict"),
}


def profile_read(handle: Handle, top: int = 12) -> dict[str, Any]:
    """Where a full read spends its time (cProfile): the top functions by own time, and the
    cumulative time of the steps of chathist's read path."""
    profiler = cProfile.Profile()
    profiler.enable()
    handle.read()
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    lines = [line.rstrip() for line in out.getvalue().splitlines()]
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    total = stats.total_tt  # type: ignore[attr-defined]
    table: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    steps: dict[str, float] = {}
    for label, (path, name) in PROFILED.items():
        steps[label] = sum(
            row[3]
            for (file, _, func), row in table.items()
            if func == name and file.replace("\\", "/").endswith(path)
        )
    return {
        "total_s": total,
        "cumulative_s": steps,
        "share": {label: (value / total if total else None) for label, value in steps.items()},
        "top_by_own_time": [line for line in lines[start:] if line.strip()],
    }


def reads(contenders: Sequence[Contender], sizes: Sizes, log: Log) -> dict[str, Any]:
    """Scenarios 3 (window of ``history_size``) and 4 (everything) on sessions of each size,
    written ``populate_chunk`` messages per call; chathist's event layout also on a session
    written ``batch`` messages per call (staged writes and commit events)."""
    window: dict[str, Any] = {"history_size": sizes.history_size, "sizes": {}}
    full: dict[str, Any] = {
        "sizes": {},
        "populate_chunk": sizes.populate_chunk,
        "batched_chunk": sizes.batch,
    }
    for length in sizes.read:
        windows = window["sizes"][str(length)] = {}
        fulls = full["sizes"][str(length)] = {}
        full_reads = sizes.full_reads if length <= 10000 else max(2, sizes.full_reads // 2)
        variants = [(c, sizes.populate_chunk, c.key) for c in contenders]
        variants += [
            (c, sizes.batch, f"{c.key}{BATCHED}")
            for c in contenders
            if isinstance(c, Chathist) and c.layout is None
        ]
        targets: list[ReadTarget] = []
        for contender, chunk, key in variants:
            start = time.perf_counter()
            session, stored, error = populate(contender, length, chunk)
            log(
                f"  3/4 populated {key}: {stored}/{length} messages, {chunk} per call, in"
                f" {time.perf_counter() - start:.1f} s" + (f" ({error})" if error else "")
            )
            note = None if stored == length else f"holds only {stored} messages: {error}"
            if stored == 0:
                windows[key] = fulls[key] = {"stored": 0, "note": note}
                continue
            targets.append(ReadTarget(contender, key, session, stored, note))
        windows.update(interleaved_reads(targets, sizes.window_reads, sizes.history_size))
        log(f"  3 window reads of {length} done")
        fulls.update(interleaved_reads(targets, full_reads, None))
        log(f"  4 full reads of {length} done")
    return {"window": window, "full": full}


# -- 5: one add_messages of many messages ----------------------------------------------------


def batch_append(contenders: Sequence[Contender], sizes: Sizes, log: Log) -> dict[str, Any]:
    messages = make_messages(sizes.batch, seed=5)
    repeats = max(5, sizes.repeats)
    samples: dict[str, list[tuple[float, Usage]]] = {c.key: [] for c in contenders}
    errors: dict[str, str] = {}
    for turn in range(repeats):
        for contender in rotated(contenders, turn):
            if contender.key in errors:
                continue
            handle = contender.open(session_id("batch"))
            before = contender.usage()
            start = time.perf_counter()
            try:
                handle.add(messages)
            except Exception as exc:
                errors[contender.key] = describe_error(exc)
                continue
            elapsed = (time.perf_counter() - start) * 1000
            samples[contender.key].append((elapsed, contender.usage() - before))
    result: dict[str, Any] = {"batch": sizes.batch, "contenders": {}}
    for contender in contenders:
        got = samples[contender.key]
        total = Usage()
        for _, used in got:
            total = total + used
        result["contenders"][contender.key] = {
            "latency_ms": spread([lat for lat, _ in got]),
            "per_call": usage_dict(total, len(got)),
            "error": errors.get(contender.key),
        }
    log("  5 batch append done")
    return result


# -- 6: concurrent writers on one session -----------------------------------------------------


def concurrent_run(contender: Contender, sizes: Sizes) -> dict[str, Any]:
    session = session_id("concurrent")
    handles = [contender.open(session) for _ in range(sizes.writers)]
    batches = [make_messages(sizes.per_writer, seed=100 + w) for w in range(sizes.writers)]
    barrier = threading.Barrier(sizes.writers + 1)
    done = [0] * sizes.writers
    errors: list[str] = []

    def write(index: int) -> None:
        barrier.wait()
        for message in batches[index]:
            try:
                handles[index].add([message])
            except Exception as exc:
                errors.append(describe_error(exc))
                return
            done[index] += 1

    threads = [threading.Thread(target=write, args=(i,)) for i in range(sizes.writers)]
    for thread in threads:
        thread.start()
    before = contender.usage()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    used = contender.usage() - before
    appended = sum(done)
    stored = len(contender.open(session).read())
    return {
        "appended": appended,
        "stored": stored,
        "lost": appended - stored,
        "wall_s": wall,
        "appends_per_s": appended / wall if wall else None,
        "usage": usage_dict(used),
        "errors": errors[:3],
    }


def concurrency(contenders: Sequence[Contender], sizes: Sizes, log: Log) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {c.key: [] for c in contenders}
    for turn in range(sizes.repeats):
        for contender in rotated(contenders, turn):
            runs[contender.key].append(concurrent_run(contender, sizes))
    result: dict[str, Any] = {
        "writers": sizes.writers,
        "per_writer": sizes.per_writer,
        "contenders": {},
    }
    for contender in contenders:
        got = runs[contender.key]
        result["contenders"][contender.key] = {
            "appends_per_s": spread([r["appends_per_s"] for r in got if r["appends_per_s"]]),
            "conflicts": median([r["usage"]["conflicts"] for r in got]),
            "lost": median([r["lost"] for r in got]),
            "wcu": median([r["usage"]["wcu"] for r in got]),
            "runs": got,
        }
    log("  6 concurrency done")
    return result


# -- 7: migration -------------------------------------------------------------------------------


def migration_available() -> bool:
    return importlib.util.find_spec("chathist.bulk") is not None


def migration(
    contenders: Sequence[Contender], sizes: Sizes, endpoint: str, region: str, log: Log
) -> dict[str, Any]:
    """Migration throughput, if this chathist has a migration module (see `benchmarks.migrate`)."""
    if not migration_available():
        return {
            "available": False,
            "note": "chathist.bulk is not in this checkout: not measured",
        }
    from benchmarks.migrate import migration_throughput

    return migration_throughput(contenders, sizes, endpoint, region, log)


# -- 8: large messages ------------------------------------------------------------------------


def large_messages(contenders: Sequence[Contender], sizes: Sizes, log: Log) -> dict[str, Any]:
    result: dict[str, Any] = {"sizes": {}}
    for megabytes in sizes.large_mb:
        message = large_message(megabytes)
        per: dict[str, Any] = {}
        for contender in contenders:
            writes: list[float] = []
            reads_ms: list[float] = []
            write_use = Usage()
            read_use = Usage()
            error = None
            for _ in range(sizes.large_repeats):
                session = session_id("large")
                handle = contender.open(session)
                before = contender.usage()
                start = time.perf_counter()
                try:
                    handle.add([message])
                except Exception as exc:
                    error = describe_error(exc)
                    break
                writes.append((time.perf_counter() - start) * 1000)
                middle = contender.usage()
                write_use = write_use + (middle - before)
                reader = contender.open(session)
                start = time.perf_counter()
                got = reader.read()
                reads_ms.append((time.perf_counter() - start) * 1000)
                read_use = read_use + (contender.usage() - middle)
                if len(got) != 1 or got[0].content != message.content:
                    error = "read back a different message"
                    break
            per[contender.key] = {
                "write_ms": spread(writes),
                "read_ms": spread(reads_ms),
                "write": usage_dict(write_use, len(writes)),
                "read": usage_dict(read_use, len(reads_ms)),
                "error": error,
            }
            log(f"  8 large {megabytes:g} MB {contender.key}: " + (error or "ok"))
        result["sizes"][f"{megabytes:g}"] = per
    return result
