"""Benchmark scenario 12: a LangGraph thread on DynamoDB, turn after turn.

One ``MessagesState`` graph (a human message and a ~300-character reply per turn) on one
thread, checkpointed by chathist's `DynamoDBSaver` and by ``langgraph-checkpoint-aws``'s
``DynamoDBSaver`` (plain, and with its gzip compression), on the same DynamoDB Local. At each
measured turn: write units (as the service prices them, `benchmarks.meter.HookMeter`), bytes
of the items written (`chathist.core.sizes.item_size`), requests, and what reading the latest
state costs a warm saver (the one that wrote it) and a cold one (a new saver). A contender that
fails stops there; the turn and the error are recorded.

    python -m benchmarks.langgraph_turns                        # turns 10, 100, 400, 1000
    python -m benchmarks.langgraph_turns --turns 5,20 --out /tmp/lg
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage
from langgraph.graph import END, START, MessagesState, StateGraph

from benchmarks.meter import HookMeter, Usage
from benchmarks.run import database
from chathist import create_table
from chathist.core.sizes import item_size

REPLY = 300
"""Characters of each reply."""
DEFAULT_TURNS = (10, 100, 400, 1000)


class BytesMeter:
    """Bytes of every item a client is asked to write (puts of PutItem, BatchWriteItem and
    TransactWriteItems), sized by chathist's one size model."""

    def __init__(self) -> None:
        self.total = 0
        self._lock = threading.Lock()
        self._id = f"benchmark-bytes-{id(self)}"

    def attach(self, client: Any) -> None:
        client.meta.events.register(
            "before-parameter-build.dynamodb", self._count, unique_id=self._id
        )

    def _count(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        items: list[dict[str, Any]] = []
        if model.name == "PutItem":
            items.append(params["Item"])
        elif model.name == "BatchWriteItem":
            for requests in params.get("RequestItems", {}).values():
                items.extend(r["PutRequest"]["Item"] for r in requests if "PutRequest" in r)
        elif model.name == "TransactWriteItems":
            items.extend(a["Put"]["Item"] for a in params.get("TransactItems", []) if "Put" in a)
        with self._lock:
            self.total += sum(item_size(item) for item in items)


def reply(state: MessagesState) -> dict[str, Any]:
    n = len(state["messages"])
    return {"messages": [AIMessage(f"answer {n:06d} " + "z" * (REPLY - 14))]}


def graph_on(saver: Any) -> Any:
    builder = StateGraph(MessagesState)
    builder.add_node("chat", reply)
    builder.add_edge(START, "chat")
    builder.add_edge("chat", END)
    return builder.compile(checkpointer=saver)


def contenders(endpoint: str) -> dict[str, Callable[[], tuple[Any, Any]]]:
    """Name -> a factory of (saver, its botocore client) on a fresh table."""

    def chathist_saver() -> tuple[Any, Any]:
        from chathist.langgraph import DynamoDBSaver

        table = f"bench-lg-{uuid.uuid4().hex[:8]}"
        create_table(table, endpoint_url=endpoint)
        saver = DynamoDBSaver(table, endpoint_url=endpoint)
        return saver, saver._sender.client

    def aws_saver(gzip: bool) -> Callable[[], tuple[Any, Any]]:
        def make() -> tuple[Any, Any]:
            from langgraph_checkpoint_aws import DynamoDBSaver as AwsSaver

            table = f"bench-aws-{uuid.uuid4().hex[:8]}"
            create_table(table, endpoint_url=endpoint, primary_key_name="PK", sort_key_name="SK")
            saver = AwsSaver(table, endpoint_url=endpoint, enable_checkpoint_compression=gzip)
            return saver, saver.client

        return make

    found: dict[str, Callable[[], tuple[Any, Any]]] = {"chathist": chathist_saver}
    try:
        import langgraph_checkpoint_aws  # noqa: F401
    except ImportError:
        return found
    found["langgraph-checkpoint-aws"] = aws_saver(False)
    found["langgraph-checkpoint-aws gzip"] = aws_saver(True)
    return found


def run_contender(
    name: str, make: Callable[[], tuple[Any, Any]], turns: list[int], endpoint: str
) -> dict[str, Any]:
    saver, client = make()
    meter, written = HookMeter(), BytesMeter()
    meter.attach(client, ask_for_capacity=True)
    written.attach(client)
    graph = graph_on(saver)
    config = {"configurable": {"thread_id": "bench"}}
    points: dict[int, dict[str, Any]] = {}
    failed: dict[str, Any] | None = None
    started = time.perf_counter()
    for turn in range(1, max(turns) + 1):
        before, bytes_before = meter.total, written.total
        try:
            graph.invoke({"messages": [HumanMessage(f"question {turn:06d}")]}, config)
        except Exception as exc:  # the contender's own failure: record it and stop
            failed = {"turn": turn, "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
            break
        if turn in turns:
            usage: Usage = meter.total - before
            warm_before = meter.total
            state = graph.get_state(config)
            warm = meter.total - warm_before
            cold_state, (cold_requests, cold_rcu) = cold_read(name, saver, endpoint, config)
            assert len(cold_state.values["messages"]) == len(state.values["messages"]) == 2 * turn
            points[turn] = {
                "wcu": usage.wcu,
                "bytes": written.total - bytes_before,
                "requests": usage.requests,
                "rcu": usage.read_units,
                "warm_read_requests": warm.requests,
                "warm_read_rcu": warm.read_units,
                "cold_read_requests": cold_requests,
                "cold_read_rcu": cold_rcu,
            }
    return {
        "points": points,
        "failed": failed,
        "seconds": round(time.perf_counter() - started, 1),
    }


def cold_read(name: str, saver: Any, endpoint: str, config: dict[str, Any]) -> tuple[Any, Any]:
    """Read the latest state with a new saver of the same table (nothing cached); return the
    state and (requests, read units) it cost."""
    if name == "chathist":
        from chathist.langgraph import DynamoDBSaver

        cold = DynamoDBSaver(saver.binding.table_name, endpoint_url=endpoint)
        state = graph_on(cold).get_state(config)
        used = cold.consumed_capacity  # chathist's own meter: the same accounting
        return state, (used.requests, used.read_units)
    from langgraph_checkpoint_aws import DynamoDBSaver as AwsSaver

    other = AwsSaver(
        saver.table_name,
        endpoint_url=endpoint,
        enable_checkpoint_compression=name.endswith("gzip"),
    )
    meter = HookMeter()
    meter.attach(other.client, ask_for_capacity=True)
    state = graph_on(other).get_state(config)
    return state, (meter.total.requests, meter.total.read_units)


def _table(
    results: dict[str, Any],
    turns: list[int],
    title: str,
    cell: Callable[[dict[str, Any]], str],
    last: Callable[[dict[str, Any]], str] | None = None,
) -> list[str]:
    """A markdown table: a row per contender, a column per measured turn (``cell`` of its
    point, empty where it had failed before), and an optional last column."""
    extra = " fails |" if last else ""
    lines = [
        f"| {title} | " + " | ".join(f"turn {t:,}" for t in turns) + " |" + extra,
        "|---|" + "---|" * (len(turns) + bool(last)),
    ]
    for name, result in results.items():
        cells = ["" if (p := result["points"].get(t)) is None else cell(p) for t in turns]
        tail = f" {last(result)} |" if last else ""
        lines.append(f"| {name} | " + " | ".join(cells) + " |" + tail)
    return lines


def render(results: dict[str, Any], turns: list[int]) -> str:
    def fails(result: dict[str, Any]) -> str:
        failed = result["failed"]
        return f"turn {failed['turn']}: {failed['error']}" if failed else "never"

    writes = _table(
        results,
        turns,
        "contender",
        lambda p: f"{p['wcu']:g} WCU, {p['bytes'] / 1024:,.1f} KB, {p['requests']} req",
        fails,
    )
    reads = _table(
        results,
        turns,
        "latest state read (requests / RCU)",
        lambda p: (
            f"warm {p['warm_read_requests']} / {p['warm_read_rcu']:g},"
            f" cold {p['cold_read_requests']} / {p['cold_read_rcu']:g}"
        ),
    )
    return "\n".join([*writes, "", *reads]) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (wcu, size) = plt.subplots(1, 2, figsize=(10, 4))
    for name, result in results.items():
        turns = sorted(result["points"])
        wcu.plot(turns, [result["points"][t]["wcu"] for t in turns], marker="o", label=name)
        size.plot(
            turns, [result["points"][t]["bytes"] / 1024 for t in turns], marker="o", label=name
        )
    for axis, title in ((wcu, "write units per turn"), (size, "KB written per turn")):
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("turn")
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
    wcu.legend(fontsize=8)
    figure.suptitle("A LangGraph thread on DynamoDB Local (MessagesState, ~300-char replies)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.langgraph_turns")
    parser.add_argument("--turns", default=",".join(map(str, DEFAULT_TURNS)))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--endpoint-url", default=None)
    args = parser.parse_args(argv)
    turns = sorted({int(t) for t in args.turns.split(",")})
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    with database(args.endpoint_url) as endpoint:
        for name, make in contenders(endpoint).items():
            print(f"{name} ...", flush=True)
            results[name] = run_contender(name, make, turns, endpoint)
            print(json.dumps(results[name]), flush=True)
    (args.out / "langgraph.json").write_text(
        json.dumps({"turns": turns, "results": results}, indent=1)
    )
    table = render(results, turns)
    (args.out / "langgraph.md").write_text(table)
    plot(results, args.out / "langgraph.png")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
