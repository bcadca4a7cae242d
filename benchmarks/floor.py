"""Scenario 10: chathist against the raw floor, request for request.

Each case times one chathist operation and the same operation written by hand with a raw
botocore client, in interleaved pairs (the order alternating each round), and reports the
median of the per-round ratios with its quartiles: the machine's load swings hit both sides of a
pair alike. Neither client has a Python hook on its calls: the raw client is made from a
botocore session of its own with chathist's `CLIENT_CONFIG`, both ask for
``ReturnConsumedCapacity=TOTAL``, and capacity is read from the responses (chathist's own meter;
`chathist.dynamo.capacity.reported` for the raw floor).

The raw floor stores what chathist stores (``SessionId``, ``SK`` = 20-digit sequence, ``event``,
``v``, ``w``, ``codec``, ``History``): the messages of one call in one item when they fit (a
JSON array, as chathist packs them), else one item per message in one transaction; a window read
is one ``Query`` of N items newest first, decoded until N messages; a full read a query loop.

Cases: a single append; a ``RunnableWithMessageHistory`` turn (new history object, window read
of 20, ``add_messages([human, ai])``); window and full reads of sessions written one message per
call, 2, 50 and 100 per call, mixed with 150 KB messages, and in writes of 600 KB (two items
each: one transaction, which chathist stages only if it loses the end of the sequence to another
writer); the first append of a fresh process and of a second table; ``import chathist`` against
``import boto3``.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import botocore.session
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, messages_from_dict

import chathist
from benchmarks.contenders import encode, raw_item
from benchmarks.workload import Sizes, make_messages, spread, text_of
from chathist.core.sizes import ITEM_LIMIT, item_size, write_units
from chathist.dynamo.capacity import reported
from chathist.dynamo.client import CLIENT_CONFIG

Log = Callable[[str], None]
WINDOW = 20
RAW_ROOM = ITEM_LIMIT - 1024
"""Payload bytes the raw floor puts in one item (the rest: names, keys, numbers)."""


def ratio_stats(chathist_s: Sequence[float], raw_s: Sequence[float]) -> dict[str, Any]:
    """Median of paired ratios (with quartiles), and the median times in ms."""
    ratios = [a / b for a, b in zip(chathist_s, raw_s, strict=True) if b > 0]
    return {
        "ratio": spread(ratios),
        "chathist_ms": statistics.median(chathist_s) * 1000 if chathist_s else None,
        "raw_ms": statistics.median(raw_s) * 1000 if raw_s else None,
        "pairs": len(ratios),
    }


def paired(rounds: int, ours: Callable[[], Any], theirs: Callable[[], Any]) -> dict[str, Any]:
    """Time ``rounds`` interleaved pairs (the order alternating); ratios of ours / theirs."""
    mine: list[float] = []
    raw: list[float] = []
    for turn in range(rounds):
        for side in (0, 1) if turn % 2 == 0 else (1, 0):
            started = time.perf_counter()
            (ours if side == 0 else theirs)()
            (mine if side == 0 else raw).append(time.perf_counter() - started)
    return ratio_stats(mine, raw)


# -- the raw floor ------------------------------------------------------------------------------


@dataclass
class RawFloor:
    """Hand-written requests on a botocore client configured as chathist's (no hooks)."""

    client: Any
    table: str
    requests: int = 0
    rcu: float = 0.0
    wcu: float = 0.0
    items_read: int = 0
    writer: str = field(default_factory=lambda: uuid.uuid4().hex)
    next_seq: dict[str, int] = field(default_factory=dict)

    def _count(self, operation: str, response: dict[str, Any], wcu: float | None = None) -> None:
        usage = reported(operation, response)
        self.requests += 1
        self.rcu += usage.read_units
        self.wcu += usage.write_units if wcu is None else wcu
        self.items_read += int(response.get("Count", 0))

    def _item(self, session: str, seq: int, texts: list[str]) -> dict[str, Any]:
        item = raw_item(session, seq, self.writer, texts[0])
        if len(texts) > 1:
            item.update(
                codec={"S": "json-list"},
                v={"N": "2"},
                count={"N": str(len(texts))},
                History={"S": "[" + ",".join(texts) + "]"},
            )
        return item

    def add(self, session: str, messages: Sequence[BaseMessage]) -> None:
        """One put of the call's messages in one item (a transaction when they do not fit),
        at the next sequence number this floor knows."""
        texts = [encode(m) for m in messages]
        groups: list[list[str]] = [[]]
        size = 0
        for text in texts:
            if groups[-1] and size + len(text) + 1 > RAW_ROOM:
                groups.append([])
                size = 0
            groups[-1].append(text)
            size += len(text.encode("utf-8")) + 1
        start = self.next_seq.get(session, 0)
        items = [self._item(session, start + i, g) for i, g in enumerate(groups)]
        if len(items) == 1:
            response = self.client.put_item(
                TableName=self.table,
                Item=items[0],
                ConditionExpression="attribute_not_exists(SK)",
                ReturnConsumedCapacity="TOTAL",
            )
            self._count("PutItem", response)
        else:
            response = self.client.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": self.table,
                            "Item": item,
                            "ConditionExpression": "attribute_not_exists(SK)",
                        }
                    }
                    for item in items
                ],
                ReturnConsumedCapacity="TOTAL",
            )
            # DynamoDB Local under-reports transactions: the service's 2 WCU per KB per item
            self._count(
                "TransactWriteItems", response, 2.0 * sum(write_units(item_size(i)) for i in items)
            )
        self.next_seq[session] = start + len(items)

    @staticmethod
    def _decode(item: dict[str, Any]) -> list[Any]:
        found = json.loads(item["History"]["S"])
        return found if isinstance(found, list) else [found]

    def window(self, session: str, size: int = WINDOW) -> list[BaseMessage]:
        """One query of ``size`` items newest first; the newest ``size`` messages."""
        response = self.client.query(
            TableName=self.table,
            KeyConditionExpression="SessionId = :s",
            ExpressionAttributeValues={":s": {"S": session}},
            ScanIndexForward=False,
            ConsistentRead=True,
            Limit=size,
            ReturnConsumedCapacity="TOTAL",
        )
        self._count("Query", response)
        items = response["Items"]
        if items:
            self.next_seq[session] = int(items[0]["SK"]["S"]) + 1
        dicts: list[Any] = []
        for item in items:
            dicts[:0] = self._decode(item)
            if len(dicts) >= size:
                break
        return messages_from_dict(dicts[-size:])

    def full(self, session: str) -> list[BaseMessage]:
        """A query loop, oldest first, and one ``messages_from_dict``."""
        request: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "SessionId = :s",
            "ExpressionAttributeValues": {":s": {"S": session}},
            "ConsistentRead": True,
            "ReturnConsumedCapacity": "TOTAL",
        }
        dicts: list[Any] = []
        while True:
            response = self.client.query(**request)
            self._count("Query", response)
            for item in response["Items"]:
                dicts.extend(self._decode(item))
            last = response.get("LastEvaluatedKey")
            if not last:
                return messages_from_dict(dicts)
            request["ExclusiveStartKey"] = last

    def turn(self, session: str, human: BaseMessage, ai: BaseMessage) -> None:
        self.window(session)
        self.add(session, [human, ai])

    def snapshot(self) -> tuple[int, float, float, int]:
        return self.requests, self.rcu, self.wcu, self.items_read


def raw_client(endpoint: str, region: str) -> Any:
    """A botocore client of a session of its own, configured as chathist's."""
    return botocore.session.Session().create_client(
        "dynamodb", endpoint_url=endpoint, region_name=region, config=CLIENT_CONFIG
    )


# -- sessions written in every way -----------------------------------------------------------------


def write_patterns(total: int, rng: random.Random) -> dict[str, list[list[BaseMessage]]]:
    """The calls that write each kind of session: lists of ``add_messages`` batches."""
    messages = make_messages(total, seed=rng.randrange(1 << 30))

    def chunks(size: int) -> list[list[BaseMessage]]:
        return [messages[i : i + size] for i in range(0, total, size)]

    mixed: list[list[BaseMessage]] = []
    for index, batch in enumerate(chunks(2)):
        mixed.append(batch)
        if index % 25 == 12:  # now and then a 150 KB message (one item of its own)
            mixed.append([AIMessage(text_of(150 * 1024, rng))])
    large_writes = [  # 600 KB a call: two items, one transaction
        [HumanMessage(text_of(3000, rng)) for _ in range(200)] for _ in range(max(2, total // 1000))
    ]
    return {
        "1 per call": chunks(1),
        "2 per call": chunks(2),
        "50 per call": chunks(50),
        "100 per call": chunks(100),
        "2 per call, 150 KB messages mixed in": mixed,
        "200 x 3 KB per call (600 KB in one transaction)": large_writes,
    }


def history(table: str, endpoint: str, region: str, session: str, **options: Any) -> Any:
    return chathist.DynamoDBChatMessageHistory(
        table, session, endpoint_url=endpoint, region_name=region, **options
    )


def capacity_of(h: Any, action: Callable[[], Any]) -> tuple[int, float, float]:
    before = h.consumed_capacity
    action()
    used = h.consumed_capacity - before
    return used.requests, used.read_units, used.write_units


# -- processes -----------------------------------------------------------------------------------

_FRESH_CHATHIST = """
import time, sys
started = time.perf_counter()
import chathist
chathist.DynamoDBChatMessageHistory  # its modules, imported on first use
imported = time.perf_counter()
h = chathist.DynamoDBChatMessageHistory(sys.argv[1], sys.argv[2], endpoint_url=sys.argv[3],
                                        region_name=sys.argv[4])
made = time.perf_counter()
h.add_user_message("first")
done = time.perf_counter()
import botocore.session
init, made_later = botocore.session.Session.__init__, []
def counted(self, *args, **kwargs):  # the botocore sessions the second table makes
    made_later.append(self)
    init(self, *args, **kwargs)
botocore.session.Session.__init__ = counted
again = time.perf_counter()
h2 = chathist.DynamoDBChatMessageHistory(sys.argv[5], sys.argv[2], endpoint_url=sys.argv[3],
                                         region_name=sys.argv[4])
h2.add_user_message("first")
second = time.perf_counter()
print(imported - started, made - imported, done - made, second - again,
      h.consumed_capacity.requests, len(made_later), int(h2.client is h.client))
"""

_FRESH_RAW = """
import time, sys
started = time.perf_counter()
import botocore.session
from chathist.dynamo.client import CLIENT_CONFIG
imported = time.perf_counter()
client = botocore.session.Session().create_client("dynamodb", endpoint_url=sys.argv[3],
                                                  region_name=sys.argv[4], config=CLIENT_CONFIG)
made = time.perf_counter()
def first(table):
    page = client.query(TableName=table, KeyConditionExpression="SessionId = :s",
        ExpressionAttributeValues={":s": {"S": sys.argv[2]}}, ScanIndexForward=False,
        ConsistentRead=True, Limit=1, ReturnConsumedCapacity="TOTAL")
    seq = int(page["Items"][0]["SK"]["S"]) + 1 if page["Items"] else 0
    client.put_item(TableName=table, Item={"SessionId": {"S": sys.argv[2]},
        "SK": {"S": f"{seq:020d}"}, "event": {"S": "message"}, "v": {"N": "1"},
        "w": {"S": "raw"}, "codec": {"S": "json"},
        "History": {"S": '{"type":"human","data":{"content":"first"}}'}},
        ConditionExpression="attribute_not_exists(SK)", ReturnConsumedCapacity="TOTAL")
first(sys.argv[1])
done = time.perf_counter()
first(sys.argv[5])
second = time.perf_counter()
print(imported - started, made - imported, done - made, second - done, 2, 0, 1)
"""

_IMPORT = "import time; s = time.perf_counter(); {statement}; print(time.perf_counter() - s)"


def python_env() -> dict[str, str]:
    """The environment of the fresh processes: this one's, with bytecode caching as Python
    does it by default. Under ``PYTHONDONTWRITEBYTECODE`` an editable checkout's modules are
    compiled from source in every process (about 30 ms for chathist's), while the installed
    libraries on the other side load the bytecode pip wrote: not what a user's process pays
    with chathist installed from a wheel."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def run_python(code: str, *args: str) -> list[float]:
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env=python_env(),
    )
    return [float(x) for x in done.stdout.split()]


def compile_once() -> None:
    """Write the bytecode of chathist's modules (an editable checkout has none until a process
    imports them with caching on), so the timed processes load it as an installed package's."""
    import chathist as package

    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(os.path.dirname(package.__file__))],
        check=True,
        env=python_env(),
        capture_output=True,
    )


def fresh_processes(
    runs: int, tables: tuple[str, str, str, str], endpoint: str, region: str
) -> dict[str, Any]:
    """First append (and a second table's) in fresh processes, alternating chathist and raw."""
    ours: list[list[float]] = []
    theirs: list[list[float]] = []
    for turn in range(runs):
        session = f"fresh-{uuid.uuid4().hex[:8]}"
        for side in (0, 1) if turn % 2 == 0 else (1, 0):
            if side == 0:
                ours.append(
                    run_python(_FRESH_CHATHIST, tables[0], session, endpoint, region, tables[1])
                )
            else:
                theirs.append(
                    run_python(_FRESH_RAW, tables[2], session, endpoint, region, tables[3])
                )

    def column(rows: list[list[float]], index: int) -> list[float]:
        return [row[index] for row in rows]

    return {
        "first_append": ratio_stats(column(ours, 2), column(theirs, 2)),
        "client_and_first_append": ratio_stats(
            [a + b for a, b in zip(column(ours, 1), column(ours, 2), strict=True)],
            [a + b for a, b in zip(column(theirs, 1), column(theirs, 2), strict=True)],
        ),
        "second_table_first_append": ratio_stats(column(ours, 3), column(theirs, 3)),
        "first_append_requests": statistics.median(column(ours, 4)),
        "second_table_sessions": int(max(column(ours, 5))),
        "second_table_shares_the_client": min(column(ours, 6)) == 1,
    }


def imports(runs: int) -> dict[str, Any]:
    """Import times in fresh processes, alternating: ``import chathist`` vs ``import boto3``,
    and the history class (with what it needs) vs what the raw floor needs."""
    cases = {
        "import chathist / import boto3": ("import chathist", "import boto3"),
        "from chathist import DynamoDBChatMessageHistory / import boto3, langchain_core.messages": (
            "from chathist import DynamoDBChatMessageHistory",
            "import boto3, langchain_core.messages",
        ),
    }
    found: dict[str, Any] = {}
    for name, (ours, theirs) in cases.items():
        mine: list[float] = []
        raw: list[float] = []
        for turn in range(runs):
            for side in (0, 1) if turn % 2 == 0 else (1, 0):
                statement = ours if side == 0 else theirs
                (mine if side == 0 else raw).append(
                    run_python(_IMPORT.format(statement=statement))[0]
                )
        found[name] = ratio_stats(mine, raw)
    return found


# -- the scenario --------------------------------------------------------------------------------


def floor(sizes: Sizes, endpoint: str, region: str, log: Log) -> dict[str, Any]:
    rng = random.Random(13)
    prefix = f"floor-{uuid.uuid4().hex[:6]}"
    names = {k: f"{prefix}-{k}" for k in ("ours", "raw", "ours2", "raw2")}
    for name in names.values():
        chathist.create_table(name, endpoint_url=endpoint, region_name=region)
    ours_table, raw_table = names["ours"], names["raw"]
    raw = RawFloor(raw_client(endpoint, region), raw_table)
    rounds = sizes.floor_rounds
    results: dict[str, Any] = {"rounds": rounds, "window": WINDOW, "cases": {}}
    cases = results["cases"]
    messages = make_messages(4 * rounds + 200, seed=3)
    feed = iter(messages)

    # warm-up: connections and DynamoDB Local's JIT, both sides
    warm = history(ours_table, endpoint, region, "warm")
    for _ in range(60):
        warm.add_messages([next(iter(messages))])
        raw.add("warm", [messages[0]])
        warm.messages  # noqa: B018
        raw.window("warm")

    log("floor: single append")
    h = history(ours_table, endpoint, region, "append")
    h.add_message(messages[0])
    raw.add("append", [messages[0]])
    before = (h.consumed_capacity, raw.snapshot())
    case = paired(
        rounds, lambda: h.add_message(next(feed)), lambda: raw.add("append", [next(feed)])
    )
    after = h.consumed_capacity - before[0]
    raw_after = [a - b for a, b in zip(raw.snapshot(), before[1], strict=True)]
    case.update(
        chathist_per_op={"requests": after.requests / rounds, "wcu": after.write_units / rounds},
        raw_per_op={"requests": raw_after[0] / rounds, "wcu": raw_after[2] / rounds},
    )
    cases["append"] = case

    log("floor: LangChain turn")
    turn_session = f"turn-{uuid.uuid4().hex[:6]}"
    setup = make_messages(2 * WINDOW + 2, seed=5)
    for i in range(0, len(setup), 2):
        history(ours_table, endpoint, region, turn_session).add_messages(setup[i : i + 2])
        raw.add(turn_session, setup[i : i + 2])
    pairs = iter(make_messages(4 * rounds + 4, seed=6))
    used: list[tuple[int, float, float]] = []

    def our_turn() -> None:
        fresh = history(ours_table, endpoint, region, turn_session, history_size=WINDOW)
        human, ai = next(pairs), next(pairs)

        def act() -> None:
            fresh.messages  # noqa: B018
            fresh.add_messages([human, ai])

        used.append(capacity_of(fresh, act))

    raw_before = raw.snapshot()
    case = paired(rounds, our_turn, lambda: raw.turn(turn_session, next(pairs), next(pairs)))
    raw_used = [a - b for a, b in zip(raw.snapshot(), raw_before, strict=True)]
    case.update(
        chathist_per_op={
            "requests": statistics.median(u[0] for u in used),
            "rcu": statistics.median(u[1] for u in used),
            "wcu": statistics.median(u[2] for u in used),
        },
        raw_per_op={
            "requests": raw_used[0] / rounds,
            "rcu": raw_used[1] / rounds,
            "wcu": raw_used[2] / rounds,
        },
    )
    cases["turn"] = case

    read_rounds = max(3, rounds // 4)
    for label, calls in write_patterns(sizes.floor_session, rng).items():
        log(f"floor: reads of a session written {label}")
        session = f"read-{uuid.uuid4().hex[:6]}"
        writer = history(ours_table, endpoint, region, session)
        write_before = writer.consumed_capacity
        raw_before = raw.snapshot()
        for batch in calls:
            writer.add_messages(batch)
            raw.add(session, batch)
        written = writer.consumed_capacity - write_before
        raw_written = [a - b for a, b in zip(raw.snapshot(), raw_before, strict=True)]
        count = sum(len(b) for b in calls)
        window_reader = history(ours_table, endpoint, region, session, history_size=WINDOW)
        full_reader = history(ours_table, endpoint, region, session)
        expected = history(ours_table, endpoint, region, session).messages
        assert expected == raw.full(session), label
        assert window_reader.messages == raw.window(session) == expected[-WINDOW:], label
        entry: dict[str, Any] = {
            "messages": count,
            "calls": len(calls),
            "write": {
                "chathist_requests": written.requests,
                "chathist_wcu_reported": written.write_units,
                "raw_requests": raw_written[0],
                "raw_wcu": raw_written[2],
            },
        }
        for kind, reader, raw_read, reps in (
            ("window", window_reader, lambda s=session: raw.window(s), rounds),
            ("full", full_reader, lambda s=session: raw.full(s), read_rounds),
        ):
            before_ours, before_raw = reader.consumed_capacity, raw.snapshot()
            stats = paired(reps, lambda r=reader: r.messages, raw_read)
            ours_used = reader.consumed_capacity - before_ours
            raw_used = [a - b for a, b in zip(raw.snapshot(), before_raw, strict=True)]
            stats.update(
                chathist_per_read={
                    "requests": ours_used.requests / reps,
                    "rcu": ours_used.read_units / reps,
                },
                raw_per_read={
                    "requests": raw_used[0] / reps,
                    "rcu": raw_used[1] / reps,
                    "items": raw_used[3] / reps,
                },
            )
            entry[kind] = stats
        entry["window"]["chathist_items"] = items_read_by_window(
            ours_table, endpoint, region, session
        )
        cases[f"session written {label}"] = entry

    log("floor: fresh processes")
    compile_once()
    results["fresh"] = fresh_processes(
        sizes.floor_processes,
        (names["ours"], names["ours2"], names["raw"], names["raw2"]),
        endpoint,
        region,
    )
    log("floor: imports")
    results["imports"] = imports(sizes.floor_processes)
    return results


def items_read_by_window(table: str, endpoint: str, region: str, session: str) -> int:
    """Items a window read of chathist returns from DynamoDB (counted with a hook, once,
    outside the timed reads)."""
    reader = history(table, endpoint, region, session, history_size=WINDOW)
    counted: list[int] = []

    def count(parsed: dict[str, Any], **_: Any) -> None:
        counted.append(int(parsed.get("Count", 0)))

    reader.client.meta.events.register("after-call.dynamodb.Query", count, "floor-items")
    try:
        reader.messages  # noqa: B018
    finally:
        reader.client.meta.events.unregister("after-call.dynamodb.Query", unique_id="floor-items")
    return sum(counted)


# -- the report ----------------------------------------------------------------------------------


def _ratio(stats: dict[str, Any]) -> str:
    spread_ = stats["ratio"]
    if spread_.get("median") is None:
        return "—"
    return f"{spread_['median']:.2f}x (IQR {spread_['q1']:.2f} to {spread_['q3']:.2f})"


def targets(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's goals, measured."""
    rows: list[dict[str, Any]] = []
    cases = data.get("cases", {})

    def row(
        target: str,
        goal: str,
        stats: dict[str, Any] | None,
        most: float,
        extra: str = "",
        ok: bool = True,
    ) -> None:
        if not stats:
            return
        median = stats["ratio"]["median"]
        rows.append(
            {
                "target": target,
                "goal": goal,
                "measured": _ratio(stats) + extra,
                "pass": None if median is None else (median <= most and ok),
            }
        )

    turn = cases.get("turn")
    if turn:
        per = turn["chathist_per_op"]
        raw_per = turn["raw_per_op"]
        row(
            "LangChain turn (new history, window of 20, add human + AI) / raw turn",
            "≤ 1.05x, 2 requests, the WCU the bytes need",
            turn,
            1.05,
            f"; {per['requests']:.0f} requests, {per['wcu']:.0f} WCU (raw: "
            f"{raw_per['requests']:.0f}, {raw_per['wcu']:.0f})",
            per["requests"] <= 2 and per["wcu"] <= raw_per["wcu"],
        )
    append = cases.get("append")
    if append:
        row("single append / raw put_item", "≤ 1.10x", append, 1.10)
    for name, entry in cases.items():
        if not name.startswith("session written"):
            continue
        window = entry["window"]
        items = entry["window"].get("chathist_items")
        row(
            f"window read of {data['window']}, {name}",
            f"≤ 1.05x, ≤ {data['window'] + 2} items",
            window,
            1.05,
            f"; {items} items (raw {window['raw_per_read']['items']:.0f})",
            items is not None and items <= data["window"] + 2,
        )
        row(f"full read, {name} ({entry['messages']:,} messages)", "≤ 1.05x", entry["full"], 1.05)
    fresh = data.get("fresh")
    if fresh:
        row(
            "first append in a fresh process (history or client made before)",
            "≤ 1.5x",
            fresh["first_append"],
            1.5,
            f"; {fresh['first_append_requests']:.0f} requests",
        )
        row(
            "client + first append in a fresh process",
            "≤ 1.5x",
            fresh["client_and_first_append"],
            1.5,
        )
        sessions = fresh.get("second_table_sessions")
        shared = fresh.get("second_table_shares_the_client")
        row(
            "first append on a second table in that process",
            "≤ 1.5x, no new botocore session",
            fresh["second_table_first_append"],
            1.5,
            f"; {sessions:.0f} new botocore sessions, client shared: {shared}",
            sessions == 0,
        )
    for name, stats in data.get("imports", {}).items():
        row(name, "≤ 1.5x", stats, 1.5)
    return rows


def render(data: dict[str, Any]) -> str:
    lines = [
        f"**10. chathist against the raw floor, paired rounds ({data['rounds']} per case;"
        " median of per-round ratios, IQR of the ratios; no hooks on either client)**",
        "",
        "| case | chathist / raw | chathist ms | raw ms | chathist requests, RCU / WCU |"
        " raw requests, RCU / WCU |",
        "|---|---|---|---|---|---|",
    ]
    for name, entry in data.get("cases", {}).items():
        rows = (
            [(name, entry)]
            if "ratio" in entry
            else [(f"{name}: {kind}", entry[kind]) for kind in ("window", "full")]
        )
        for label, stats in rows:
            ours = stats.get("chathist_per_op") or stats.get("chathist_per_read") or {}
            theirs = stats.get("raw_per_op") or stats.get("raw_per_read") or {}

            def fmt(per: dict[str, Any]) -> str:
                units = per.get("wcu", per.get("rcu"))
                return f"{per.get('requests', 0):.1f}, {units if units is not None else 0:.1f}"

            lines.append(
                f"| {label} | {_ratio(stats)} | {stats['chathist_ms']:.2f} |"
                f" {stats['raw_ms']:.2f} | {fmt(ours)} | {fmt(theirs)} |"
            )
    writes = [
        f"- {name}: {e['calls']} calls; chathist {e['write']['chathist_requests']} requests,"
        f" {e['write']['chathist_wcu_reported']:.0f} WCU as DynamoDB Local reported; raw floor"
        f" {e['write']['raw_requests']} requests, {e['write']['raw_wcu']:.0f} WCU"
        for name, e in data.get("cases", {}).items()
        if "write" in e
    ]
    fresh = data.get("fresh", {})
    extra = []
    for name, stats in [*fresh.items(), *data.get("imports", {}).items()]:
        if isinstance(stats, dict) and "ratio" in stats:
            extra.append(
                f"- {name}: {_ratio(stats)}; chathist {stats['chathist_ms']:.1f} ms, raw"
                f" {stats['raw_ms']:.1f} ms ({stats['pairs']} pairs of processes)"
            )
    return "\n".join(
        [*lines, "", "Writing the sessions:", "", *writes, "", "Fresh processes:", "", *extra]
    )
