"""Scenario 11: what client-side encryption costs per append, encrypted vs not, in one run.

Three chathist event-layout histories append the same 300-character messages one at a time:
in plaintext, sealed under a local key (``local_key=``), and sealed with data keys from KMS
(``kms_key_id=``; moto's server mode on 127.0.0.1 through ``AWS_ENDPOINT_URL_KMS``, or a real
key from ``$CHATHIST_BENCH_KMS_KEY_ID``). Per append: write units and requests as DynamoDB Local
reported them, KMS requests (``consumed_capacity.kms_requests``), the stored item's bytes
(DynamoDB's size rules) and the median latency; then a full read by a fresh reader with an
empty data key cache (a new process): its KMS requests. Modes take turns, so the machine's load
is shared; the latency ratios to plaintext are the result, not the milliseconds.
"""

from __future__ import annotations

import contextlib
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from benchmarks.workload import Sizes

KEY_ENV = "CHATHIST_BENCH_KMS_KEY_ID"
MESSAGE_CHARS = 300


@contextlib.contextmanager
def local_kms() -> Iterator[str]:
    """moto's server mode on 127.0.0.1 (a free port): its URL, for ``AWS_ENDPOINT_URL_KMS``.
    The one starter of a local KMS (the encryption tests use it too)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("moto's server did not start (pip install 'moto[server]')")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


@contextlib.contextmanager
def kms_key(region: str) -> Iterator[tuple[str, str]]:
    """(key id, where it lives): a real key from ``$CHATHIST_BENCH_KMS_KEY_ID``, or a key made
    on a local moto server with ``AWS_ENDPOINT_URL_KMS`` pointing at it meanwhile."""
    real = os.environ.get(KEY_ENV)
    if real:
        yield real, "AWS KMS"
        return
    import boto3

    before = os.environ.get("AWS_ENDPOINT_URL_KMS")
    with local_kms() as url:
        os.environ["AWS_ENDPOINT_URL_KMS"] = url
        try:
            client: Any = boto3.client("kms", region_name=region, endpoint_url=url)
            yield client.create_key()["KeyMetadata"]["Arn"], "moto server mode"
        finally:
            if before is None:
                os.environ.pop("AWS_ENDPOINT_URL_KMS", None)
            else:
                os.environ["AWS_ENDPOINT_URL_KMS"] = before


def encryption_cost(
    sizes: Sizes, endpoint: str, region: str, log: Callable[[str], None]
) -> dict[str, Any]:
    import boto3
    from langchain_core.messages import HumanMessage

    import chathist
    from chathist.core.sizes import item_size
    from chathist.dynamo.encryption import KEYS

    appends = max(10, min(sizes.append, 200))
    table = f"bench-enc-{uuid.uuid4().hex[:6]}"
    chathist.create_table(table, endpoint_url=endpoint, region_name=region)
    client = boto3.client("dynamodb", endpoint_url=endpoint, region_name=region)
    with kms_key(region) as (key_id, kms_where):
        modes: dict[str, dict[str, Any]] = {
            "plaintext": {},
            "local key": {"local_key": os.urandom(32)},
            "KMS": {"kms_key_id": key_id},
        }
        histories = {
            name: chathist.DynamoDBChatMessageHistory(
                table, f"s-{n}", endpoint_url=endpoint, region_name=region, **options
            )
            for n, (name, options) in enumerate(modes.items())
        }
        first: dict[str, Any] = {}
        for name, history in histories.items():
            history.add_user_message("first")  # reads the tail, asks KMS for the data key
            first[name] = history.reset_consumed_capacity()
        latencies: dict[str, list[float]] = {name: [] for name in modes}
        text = "é" * (MESSAGE_CHARS // 2) + "x" * (MESSAGE_CHARS - MESSAGE_CHARS // 2)
        for number in range(appends):
            for name in modes if number % 2 else reversed(modes):
                message = HumanMessage(f"{number:05d}" + text[5:])
                start = time.perf_counter()
                histories[name].add_message(message)
                latencies[name].append((time.perf_counter() - start) * 1000)
        results: dict[str, Any] = {}
        for n, (name, history) in enumerate(histories.items()):
            spent = history.reset_consumed_capacity()
            items = client.query(
                TableName=table,
                KeyConditionExpression="SessionId = :s",
                ExpressionAttributeValues={":s": {"S": f"s-{n}"}},
                ConsistentRead=True,
            )["Items"][1:]
            KEYS.clear()  # a reader in a fresh process
            reader = chathist.DynamoDBChatMessageHistory(
                table, f"s-{n}", endpoint_url=endpoint, region_name=region, **modes[name]
            )
            start = time.perf_counter()
            found = len(reader.messages)
            read_ms = (time.perf_counter() - start) * 1000
            results[name] = {
                "wcu_per_append": spent.write_units / appends,
                "requests_per_append": spent.requests / appends,
                "kms_per_append": spent.kms_requests / appends,
                "kms_first_append": first[name].kms_requests,
                "item_bytes": statistics.median(item_size(i) for i in items),
                "max_item_bytes": max(item_size(i) for i in items),
                "latency_ms": statistics.median(latencies[name]),
                "read_ms": read_ms,
                "read_kms": reader.consumed_capacity.kms_requests,
                "read_rcu": reader.consumed_capacity.read_units,
                "messages_read": found,
            }
        log(f"  10 {appends} appends per mode, KMS at {kms_where}")
    client.delete_table(TableName=table)
    plain = results["plaintext"]
    for row in results.values():
        row["latency_ratio"] = row["latency_ms"] / plain["latency_ms"]
    return {
        "appends": appends,
        "message_chars": MESSAGE_CHARS,
        "kms": kms_where,
        "modes": results,
        "markdown": render(appends, kms_where, results),
    }


def render(appends: int, kms_where: str, results: dict[str, Any]) -> str:
    rows = [
        f"**11. Client-side encryption: {appends} appends of one {MESSAGE_CHARS}-character"
        f" message (450 bytes of UTF-8) per mode, modes taking turns; KMS: {kms_where}**",
        "",
        "| mode | WCU / append | requests / append | KMS requests / append (first append)"
        " | item bytes (largest) | latency / plaintext | fresh reader: KMS requests, RCU |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in results.items():
        rows.append(
            f"| {name} | {row['wcu_per_append']:.2f} | {row['requests_per_append']:.2f}"
            f" | {row['kms_per_append']:.3f} ({row['kms_first_append']})"
            f" | {row['item_bytes']:.0f} ({row['max_item_bytes']})"
            f" | {row['latency_ratio']:.2f}x | {row['read_kms']}, {row['read_rcu']:.1f} |"
        )
    return "\n".join(rows)
