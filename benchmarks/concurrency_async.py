"""Scenario 9: many sessions at once, through a 10 ms proxy: native asyncio vs the executor vs
threads.

Each of N sessions does what a chat server does per turn, ``appends`` times: a new history
object (as ``RunnableWithMessageHistory`` makes one per call) appends one message; then a new
history object with ``history_size = window`` reads the window. Every request goes through a
`LoopbackProxy` that adds ``delay_ms`` to it, as a round trip to the service would. Three ways of
running the N sessions at once, one after the other on the same DynamoDB Local:

- ``native-async``: one event loop, N coroutines, chathist's ``aadd_messages`` /
  ``aget_messages`` (aiobotocore).
- ``executor``: the same coroutines on `ExecutorHistory`, whose async methods are LangChain's
  defaults (the sync call in the loop's default executor), i.e. chathist without native async.
- ``sync-threads``: N threads, one per session, on the sync API.

Per contender and N: calls per second, p50 and p99 latency of a call as its caller saw it
(queueing for an executor thread or a connection included), the WCU, RCU and requests chathist
metered (a `CapacityMeter` shared by the run's histories), connections the proxy saw, and a
check that every session's window read returned exactly the messages it appended.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import statistics
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from botocore import xform_name
from botocore.config import Config
from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import BaseMessage, messages_from_dict

import chathist
from benchmarks.contenders import encode, raw_item
from benchmarks.workload import Sizes, describe_error, make_messages, session_id
from chathist.dynamo import aio
from chathist.dynamo.client import CLIENT_CONFIG
from tests.loopback_proxy import LoopbackProxy, ProxyStats

Log = Callable[[str], None]

NATIVE: Final = "native-async"
EXECUTOR: Final = "executor"
THREADS: Final = "sync-threads"
RAW: Final = "raw-aiobotocore"
LABELS: Final = {
    NATIVE: "native async (aiobotocore)",
    EXECUTOR: "executor default (LangChain's)",
    THREADS: "sync threads",
    RAW: "raw aiobotocore, no chathist (the ceiling)",
}
WARM_UP_SESSIONS: Final = 100
WARM_UP_APPENDS: Final = 10
TICKS_PER_S: Final = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class ExecutorHistory(chathist.DynamoDBChatMessageHistory):
    """chathist's history with LangChain's default async methods: each runs the sync one in
    the running loop's default executor (``run_in_executor(None, ...)``), which is what any
    history without native async does."""

    aget_messages = BaseChatMessageHistory.aget_messages  # type: ignore[assignment]
    aadd_messages = BaseChatMessageHistory.aadd_messages  # type: ignore[assignment]
    aclear = BaseChatMessageHistory.aclear  # type: ignore[assignment]


def default_executor_workers() -> int:
    """The worker count of asyncio's default executor (`concurrent.futures.ThreadPoolExecutor`'s
    default, Python 3.8 to 3.12)."""
    return min(32, (os.cpu_count() or 1) + 4)


@dataclass
class Setting:
    """Where the histories of one run live and what they share."""

    table: str
    endpoint_url: str
    region: str
    window: int
    server_pid: int | None = None
    """DynamoDB Local's process, for its CPU time (None: not measured)."""
    meter: chathist.CapacityMeter = field(default_factory=chathist.CapacityMeter)

    def history(
        self, session: str, *, window: bool = False, executor: bool = False
    ) -> chathist.DynamoDBChatMessageHistory:
        """A new history object for one call."""
        kind = ExecutorHistory if executor else chathist.DynamoDBChatMessageHistory
        return kind(
            self.table,
            session,
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            history_size=self.window if window else None,
            capacity_meter=self.meter,
        )


@dataclass
class Calls:
    """What the timed part of one run recorded (appended to from many threads)."""

    append_ms: list[float] = field(default_factory=list)
    read_ms: list[float] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    """Sessions whose window read was not the messages they appended."""
    errors: list[str] = field(default_factory=list)

    def check(self, session: str, got: Sequence[BaseMessage], want: Sequence[BaseMessage]) -> None:
        if [m.content for m in got] != [m.content for m in want]:
            self.wrong.append(session)


def machine_ticks() -> tuple[int, int] | None:
    """Busy and total CPU ticks of the whole machine so far, all cores (Linux; else None)."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(x) for x in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def server_pid(port: int) -> int | None:
    """The process id of the DynamoDB Local serving ``port`` (chathist.local's command line
    names it: ``-port <port>``), or None (not Linux, not found)."""
    want = f"-port\0{port}\0".encode()
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            line = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"DynamoDBLocal" in line and want in line:
            return int(entry.name)
    return None


def process_ticks(pid: int | None) -> int | None:
    """CPU ticks (user + system) process ``pid`` has used so far."""
    if pid is None:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of the line)


class Turnstile:
    """Marks the start of the timed part: the clock, CPU times, meter and proxy counts."""

    def __init__(self, setting: Setting, proxy: LoopbackProxy) -> None:
        self.setting = setting
        self.proxy = proxy
        self.started = 0.0
        self.cpu = 0.0
        self.ticks: tuple[int, int] | None = None
        self.server_ticks: int | None = None

    def start(self) -> None:
        self.setting.meter.reset()
        self.proxy.reset()
        self.ticks = machine_ticks()
        self.server_ticks = process_ticks(self.setting.server_pid)
        self.cpu = time.process_time()
        self.started = time.perf_counter()

    def result(self, calls: Calls, sessions: int) -> dict[str, Any]:
        wall = time.perf_counter() - self.started
        cpu = time.process_time() - self.cpu
        ticks, before = machine_ticks(), self.ticks
        server, server_before = process_ticks(self.setting.server_pid), self.server_ticks
        stats = self.proxy.reset()
        used = self.setting.meter.total
        found = summarize(calls, sessions, wall, cpu, used, stats)
        found["machine_busy"] = None
        if ticks is not None and before is not None and ticks[1] > before[1]:
            found["machine_busy"] = (ticks[0] - before[0]) / (ticks[1] - before[1])
        found["server_cpu_cores"] = None
        if server is not None and server_before is not None and wall:
            found["server_cpu_cores"] = (server - server_before) / TICKS_PER_S / wall
        found["proxy"]["cpu_cores"] = stats.cpu_s / wall if wall else None
        return found


def summarize(
    calls: Calls,
    sessions: int,
    wall: float,
    cpu: float,
    used: chathist.Capacity,
    stats: ProxyStats,
) -> dict[str, Any]:
    every = calls.append_ms + calls.read_ms
    done = len(every)
    return {
        "sessions": sessions,
        "calls": done,
        "wall_s": wall,
        "calls_per_s": done / wall if wall else None,
        "latency_ms": percentiles(every),
        "append_ms": percentiles(calls.append_ms),
        "read_ms": percentiles(calls.read_ms),
        "wcu": used.write_units,
        "rcu": used.read_units,
        "requests": used.requests,
        "process_cpu_s": cpu,
        "process_cpu_ms_per_call": cpu * 1000 / done if done else None,
        "process_cpu_cores": cpu / wall if wall else None,
        "proxy": {
            "connections": stats.connections,
            "peak_open": stats.peak_open,
            "refused": stats.refused,
            "chunks": stats.chunks,
            "added_ms": percentiles(stats.added_ms),
            "cpu_s": stats.cpu_s,
        },
        "wrong_sessions": len(calls.wrong),
        "errors": len(calls.errors),
        "first_errors": calls.errors[:3],
    }


def percentiles(values: Sequence[float]) -> dict[str, float | int | None]:
    """p50, p99 and max of ``values`` (ms), and how many."""
    if not values:
        return {"p50": None, "p99": None, "max": None, "n": 0}
    cuts = statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else []
    return {
        "p50": statistics.median(values),
        "p99": cuts[98] if cuts else values[0],
        "max": max(values),
        "n": len(values),
    }


# -- the async contenders ---------------------------------------------------------------------


class Gate:
    """Every coroutine warms up, then all start together when the run opens the gate."""

    def __init__(self, parties: int) -> None:
        self.parties = parties
        self.arrived = 0
        self.all_arrived = asyncio.Event()
        self.opened = asyncio.Event()

    async def pass_through(self) -> None:
        self.arrived += 1
        if self.arrived == self.parties:
            self.all_arrived.set()
        await self.opened.wait()


async def async_session(
    setting: Setting,
    session: str,
    messages: Sequence[BaseMessage],
    calls: Calls,
    gate: Gate,
    executor: bool,
) -> None:
    """One session's turns, after an untimed first read (connections, the executor's threads)
    and the gate."""
    try:
        await setting.history(session, window=True, executor=executor).aget_messages()
    except Exception as exc:
        calls.errors.append(f"warm-up: {describe_error(exc)}")
    await gate.pass_through()
    try:
        for message in messages:
            history = setting.history(session, executor=executor)
            await timed(calls.append_ms, history.aadd_messages([message]))
        reader = setting.history(session, window=True, executor=executor)
        got: list[BaseMessage] = await timed(calls.read_ms, reader.aget_messages())
    except Exception as exc:
        calls.errors.append(describe_error(exc))
        return
    calls.check(session, got, messages[-setting.window :])


async def timed(into: list[float], call: Awaitable[Any]) -> Any:
    start = time.perf_counter()
    result = await call
    into.append((time.perf_counter() - start) * 1000)
    return result


async def async_run(
    setting: Setting, proxy: LoopbackProxy, sessions: int, appends: int, executor: bool
) -> dict[str, Any]:
    """N coroutines in this loop: warm up, open the gate, time until the last one is done."""
    calls = Calls()
    gate = Gate(sessions)
    turnstile = Turnstile(setting, proxy)
    messages = make_messages(appends, seed=9)
    tasks = [
        asyncio.create_task(
            async_session(setting, session_id(f"s{sessions}"), messages, calls, gate, executor)
        )
        for _ in range(sessions)
    ]
    await gate.all_arrived.wait()
    turnstile.start()
    gate.opened.set()
    await asyncio.gather(*tasks)
    result = turnstile.result(calls, sessions)
    await chathist.aclose_clients()
    return result


# -- the ceiling: raw aiobotocore ------------------------------------------------------------------


class RawAsync:
    """The same turns written by hand on one aiobotocore client, configured and gated as
    chathist's native client is (``aio.MAX_IN_FLIGHT`` connections behind a fair semaphore) and
    metered the same way (the run's `CapacityMeter` records each response): what any library on
    aiobotocore pays at the least. An append is what a new history object does: a ``Query`` for
    the newest key, then a conditional ``PutItem`` of one item shaped like chathist's; a window
    read one ``Query`` of the newest 20, decoded."""

    def __init__(self, setting: Setting, client: Any) -> None:
        self.setting = setting
        self.client = client
        self.gate = asyncio.Semaphore(aio.MAX_IN_FLIGHT)
        self.writer = uuid.uuid4().hex

    async def _send(self, operation: str, **params: Any) -> dict[str, Any]:
        method = getattr(self.client, xform_name(operation))
        async with self.gate:
            response: dict[str, Any] = await method(
                TableName=self.setting.table, ReturnConsumedCapacity="TOTAL", **params
            )
        self.setting.meter.record(operation, response)
        return response

    async def _newest(self, session: str, limit: int, keys_only: bool) -> list[dict[str, Any]]:
        extra = {"ProjectionExpression": "SK"} if keys_only else {}
        response = await self._send(
            "Query",
            KeyConditionExpression="SessionId = :s",
            ExpressionAttributeValues={":s": {"S": session}},
            ScanIndexForward=False,
            Limit=limit,
            ConsistentRead=True,
            **extra,
        )
        items: list[dict[str, Any]] = response.get("Items", [])
        return items

    async def add(self, session: str, message: BaseMessage) -> None:
        newest = await self._newest(session, 1, keys_only=True)
        seq = int(newest[0]["SK"]["S"]) + 1 if newest else 0
        await self._send(
            "PutItem",
            Item=raw_item(session, seq, self.writer, encode(message)),
            ConditionExpression="attribute_not_exists(SK)",
        )

    async def window(self, session: str) -> list[BaseMessage]:
        items = await self._newest(session, self.setting.window, keys_only=False)
        return messages_from_dict([json.loads(item["History"]["S"]) for item in reversed(items)])


async def raw_session(
    raw: RawAsync, session: str, messages: Sequence[BaseMessage], calls: Calls, gate: Gate
) -> None:
    """`async_session` written by hand (`RawAsync`)."""
    try:
        await raw.window(session)
    except Exception as exc:
        calls.errors.append(f"warm-up: {describe_error(exc)}")
    await gate.pass_through()
    try:
        for message in messages:
            await timed(calls.append_ms, raw.add(session, message))
        got: list[BaseMessage] = await timed(calls.read_ms, raw.window(session))
    except Exception as exc:
        calls.errors.append(describe_error(exc))
        return
    calls.check(session, got, messages[-raw.setting.window :])


async def raw_run(
    setting: Setting, proxy: LoopbackProxy, sessions: int, appends: int
) -> dict[str, Any]:
    """`async_run` on `RawAsync`: its client is opened (and closed) in this loop."""
    from aiobotocore.session import AioSession

    calls = Calls()
    gate = Gate(sessions)
    turnstile = Turnstile(setting, proxy)
    messages = make_messages(appends, seed=9)
    config = CLIENT_CONFIG.merge(Config(max_pool_connections=aio.MAX_IN_FLIGHT))
    async with AioSession().create_client(
        "dynamodb", endpoint_url=setting.endpoint_url, region_name=setting.region, config=config
    ) as client:
        raw = RawAsync(setting, client)
        tasks = [
            asyncio.create_task(raw_session(raw, session_id(f"r{sessions}"), messages, calls, gate))
            for _ in range(sessions)
        ]
        await gate.all_arrived.wait()
        turnstile.start()
        gate.opened.set()
        await asyncio.gather(*tasks)
        return turnstile.result(calls, sessions)


# -- threads ------------------------------------------------------------------------------------


def thread_session(
    setting: Setting,
    session: str,
    messages: Sequence[BaseMessage],
    calls: Calls,
    barrier: threading.Barrier,
) -> None:
    """`async_session` on the sync API, in its own thread."""
    try:
        setting.history(session, window=True).messages  # noqa: B018 - the untimed first read
    except Exception as exc:
        calls.errors.append(f"warm-up: {describe_error(exc)}")
    barrier.wait()
    try:
        for message in messages:
            start = time.perf_counter()
            setting.history(session).add_messages([message])
            calls.append_ms.append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        got = setting.history(session, window=True).messages
        calls.read_ms.append((time.perf_counter() - start) * 1000)
    except Exception as exc:
        calls.errors.append(describe_error(exc))
        return
    calls.check(session, got, messages[-setting.window :])


class PoolOverflow(logging.Filter):
    """Counts (and keeps off stderr) urllib3's "Connection pool is full, discarding
    connection": a request that found botocore's pool full opened a connection of its own,
    which is closed after the request."""

    def __init__(self) -> None:
        super().__init__()
        self.discarded = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if "Connection pool is full" in record.getMessage():
            self.discarded += 1
            return False
        return True


def thread_run(
    setting: Setting, proxy: LoopbackProxy, sessions: int, appends: int
) -> dict[str, Any]:
    """N threads, one per session."""
    calls = Calls()
    turnstile = Turnstile(setting, proxy)
    barrier = threading.Barrier(sessions, action=turnstile.start)
    messages = make_messages(appends, seed=9)
    overflow = PoolOverflow()
    pool_logger = logging.getLogger("urllib3.connectionpool")
    pool_logger.addFilter(overflow)
    try:
        threads = [
            threading.Thread(
                target=thread_session,
                args=(setting, session_id(f"t{sessions}"), messages, calls, barrier),
                name=f"session-{i}",
            )
            for i in range(sessions)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        pool_logger.removeFilter(overflow)
    result = turnstile.result(calls, sessions)
    result["pool_overflow_connections"] = overflow.discarded
    return result


# -- the scenario -------------------------------------------------------------------------------


def pooled(size: int) -> str:
    """The key of a native async run with ``size`` requests in flight (and connections)."""
    return f"{NATIVE}-pool{size}"


@contextlib.contextmanager
def async_pool(size: int | None) -> Iterator[None]:
    """Native async clients opened meanwhile let ``size`` requests in flight, on as many
    connections (None: chathist's `aio.MAX_IN_FLIGHT`). Every run has a loop, hence clients, of
    its own."""
    if size is None:
        yield
        return
    saved = aio.MAX_IN_FLIGHT
    aio.MAX_IN_FLIGHT = size
    try:
        yield
    finally:
        aio.MAX_IN_FLIGHT = saved


def pools(sessions: Sequence[int], extra: Sequence[int]) -> dict[str, str]:
    """The connection pools (and threads) each contender runs on, as a sentence each."""
    size = CLIENT_CONFIG.max_pool_connections
    flight = aio.MAX_IN_FLIGHT
    workers = default_executor_workers()
    found = {
        NATIVE: f"one aiobotocore client of {flight} connections behind a first come, first served"
        f" gate of {flight} (chathist's aio.MAX_IN_FLIGHT): up to {flight} requests in flight,"
        " the others queue in turn",
        EXECUTOR: f"the loop's default executor: {workers} threads (min(32, {os.cpu_count()} CPUs"
        f" + 4)); one botocore client, max_pool_connections = {size}: up to {workers} requests"
        " in flight",
        THREADS: f"{' / '.join(map(str, sessions))} threads (one per session); one botocore"
        f" client, max_pool_connections = {size}: beyond {size} requests in flight, a request"
        " opens a connection of its own and closes it after",
    }
    for other in extra:
        found[pooled(other)] = (
            f"as native async, but {other} requests in flight (a gate and a pool of {other})"
        )
    found[RAW] = (
        f"one aiobotocore client of {flight} connections behind a first come, first served gate"
        f" of {flight}, as native async's"
    )
    return found


def async_concurrency(sizes: Sizes, endpoint_url: str, region: str, log: Log) -> dict[str, Any]:
    """Scenario 9 for every N of ``sizes.async_sessions``."""
    table = session_id("bench-async")
    chathist.create_table(table, endpoint_url=endpoint_url, region_name=region)
    extra = [size for size in sizes.async_pools if size != aio.MAX_IN_FLIGHT]
    order = [NATIVE, EXECUTOR, THREADS, *map(pooled, extra), RAW]
    labels = {**LABELS, **{pooled(size): f"native async, {size} in flight" for size in extra}}
    if not aio.AVAILABLE:
        order = [EXECUTOR, THREADS]
    where: Literal["process", "thread"] = "thread" if sizes.async_proxy_thread else "process"
    result: dict[str, Any] = {
        "delay_ms": sizes.async_delay_ms,
        "appends": sizes.async_appends,
        "window": sizes.history_size,
        "sessions": sizes.async_sessions,
        "contenders": order,
        "labels": {key: labels[key] for key in order},
        "pools": {k: v for k, v in pools(sizes.async_sessions, extra).items() if k in order},
        "executor_workers": default_executor_workers(),
        "max_pool_connections": CLIENT_CONFIG.max_pool_connections,
        "max_in_flight": aio.MAX_IN_FLIGHT,
        "proxy_in": where,
        "note": None if aio.AVAILABLE else "aiobotocore is not installed: no native async run",
        "runs": {},
    }
    delay = sizes.async_delay_ms / 1000
    with LoopbackProxy(endpoint_url, delay, where=where, lifetime_s=3 * 3600) as proxy:
        port = urlsplit(endpoint_url).port
        server = server_pid(port) if port else None
        setting = Setting(table, proxy.endpoint_url, region, sizes.history_size, server)
        # Unrecorded: DynamoDB Local's JIT, and the proxy's and the clients' first connections
        # (without it, a run measured DynamoDB Local at 1.2 cores in the first contender's
        # run and 0.2-0.6 cores in the eleven after it).
        for key in order:
            one_run(
                key, setting, proxy, WARM_UP_SESSIONS, min(WARM_UP_APPENDS, sizes.async_appends)
            )
        log("  9 warm-up done")
        done: dict[str, dict[str, list[dict[str, Any]]]] = {
            str(n): {key: [] for key in order} for n in sizes.async_sessions
        }
        for repeat in range(sizes.async_repeats):
            for turn, sessions in enumerate(sizes.async_sessions):
                shift = (turn + repeat) % len(order)
                for key in order[shift:] + order[:shift]:
                    got = one_run(key, setting, proxy, sessions, sizes.async_appends)
                    done[str(sessions)][key].append(got)
                    log(
                        f"  9 {key} x {sessions} (repeat {repeat + 1}):"
                        f" {got['calls_per_s']:.0f} calls/s, p50 {got['latency_ms']['p50']:.0f}"
                        f" ms, p99 {got['latency_ms']['p99']:.0f} ms, {got['wall_s']:.1f} s,"
                        f" {got['errors']} errors, {got['wrong_sessions']} wrong sessions"
                    )
    result["repeats"] = sizes.async_repeats
    result["runs"] = {n: {key: combine(got) for key, got in per.items()} for n, per in done.items()}
    result["vs_executor"] = {n: paired_ratios(per) for n, per in done.items()}
    return result


def combine(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Repeats of one contender and N as one: the median of every number (errors and wrong
    sessions: their sum), each repeat's calls/s and p99 kept."""
    merged = merge_medians(runs)
    merged["errors"] = sum(run["errors"] for run in runs)
    merged["wrong_sessions"] = sum(run["wrong_sessions"] for run in runs)
    merged["first_errors"] = [e for run in runs for e in run["first_errors"]][:3]
    merged["each_calls_per_s"] = [run["calls_per_s"] for run in runs]
    merged["each_p99_ms"] = [run["latency_ms"]["p99"] for run in runs]
    return merged


def merge_medians(values: Sequence[Any]) -> Any:
    """The median of numbers, merged dicts key by key; anything else: the first value."""
    first = values[0]
    if isinstance(first, dict):
        return {key: merge_medians([v[key] for v in values]) for key in first}
    if isinstance(first, (int, float)) and not isinstance(first, bool):
        numbers = [v for v in values if isinstance(v, (int, float))]
        return statistics.median(numbers) if len(numbers) == len(values) else None
    return first


def paired_ratios(per: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Each contender's calls/s over the executor's in the same repeat (run minutes apart, so
    they shared the machine's load): the median, and every repeat's."""
    executor = per.get(EXECUTOR)
    if not executor:
        return {}
    found: dict[str, dict[str, Any]] = {}
    for key, runs in per.items():
        each = [
            run["calls_per_s"] / base["calls_per_s"]
            for run, base in zip(runs, executor, strict=True)
            if run["calls_per_s"] and base["calls_per_s"]
        ]
        found[key] = {"median": statistics.median(each) if each else None, "each": each}
    return found


def one_run(
    key: str, setting: Setting, proxy: LoopbackProxy, sessions: int, appends: int
) -> dict[str, Any]:
    """One contender's run of ``sessions`` sessions."""
    if key == THREADS:
        return thread_run(setting, proxy, sessions, appends)
    if key == RAW:
        return asyncio.run(raw_run(setting, proxy, sessions, appends))
    size = int(key.rpartition("-pool")[2]) if key.startswith(f"{NATIVE}-pool") else None
    with async_pool(size):
        return asyncio.run(async_run(setting, proxy, sessions, appends, executor=key == EXECUTOR))
