"""Bulk migration (``chathist migrate`` / ``chathist rollback``) against DynamoDB Local.

Source tables hold sessions in the exact format LangChain's ``DynamoDBChatMessageHistory``
writes: ``{"SessionId": sid, "History": messages_to_dict(...)}`` with floats as ``Decimal``
(its ``coerce_float_to_decimal``), written through boto3's resource layer (``Table.put_item``
or its batch writer, which serializes the same way), and an optional ``expireAt``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import random
import re
import shlex
import signal
import string
import subprocess
import sys
import time
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import pytest
from boto3.dynamodb.types import TypeSerializer
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    message_to_dict,
    messages_to_dict,
)

from chathist import DynamoDBChatMessageHistory, StorageError, TableNotFoundError, create_table
from chathist.bulk import (
    MigrationConfig,
    WriteLimiter,
    migrate_list_to_events,
    plan_session,
    rollback_events_to_list,
)
from chathist.core.events import parse_seq
from chathist.core.fold import fold
from chathist.core.sizes import item_size
from chathist.dynamo.binding import Binding
from chathist.dynamo.capacity import CapacityMeter
from chathist.dynamo.client import Sender
from chathist.dynamo.event_store import EventStore
from chathist.dynamo.items import event_items
from tests.helpers import create_list_table, hooked, staged_over_256_kb

REPO = Path(__file__).resolve().parent.parent
HAVE_CLI = (REPO / "chathist" / "cli" / "main.py").is_file()
needs_cli = pytest.mark.skipif(not HAVE_CLI, reason="chathist/cli/ is not there yet")

BULK_SESSIONS = 2000
EXPIRED_SESSIONS = 10


# -- building legacy tables ---------------------------------------------------------------------


def legacy_history(messages: list[BaseMessage]) -> list[dict[str, Any]]:
    """``messages`` as LangChain's class stores them (floats coerced to Decimal)."""
    return json.loads(json.dumps(messages_to_dict(messages)), parse_float=Decimal)


def python_item_size(item: dict[str, Any]) -> int:
    """DynamoDB's size of an item given as boto3's resource layer takes it."""
    serializer = TypeSerializer()
    return item_size({name: serializer.serialize(value) for name, value in item.items()})


def plain(value: Any) -> Any:
    """``value`` with every Decimal turned into a float (values compare equal)."""
    return json.loads(json.dumps(value, default=float))


def random_text(rng: random.Random, size: int) -> str:
    alphabet = string.ascii_letters + string.digits + " äéß€中文😀"
    return "".join(rng.choices(alphabet, k=size))


def make_session(rng: random.Random, index: int) -> list[BaseMessage]:
    """A conversation of mixed size and message types; a few near the 400 KB item limit."""
    if index % 500 == 7:  # near 400 KB, in three messages
        return [HumanMessage(random_text(rng, 40_000) + "x" * 85_000) for _ in range(3)]
    if index % 500 == 11:  # near 400 KB in one message
        return [AIMessage("q" * 200_000 + random_text(rng, 60_000))]
    if index % 500 == 13:  # more than one transaction holds: staged write
        return [HumanMessage(f"m{k}") for k in range(130)]
    messages: list[BaseMessage] = [SystemMessage("You are terse.")]
    for turn in range(rng.randint(0, 6)):
        messages.append(HumanMessage(f"q{index}.{turn} " + random_text(rng, rng.randint(1, 200))))
        if rng.random() < 0.3:
            call = {"name": "lookup", "args": {"x": turn, "w": 0.25}, "id": f"c{turn}"}
            messages.append(AIMessage("", tool_calls=[call]))
            messages.append(ToolMessage(f"result {turn}", tool_call_id=f"c{turn}"))
        size = 30_000 if index % 40 == 0 else rng.randint(1, 300)
        messages.append(
            AIMessage(random_text(rng, size), additional_kwargs={"score": round(rng.random(), 3)})
        )
    return messages


def resource_table(endpoint: str | None, region: str | None, name: str) -> Any:
    return boto3.resource("dynamodb", endpoint_url=endpoint, region_name=region).Table(name)


def fill(
    endpoint: str | None,
    region: str | None,
    table: str,
    sessions: dict[str, list[BaseMessage]],
    expiries: dict[str, int] | None = None,
) -> None:
    expiries = expiries or {}
    with resource_table(endpoint, region, table).batch_writer() as batch:
        for sid, messages in sessions.items():
            item: dict[str, Any] = {"SessionId": sid, "History": legacy_history(messages)}
            if sid in expiries:
                item["expireAt"] = expiries[sid]
            batch.put_item(Item=item)


def small_sessions(count: int, seed: int = 1) -> dict[str, list[BaseMessage]]:
    rng = random.Random(seed)
    return {f"s{i:03d}": make_session(rng, i + 1) for i in range(count)}


# -- running the commands -----------------------------------------------------------------------


def cli(*argv: str) -> tuple[int, str]:
    """Run ``chathist`` in-process; return the exit code and stdout."""
    from chathist.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(argv))
    return code, out.getvalue()


def cli_json(*argv: str) -> tuple[int, dict[str, Any]]:
    code, out = cli(*argv, "--json", "--quiet")
    return code, json.loads(out)


def endpoint_args(endpoint: str | None, region: str | None) -> list[str]:
    args = []
    if endpoint:
        args += ["--endpoint-url", endpoint]
    if region:
        args += ["--region", region]
    return args


# -- reading the event table back, independently of the migration's own check ----------------


def event_partitions(client: Any, table: str) -> dict[str, list[dict[str, Any]]]:
    """Every item of an event table, grouped by session."""
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    request: dict[str, Any] = {"TableName": table}
    while True:
        page = client.scan(**request)
        for item in page["Items"]:
            grouped[item["SessionId"]["S"]].append(item)
        if "LastEvaluatedKey" not in page:
            return grouped
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def check_exactly_once(
    store: EventStore, items: list[dict[str, Any]], expected: list[BaseMessage]
) -> None:
    """The partition holds the session once: sequence 0..n-1 by one migration writer (plus that
    writer's stage, if any), folding to exactly the expected messages."""
    sequence = sorted(
        (i for i in items if not i["SK"]["S"].startswith("!")), key=lambda i: i["SK"]["S"]
    )
    staged = sorted((i for i in items if i["SK"]["S"].startswith("!")), key=lambda i: i["SK"]["S"])
    assert [parse_seq(i["SK"]["S"]) for i in sequence] == list(range(len(sequence)))
    writers = {i["w"]["S"] for i in items}
    assert len(writers) == 1 and next(iter(writers)).startswith("mig1.")
    events = [store.event(i) for i in sequence]
    stages: dict[str, list[Any]] = defaultdict(list)
    for raw in staged:
        event = store.event(raw)
        assert event.stage is not None
        stages[event.stage].append(event)
    got = fold(events, stages=stages)
    assert [message_to_dict(m) for m in got] == [message_to_dict(m) for m in expected]


# -- the bulk run: thousands of sessions, killed part-way, then resumed ------------------------


@needs_cli
def test_bulk_migration_killed_and_resumed_is_exactly_once(
    tmp_path: Path,
    dynamodb_endpoint: str | None,
    dynamodb_region: str | None,
    boto3_client: Any,
    new_table: Any,
) -> None:
    rng = random.Random(20261124)
    sessions = {f"user-{i:05d}": make_session(rng, i) for i in range(BULK_SESSIONS)}
    now = int(time.time())
    expiries = {sid: now + 86_400 * (1 + i % 30) for i, sid in enumerate(sessions) if i % 5 == 0}
    expired = [sid for i, sid in enumerate(sessions) if i % 5 == 1][:EXPIRED_SESSIONS]
    expiries.update({sid: now - 60 for sid in expired})
    largest = max(
        python_item_size({"SessionId": sid, "History": legacy_history(m)})
        for sid, m in sessions.items()
    )
    assert 380_000 < largest < 409_600  # some sessions really are near the item limit

    source, target = new_table("list"), new_table("events")
    create_list_table(boto3_client, source)
    create_table(target, endpoint_url=dynamodb_endpoint, region_name=dynamodb_region)
    fill(dynamodb_endpoint, dynamodb_region, source, sessions, expiries)

    argv = [
        "migrate",
        "--source",
        source,
        "--target",
        target,
        "--segments",
        "8",
        *endpoint_args(dynamodb_endpoint, dynamodb_region),
    ]
    process = subprocess.Popen(
        [sys.executable, "-m", "chathist.cli", *argv, "--quiet"],
        cwd=tmp_path,  # outside the repository: the installed packages must resolve
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and process.poll() is None:
            count = boto3_client.describe_table(TableName=target)["Table"]["ItemCount"]
            if count >= 400:
                break
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL, process.stderr.read() if process.stderr else ""
    partial = event_partitions(boto3_client, target)
    assert 0 < len(partial) < BULK_SESSIONS - EXPIRED_SESSIONS

    code, report = cli_json(*argv, "--verify")
    assert code == 0, report["problems"]
    live = BULK_SESSIONS - EXPIRED_SESSIONS
    assert report["sessions"] == BULK_SESSIONS
    assert report["expired"] == EXPIRED_SESSIONS
    assert report["already"] > 0 and report["migrated"] > 0
    assert report["migrated"] + report["already"] == live
    assert report["verified"] == live
    assert report["conflicts"] == report["failures"] == report["differences"] == 0
    assert report["consumed_wcu"] > 0 and report["consumed_rcu"] > 0

    partitions = event_partitions(boto3_client, target)
    assert set(partitions) == set(sessions) - set(expired)
    store = EventStore(event_items(target))
    for sid, items in partitions.items():
        check_exactly_once(store, items, sessions[sid])
        for raw in items:
            assert raw.get("expireAt", {}).get("N") == (
                str(expiries[sid]) if sid in expiries else None
            )
    for sid in random.Random(1).sample(sorted(partitions), 25):  # the public reader agrees
        history = DynamoDBChatMessageHistory(
            target, sid, dynamodb_endpoint, region_name=dynamodb_region
        )
        assert messages_to_dict(history.messages) == messages_to_dict(sessions[sid])


# -- smaller behaviours ------------------------------------------------------------------------


@needs_cli
def test_dry_run_writes_nothing(
    dynamodb_endpoint: str | None, dynamodb_region: str | None, boto3_client: Any, new_table: Any
) -> None:
    source, target = new_table("list"), new_table("events")
    create_list_table(boto3_client, source)
    create_table(target, endpoint_url=dynamodb_endpoint, region_name=dynamodb_region)
    sessions = small_sessions(40)
    fill(dynamodb_endpoint, dynamodb_region, source, sessions)
    before = boto3_client.scan(TableName=source)["Items"]

    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "chathist.migrations.0001_list_to_events",
            "migrate",
            "--source",
            source,
            "--target",
            target,
            "--dry-run",
            "--verify",
            "--json",
            *endpoint_args(dynamodb_endpoint, dynamodb_region),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    assert report["dry_run"] is True
    assert report["migrated"] == len(sessions)  # would migrate
    assert report["messages"] == sum(len(m) for m in sessions.values())
    assert report["migrated"] <= report["items_written"] < report["messages"]  # items share
    assert report["estimated_wcu"] >= report["items_written"]
    # packed, a migrated message costs far less than an append to the LangChain item
    assert report["wcu_per_message"] < report["source_item_wcu"]
    assert report["consumed_wcu"] == 0
    assert boto3_client.scan(TableName=target, Select="COUNT")["Count"] == 0
    assert boto3_client.scan(TableName=source)["Items"] == before

    code, text = cli(
        "migrate",
        "--source",
        source,
        "--target",
        target,
        "--dry-run",
        "--quiet",
        *endpoint_args(dynamodb_endpoint, dynamodb_region),
    )
    assert code == 0
    assert "DRY RUN" in text and f"sessions would be migrated  {len(sessions)}" in text
    assert boto3_client.scan(TableName=target, Select="COUNT")["Count"] == 0


@needs_cli
def test_verify_detects_a_tampered_event(
    dynamodb_endpoint: str | None, dynamodb_region: str | None, boto3_client: Any, new_table: Any
) -> None:
    source, target = new_table("list"), new_table("events")
    create_list_table(boto3_client, source)
    create_table(target, endpoint_url=dynamodb_endpoint, region_name=dynamodb_region)
    sessions = small_sessions(20)
    fill(dynamodb_endpoint, dynamodb_region, source, sessions)
    argv = [
        "migrate",
        "--source",
        source,
        "--target",
        target,
        *endpoint_args(dynamodb_endpoint, dynamodb_region),
    ]
    code, report = cli_json(*argv, "--verify")
    assert code == 0 and report["verified"] == 20

    victim = "s007"
    key = {"SessionId": {"S": victim}, "SK": {"S": "00000000000000000000"}}
    item = boto3_client.get_item(TableName=target, Key=key)["Item"]
    payload = json.loads(item["History"]["S"])  # the session's messages share this item
    payload[1]["data"]["content"] = payload[1]["data"]["content"] + " (edited)"
    boto3_client.update_item(
        TableName=target,
        Key=key,
        UpdateExpression="SET History = :h",
        ExpressionAttributeValues={":h": {"S": json.dumps(payload)}},
    )

    code, report = cli_json(*argv, "--verify")
    assert code == 3
    assert report["differences"] == 1
    assert [p[0] for p in report["problems"]["differences"]] == [victim]
    assert "message 1 (human) differs in content" in report["problems"]["differences"][0][1]
    assert report["verified"] == 19

    code, text = cli(*argv, "--verify", "--quiet")  # the text report names it too
    assert code == 3
    assert "differences found by --verify: 1" in text and victim in text

    code, report = cli_json(*argv)  # without --verify the content is not compared
    assert code == 0 and report["already"] == 20


@needs_cli
def test_rollback_round_trip_readable_by_langchain(
    dynamodb_endpoint: str | None, dynamodb_region: str | None, boto3_client: Any, new_table: Any
) -> None:
    from langchain_community.chat_message_histories import (
        DynamoDBChatMessageHistory as LangChainHistory,
    )

    source, events, back = new_table("list"), new_table("events"), new_table("back")
    create_list_table(boto3_client, source)
    create_list_table(boto3_client, back)
    create_table(events, endpoint_url=dynamodb_endpoint, region_name=dynamodb_region)
    sessions = small_sessions(30, seed=7)
    expiry = int(time.time()) + 3600
    expiries = {sid: expiry for sid in list(sessions)[::3]}
    fill(dynamodb_endpoint, dynamodb_region, source, sessions, expiries)
    connection = endpoint_args(dynamodb_endpoint, dynamodb_region)
    code, _ = cli_json("migrate", "--source", source, "--target", events, *connection)
    assert code == 0

    # One session that only the event layout can hold, and one that grew after migrating.
    large = DynamoDBChatMessageHistory(
        events, "too-large", dynamodb_endpoint, region_name=dynamodb_region
    )
    large.add_messages([HumanMessage("z" * 150_000) for _ in range(3)])
    grown = DynamoDBChatMessageHistory(
        events, "s003", dynamodb_endpoint, region_name=dynamodb_region
    )
    grown.add_messages([AIMessage("added after the migration", additional_kwargs={"p": 0.5})])
    sessions["s003"] = [*sessions["s003"], *grown.messages[-1:]]

    code, report = cli_json(
        "rollback", "--source", events, "--target", back, "--verify", *connection
    )
    assert code == 1  # the too-large session is reported, not truncated
    assert report["too_large"] == 1
    assert [p[0] for p in report["problems"]["too_large"]] == ["too-large"]
    assert report["migrated"] == len(sessions) and report["verified"] == len(sessions)
    assert report["differences"] == report["conflicts"] == report["failures"] == 0
    stored = {item["SessionId"]["S"] for item in boto3_client.scan(TableName=back)["Items"]}
    assert stored == set(sessions)

    for sid, messages in sessions.items():
        history = LangChainHistory(table_name=back, session_id=sid, endpoint_url=dynamodb_endpoint)
        # LangChain's class hands numbers back as Decimal; compare them by value.
        assert plain(messages_to_dict(history.messages)) == messages_to_dict(messages)
    item = resource_table(dynamodb_endpoint, dynamodb_region, back).get_item(
        Key={"SessionId": "s000"}
    )["Item"]
    assert item["expireAt"] == expiry
    assert item["History"] == legacy_history(sessions["s000"])  # LangChain's exact format

    code, report = cli_json("rollback", "--source", events, "--target", back, *connection)
    assert report["already"] == len(sessions) and report["migrated"] == 0


@needs_cli
def test_same_table_migration_then_delete_source(
    dynamodb_endpoint: str | None, dynamodb_region: str | None, boto3_client: Any, new_table: Any
) -> None:
    """A composite table used by LangChain with ``key={"PK": sid, "SK": "langchain_history"}``
    migrates in place; the list items are recognised, not mistaken for events."""
    table = new_table("same")
    create_table(
        table,
        endpoint_url=dynamodb_endpoint,
        region_name=dynamodb_region,
        primary_key_name="PK",
        sort_key_name="SK",
    )
    sessions = small_sessions(25, seed=3)
    resource = resource_table(dynamodb_endpoint, dynamodb_region, table)
    for sid, messages in sessions.items():
        resource.put_item(
            Item={"PK": sid, "SK": "langchain_history", "History": legacy_history(messages)}
        )
    connection = endpoint_args(dynamodb_endpoint, dynamodb_region)
    argv = ["migrate", "--source", table, "--target", table, *connection]
    code, report = cli_json(*argv, "--verify")
    assert code == 0 and report["migrated"] == 25 and report["verified"] == 25
    for sid in ("s000", "s011", "s024"):
        history = DynamoDBChatMessageHistory(
            table,
            sid,
            dynamodb_endpoint,
            primary_key_name="PK",
            sort_key_name="SK",
            region_name=dynamodb_region,
        )
        assert messages_to_dict(history.messages) == messages_to_dict(sessions[sid])

    code, report = cli_json(*argv, "--delete-source")
    assert code == 0 and report["already"] == 25 and report["deleted_sources"] == 25
    remaining = boto3_client.scan(TableName=table)["Items"]
    assert not [i for i in remaining if i["SK"]["S"] == "langchain_history"]
    code, report = cli_json(*argv)
    assert code == 0 and report["sessions"] == 0

    # And back, into the same table, where LangChain's class finds it under its key dict.
    from langchain_community.chat_message_histories import (
        DynamoDBChatMessageHistory as LangChainHistory,
    )

    back = ["rollback", "--source", table, "--target", table, *connection]
    code, out = cli(*back)
    assert code == 1 and out == ""  # a composite target needs the list items' range key value
    code, report = cli_json(*back, "--legacy-sort-value", "langchain_history", "--verify")
    assert code == 0 and report["migrated"] == 25 and report["verified"] == 25
    for sid in ("s000", "s011", "s024"):
        legacy = LangChainHistory(
            table_name=table,
            session_id=sid,
            endpoint_url=dynamodb_endpoint,
            key={"PK": sid, "SK": "langchain_history"},
        )
        assert plain(messages_to_dict(legacy.messages)) == messages_to_dict(sessions[sid])


@needs_cli
def test_custom_names_and_reserved_words(
    dynamodb_endpoint: str | None, dynamodb_region: str | None, boto3_client: Any, new_table: Any
) -> None:
    source, target = new_table("list"), new_table("events")
    create_list_table(boto3_client, source, hash_key="id")
    create_table(
        target,
        endpoint_url=dynamodb_endpoint,
        region_name=dynamodb_region,
        primary_key_name="id",
        sort_key_name="seq",
    )
    sessions = small_sessions(5, seed=9)
    expiry = int(time.time()) + 600
    resource = resource_table(dynamodb_endpoint, dynamodb_region, source)
    for sid, messages in sessions.items():
        resource.put_item(Item={"id": sid, "data": legacy_history(messages), "ttl": expiry})
    code, report = cli_json(
        "migrate",
        "--source",
        source,
        "--target",
        target,
        "--primary-key-name",
        "id",
        "--history-key",
        "data",
        "--ttl-key-name",
        "ttl",
        "--verify",
        *endpoint_args(dynamodb_endpoint, dynamodb_region),
    )
    assert code == 0 and report["verified"] == 5
    history = DynamoDBChatMessageHistory(
        target,
        "s002",
        dynamodb_endpoint,
        primary_key_name="id",
        sort_key_name="seq",
        history_messages_key="data",
        ttl_key_name="ttl",
        region_name=dynamodb_region,
    )
    assert messages_to_dict(history.messages) == messages_to_dict(sessions["s002"])


def test_conflicting_partition_is_reported_not_duplicated(
    dynamodb_endpoint: str | None, dynamodb_region: str | None, boto3_client: Any, new_table: Any
) -> None:
    source, target = new_table("list"), new_table("events")
    create_list_table(boto3_client, source)
    create_table(target, endpoint_url=dynamodb_endpoint, region_name=dynamodb_region)
    sessions = small_sessions(6, seed=5)
    fill(dynamodb_endpoint, dynamodb_region, source, sessions)
    other = DynamoDBChatMessageHistory(
        target, "s004", dynamodb_endpoint, region_name=dynamodb_region
    )
    other.add_messages([HumanMessage("written by the new application first")])

    same = DynamoDBChatMessageHistory(
        target, "s001", dynamodb_endpoint, region_name=dynamodb_region
    )
    same.add_messages(sessions["s001"])  # the same content, stored by another writer

    for verify in (False, True):
        config = MigrationConfig(
            source,
            target,
            endpoint_url=dynamodb_endpoint,
            region_name=dynamodb_region,
            verify=verify,
        )
        report = migrate_list_to_events(config)
        assert report.conflicts == 1 and report.already == 1 + 4 * verify
        assert report.migrated == 4 * (not verify)
        assert [p[0] for p in report.problems["conflicts"]] == ["s004"]
    argv = ["migrate", "--source", source, "--target", target, "--verify", "--quiet"]
    code, text = cli(*argv, *endpoint_args(dynamodb_endpoint, dynamodb_region))
    assert code == 1  # a conflict is left undone (exit 1); nothing verified differs (3)
    assert "s004: the target partition already holds other events" in text
    assert text.rstrip().endswith("result: 1 conflict (exit 1)")
    assert [m.content for m in other.messages] == ["written by the new application first"]
    assert messages_to_dict(same.messages) == messages_to_dict(sessions["s001"])
    items = event_partitions(boto3_client, target)
    assert len(items["s001"]) == 1  # not written twice (one item holds the session)


# -- the write limiter ---------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds


def test_limiter_accounting_with_a_fake_clock() -> None:
    clock = FakeClock()
    limiter = WriteLimiter(50, clock=clock, sleep=clock.sleep)
    rng = random.Random(4)
    for _ in range(400):
        estimate = float(rng.randint(1, 20))
        limiter.acquire(estimate)
        actual = estimate * rng.choice([0.5, 1.0, 1.0, 2.0])
        limiter.settle(estimate, actual)
        elapsed = clock.now - limiter.started
        assert limiter.consumed <= limiter.burst + 50 * elapsed + limiter.largest
    assert limiter.consumed > 2000
    elapsed = clock.now - limiter.started
    assert limiter.consumed / elapsed == pytest.approx(50, rel=0.15)
    assert clock.slept == pytest.approx(limiter.waited)


def test_limiter_passes_requests_larger_than_its_burst() -> None:
    clock = FakeClock()
    limiter = WriteLimiter(10, clock=clock, sleep=clock.sleep)
    for _ in range(5):
        limiter.acquire(400.0)  # one 400 KB item at 10 WCU/s: must not wait forever
        limiter.settle(400.0, 400.0)
    assert clock.now - limiter.started == pytest.approx(4 * 400 / 10, rel=0.01)


@needs_cli
def test_max_wcu_caps_the_reported_write_rate(
    dynamodb_endpoint: str | None, dynamodb_region: str | None, boto3_client: Any, new_table: Any
) -> None:
    source, target = new_table("list"), new_table("events")
    create_list_table(boto3_client, source)
    create_table(target, endpoint_url=dynamodb_endpoint, region_name=dynamodb_region)
    rng = random.Random(2)
    sessions = {f"w{i:02d}": [HumanMessage(random_text(rng, 3000))] for i in range(60)}
    fill(dynamodb_endpoint, dynamodb_region, source, sessions)
    code, report = cli_json(
        "migrate",
        "--source",
        source,
        "--target",
        target,
        "--max-wcu",
        "100",
        *endpoint_args(dynamodb_endpoint, dynamodb_region),
    )
    assert code == 0 and report["migrated"] == 60
    # Every write went through the limiter, and it let through no more than its rate allows.
    assert report["limiter_units"] == report["consumed_wcu"] >= 180
    assert report["limiter_wait_seconds"] > 0
    assert report["limiter_units"] <= 100 * report["elapsed"] + 100 + 10


def test_item_size_matches_dynamodb_limit(
    dynamodb_endpoint: str | None, dynamodb_region: str | None, boto3_client: Any, new_table: Any
) -> None:
    """The size rule used to refuse oversize rollbacks agrees with DynamoDB at the limit."""
    table = new_table("size")
    create_list_table(boto3_client, table)
    resource = resource_table(dynamodb_endpoint, dynamodb_region, table)
    base = {"SessionId": "x", "History": legacy_history([HumanMessage("a", id="1")])}
    pad = 409_600 - python_item_size(base)
    fits = {"SessionId": "x", "History": legacy_history([HumanMessage("a" * (1 + pad), id="1")])}
    assert python_item_size(fits) == 409_600
    resource.put_item(Item=fits)
    over = {"SessionId": "x", "History": legacy_history([HumanMessage("a" * (2 + pad), id="1")])}
    with pytest.raises(Exception, match="size"):
        resource.put_item(Item=over)


def test_resume_after_a_kill_between_stage_and_commit(
    dynamodb_endpoint: str | None,
    dynamodb_region: str | None,
    boto3_client: Any,
    new_table: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A staged session (here: over 256 KB, as a write that lost a race is staged); a run killed
    after writing the stage (before its commit) is finished by the next run, which writes no
    second copy."""
    staged_over_256_kb(monkeypatch)
    source, target = new_table("list"), new_table("events")
    create_list_table(boto3_client, source)
    create_table(target, endpoint_url=dynamodb_endpoint, region_name=dynamodb_region)
    # compressed messages (each an item of its own), over 256 KB in all: staged
    rng = random.Random(9)
    messages: list[BaseMessage] = [
        HumanMessage("".join(rng.choices(string.ascii_letters, k=4600))) for _ in range(75)
    ]
    fill(dynamodb_endpoint, dynamodb_region, source, {"big": messages})
    store = EventStore(event_items(target))
    sender = Sender(Binding.resolve(target, dynamodb_endpoint, dynamodb_region), CapacityMeter())
    plan = plan_session("big", messages, None, store.items.attribute_names)
    assert len(plan.requests) >= 2  # stages, then the commit
    for request in plan.requests[:-1]:  # what the killed run had written
        sender.run(store.insert_events("big", request))
    assert (
        DynamoDBChatMessageHistory(
            target, "big", dynamodb_endpoint, region_name=dynamodb_region
        ).messages
        == []
    )  # a stage without its commit is invisible

    config = MigrationConfig(
        source, target, endpoint_url=dynamodb_endpoint, region_name=dynamodb_region, verify=True
    )
    report = migrate_list_to_events(config)
    assert report.migrated == 1 and report.verified == 1 and report.ok
    items = event_partitions(boto3_client, target)["big"]
    check_exactly_once(store, items, messages)
    assert len(items) == plan.items
    again = migrate_list_to_events(config)
    assert again.already == 1 and again.migrated == 0


def test_progress_line_shows_rates_and_eta() -> None:
    from chathist.bulk import Report
    from chathist.cli.migrate import ProgressLine

    stream = io.StringIO()
    line = ProgressLine("migrate", stream)
    report = Report("list-to-events", "a", "b", sessions=250, messages=5000, elapsed=10.0)
    report.estimated_sessions = 1000
    text = line.line(report)
    assert text.startswith("migrate: 250 sessions (25/s) | 5,000 messages (500/s)")
    assert "25%" in text and "ETA 0:30" in text
    rollback = Report("events-to-list", "a", "b", sessions=12, messages=24, elapsed=6.0)
    rollback.estimated_items, rollback.scanned_items = 600, 600  # keys scanned a page ahead
    text = line.line(rollback)
    assert "%" not in text and "ETA" not in text  # no claim of 100% with 12 sessions done
    assert "scanned 600 of ~600 items" in text


# -- operator paths: a missing target, conflicts, --overwrite, exit codes, Ctrl-C --------------


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The one line a failed command printed on stderr."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("chathist: error: "), lines
    return lines[0]


@needs_cli
def test_rollback_to_a_missing_target_names_the_table_it_needs(
    dynamodb_endpoint: str | None,
    dynamodb_region: str | None,
    boto3_client: Any,
    new_table: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Following the error's hint verbatim gives a table the rollback accepts."""
    events, back = new_table("events"), new_table("back")
    create_table(events, endpoint_url=dynamodb_endpoint, region_name=dynamodb_region)
    DynamoDBChatMessageHistory(
        events, "s1", dynamodb_endpoint, region_name=dynamodb_region
    ).add_messages([HumanMessage("hi"), AIMessage("hello")])
    connection = endpoint_args(dynamodb_endpoint, dynamodb_region)
    rollback = ["rollback", "--source", events, "--target", back, "--quiet", *connection]
    code, out = cli(*rollback)
    assert code == 1 and out == ""
    line = error_line(capsys)
    assert f"table {back!r} does not exist" in line
    hint = re.search(r"`(chathist create-table [^`]+)`", line)
    assert hint is not None, line
    assert "--layout list" in hint.group(1)
    code, _ = cli(*shlex.split(hint.group(1))[1:], *connection)
    assert code == 0, capsys.readouterr().err
    code, out = cli(*rollback, "--verify")
    assert code == 0, out
    assert "sessions rolled back  1" in out and "result: ok (exit 0)" in out

    missing_source = ["rollback", "--source", f"{events}-nope", "--target", back, *connection]
    assert cli(*missing_source)[0] == 1
    assert "check --source" in error_line(capsys)


@needs_cli
def test_rollback_conflict_exits_1_and_overwrite_replaces_the_item(
    dynamodb_endpoint: str | None, dynamodb_region: str | None, boto3_client: Any, new_table: Any
) -> None:
    from langchain_community.chat_message_histories import (
        DynamoDBChatMessageHistory as LangChainHistory,
    )

    source, events, back = new_table("list"), new_table("events"), new_table("back")
    for name in (source, back):
        create_list_table(boto3_client, name)
    create_table(events, endpoint_url=dynamodb_endpoint, region_name=dynamodb_region)
    sessions = small_sessions(3, seed=11)
    fill(dynamodb_endpoint, dynamodb_region, source, sessions)
    connection = endpoint_args(dynamodb_endpoint, dynamodb_region)
    assert cli_json("migrate", "--source", source, "--target", events, *connection)[0] == 0
    rollback = ["rollback", "--source", events, "--target", back, *connection]
    assert cli_json(*rollback, "--verify")[0] == 0

    # The session changes after the migration; the list item no longer matches it.
    changed = DynamoDBChatMessageHistory(
        events, "s001", dynamodb_endpoint, region_name=dynamodb_region
    )
    changed.add_messages([AIMessage("a late answer")])
    expected = changed.messages

    code, text = cli(*rollback, "--verify", "--quiet")
    assert code == 1  # a conflict is left undone: exit 1, not 3 ("verified 2 (0 differences)")
    assert re.search(r"^  conflicts\s+1$", text, re.MULTILINE)
    assert "the target's list item differs" in text and "--overwrite" in text
    assert text.rstrip().endswith("result: 1 conflict (exit 1)")
    legacy = LangChainHistory(table_name=back, session_id="s001", endpoint_url=dynamodb_endpoint)
    assert len(legacy.messages) == len(expected) - 1  # left alone

    code, report = cli_json(*rollback, "--overwrite", "--dry-run")
    assert code == 0 and report["overwritten"] == 1 and report["items_written"] == 1
    assert len(legacy.messages) == len(expected) - 1  # a dry run writes nothing
    code, text = cli(*rollback, "--overwrite", "--dry-run", "--quiet")
    assert "would overwrite (a differing list item, with --overwrite): 1" in text
    assert "overwritten (" not in text  # nothing was

    code, text = cli(*rollback, "--overwrite", "--verify", "--quiet")
    assert code == 0, text
    assert re.search(r"^  overwritten\s+1$", text, re.MULTILINE)
    assert re.search(r"^  verified\s+3 \(0 differences\)$", text, re.MULTILINE)
    assert "overwritten (a differing list item replaced): 1" in text and "s001" in text
    assert plain(messages_to_dict(legacy.messages)) == messages_to_dict(expected)
    code, report = cli_json(*rollback)
    assert code == 0 and report["already"] == 3 and report["overwritten"] == 0


def test_overwrite_never_loses_a_write_made_after_the_read(
    dynamodb_endpoint: str | None,
    dynamodb_region: str | None,
    boto3_client: Any,
    new_table: Any,
) -> None:
    """--overwrite replaces only the item it read: a LangChain write landing between the read
    and the put makes the put fail, and the session is reported as a conflict."""
    from langchain_community.chat_message_histories import (
        DynamoDBChatMessageHistory as LangChainHistory,
    )

    events, back = new_table("events"), new_table("back")
    create_table(events, endpoint_url=dynamodb_endpoint, region_name=dynamodb_region)
    create_list_table(boto3_client, back)
    DynamoDBChatMessageHistory(
        events, "s1", dynamodb_endpoint, region_name=dynamodb_region
    ).add_messages([HumanMessage("from the events")])
    old = LangChainHistory(table_name=back, session_id="s1", endpoint_url=dynamodb_endpoint)
    old.add_user_message("an older list item")

    reads = []

    def someone_writes_after_the_read(**kwargs: Any) -> None:
        reads.append(kwargs)
        if len(reads) == 1:
            old.add_ai_message("written by LangChain meanwhile")

    # The rollback's client of the target table (one per table, endpoint and region).
    target_client = DynamoDBChatMessageHistory(
        back, "s1", dynamodb_endpoint, region_name=dynamodb_region
    ).client
    config = MigrationConfig(
        events,
        back,
        endpoint_url=dynamodb_endpoint,
        region_name=dynamodb_region,
        overwrite=True,
        segments=1,
    )
    with hooked(target_client, "after-call.dynamodb.GetItem", someone_writes_after_the_read):
        report = rollback_events_to_list(config)
    assert len(reads) == 1
    assert report.conflicts == 1 and report.overwritten == 0 and report.migrated == 0
    assert "changed while the rollback ran" in report.problems["conflicts"][0][1]
    assert [m.content for m in old.messages] == [
        "an older list item",
        "written by LangChain meanwhile",
    ]


def test_overwrite_replaces_an_item_without_a_history_list(
    dynamodb_endpoint: str | None, dynamodb_region: str | None, boto3_client: Any, new_table: Any
) -> None:
    """An item holding no list (another application's, or a half-written one) is a conflict;
    --overwrite replaces it only while it still has no list."""
    events, back = new_table("events"), new_table("back")
    create_table(events, endpoint_url=dynamodb_endpoint, region_name=dynamodb_region)
    create_list_table(boto3_client, back)
    DynamoDBChatMessageHistory(
        events, "s1", dynamodb_endpoint, region_name=dynamodb_region
    ).add_messages([HumanMessage("from the events")])
    boto3_client.put_item(TableName=back, Item={"SessionId": {"S": "s1"}, "note": {"S": "x"}})
    config = MigrationConfig(
        events, back, endpoint_url=dynamodb_endpoint, region_name=dynamodb_region, verify=True
    )
    report = rollback_events_to_list(config)
    assert report.conflicts == 1 and "no History list" in report.problems["conflicts"][0][1]
    report = rollback_events_to_list(dataclasses.replace(config, overwrite=True))
    assert report.overwritten == 1 and report.verified == 1 and report.ok
    item = boto3_client.get_item(TableName=back, Key={"SessionId": {"S": "s1"}})["Item"]
    assert "note" not in item and len(item["History"]["L"]) == 1


def test_exit_codes_say_what_went_wrong() -> None:
    from chathist.bulk import Report
    from chathist.cli.migrate import exit_code, outcome

    def report(**counts: Any) -> Report:
        return Report("events-to-list", "a", "b", verify=True, **counts)

    assert exit_code(report()) == 0 and outcome(report()) == "result: ok (exit 0)"
    assert exit_code(report(differences=2)) == 3
    assert outcome(report(differences=2)) == "result: 2 differences (exit 3)"
    for kind in ("conflicts", "failures", "too_large"):
        assert exit_code(report(**{kind: 1})) == 1
        assert exit_code(report(**{kind: 1}, differences=1)) == 1  # left undone wins over 3
    assert outcome(report(conflicts=1, too_large=2, differences=1)) == (
        "result: 1 conflict, 2 too large, 1 difference (exit 1)"
    )
    stopped = report(conflicts=1, interrupted=True)
    assert exit_code(stopped) == 130
    assert outcome(stopped) == (
        "result: interrupted with 1 conflict so far (exit 130); run the same command again to"
        " resume"
    )


@needs_cli
def test_interrupted_migration_prints_what_was_done_and_resumes(
    dynamodb_endpoint: str | None,
    dynamodb_region: str | None,
    boto3_client: Any,
    new_table: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Ctrl-C (a KeyboardInterrupt, here raised in a worker after its 4th session) ends the
    run with the partial report, a hint that a re-run resumes, and exit 130."""
    from chathist.cli import main
    from chathist.cli.migrate import ProgressLine

    source, target = new_table("list"), new_table("events")
    create_list_table(boto3_client, source)
    create_table(target, endpoint_url=dynamodb_endpoint, region_name=dynamodb_region)
    sessions = small_sessions(12, seed=4)
    fill(dynamodb_endpoint, dynamodb_region, source, sessions)
    calls = []

    def interrupt(line: ProgressLine, report: Any) -> None:
        calls.append(report.sessions)
        if len(calls) == 4:
            raise KeyboardInterrupt

    monkeypatch.setattr(ProgressLine, "update", interrupt)
    argv = ["migrate", "--source", source, "--target", target, "--segments", "1"]
    argv += endpoint_args(dynamodb_endpoint, dynamodb_region)
    assert main(argv) == 130
    captured = capsys.readouterr()
    assert "INTERRUPTED" in captured.out.splitlines()[0]
    assert re.search(r"^  sessions seen\s+4$", captured.out, re.MULTILINE)
    assert re.search(r"^  sessions migrated\s+4$", captured.out, re.MULTILINE)
    assert captured.out.rstrip().endswith(
        "result: interrupted (exit 130); run the same command again to resume"
    )
    assert captured.err.strip() == (
        "chathist: interrupted after 4 sessions; run the same command again to resume"
        " (finished sessions are skipped)"
    )
    assert len(event_partitions(boto3_client, target)) == 4

    monkeypatch.undo()
    code, report = cli_json(*argv, "--verify")
    assert code == 0 and report["already"] == 4 and report["migrated"] == 8
    assert report["verified"] == 12 and report["interrupted"] is False


@needs_cli
def test_ctrl_c_on_a_running_migrate_prints_the_partial_report(
    dynamodb_endpoint: str | None, dynamodb_region: str | None, boto3_client: Any, new_table: Any
) -> None:
    """The real thing: SIGINT to a ``chathist migrate`` process slowed by --max-wcu."""
    source, target = new_table("list"), new_table("events")
    create_list_table(boto3_client, source)
    create_table(target, endpoint_url=dynamodb_endpoint, region_name=dynamodb_region)
    fill(
        dynamodb_endpoint,
        dynamodb_region,
        source,
        {f"c{i:03d}": [HumanMessage(f"message {i}")] for i in range(200)},
    )
    argv = ["migrate", "--source", source, "--target", target, "--max-wcu", "20", "--quiet"]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chathist.cli",
            *argv,
            *endpoint_args(dynamodb_endpoint, dynamodb_region),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A shell starting the tests in the background ignores SIGINT for its children.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            if boto3_client.scan(TableName=target, Select="COUNT")["Count"] >= 10:
                break
            time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    done = boto3_client.scan(TableName=target, Select="COUNT")["Count"]
    assert 10 <= done < 200
    assert re.search(rf"^  sessions migrated\s+{done}$", out, re.MULTILINE), out
    assert "result: interrupted" in out
    assert "run the same command again to resume" in err and "Traceback" not in err


# -- DynamoDB errors arrive as chathist's errors -----------------------------------------------


def throttled(**_: Any) -> tuple[AWSResponse, dict[str, Any]]:
    """A ``before-call`` answer: DynamoDB refusing the request (as after botocore's retries)."""
    parsed = {
        "Error": {"Code": "ThrottlingException", "Message": "Rate of requests exceeds the limit"},
        "ResponseMetadata": {"HTTPStatusCode": 400},
    }
    return AWSResponse("http://dynamodb.invalid", 400, {}, None), parsed


def client_of(table: str, endpoint: str | None, region: str | None) -> Any:
    """The botocore client chathist sends through for ``table`` (one per table, endpoint and
    region: the bulk run's too)."""
    return DynamoDBChatMessageHistory(table, "any", endpoint, region_name=region).client


def filled_tables(
    boto3_client: Any,
    new_table: Any,
    endpoint: str | None,
    region: str | None,
    sessions: dict[str, list[BaseMessage]],
) -> tuple[str, str]:
    """A list table holding ``sessions`` and an empty event table."""
    lists, events = new_table("list"), new_table("events")
    create_list_table(boto3_client, lists)
    create_table(events, endpoint_url=endpoint, region_name=region)
    fill(endpoint, region, lists, sessions)
    return lists, events


@pytest.mark.parametrize("direction", ["migrate", "rollback"])
def test_a_failed_scan_raises_a_storage_error_not_a_client_error(
    direction: str,
    dynamodb_endpoint: str | None,
    dynamodb_region: str | None,
    boto3_client: Any,
    new_table: Any,
) -> None:
    lists, events = filled_tables(
        boto3_client, new_table, dynamodb_endpoint, dynamodb_region, small_sessions(3)
    )
    source, target = (lists, events) if direction == "migrate" else (events, lists)
    run = migrate_list_to_events if direction == "migrate" else rollback_events_to_list
    config = MigrationConfig(
        source, target, endpoint_url=dynamodb_endpoint, region_name=dynamodb_region, segments=2
    )
    client = client_of(source, dynamodb_endpoint, dynamodb_region)
    with (
        hooked(client, "before-call.dynamodb.Scan", throttled),
        pytest.raises(StorageError, match="ThrottlingException") as raised,
    ):
        run(config)
    assert not isinstance(raised.value, ClientError)
    assert raised.value.code == "ThrottlingException"
    assert isinstance(raised.value.__cause__, ClientError)  # kept for --debug


def test_a_failed_write_is_a_listed_failure_and_a_rerun_finishes(
    dynamodb_endpoint: str | None, dynamodb_region: str | None, boto3_client: Any, new_table: Any
) -> None:
    sessions = {f"t{i}": [HumanMessage(f"message {i}")] for i in range(4)}
    source, target = filled_tables(
        boto3_client, new_table, dynamodb_endpoint, dynamodb_region, sessions
    )
    config = MigrationConfig(
        source, target, endpoint_url=dynamodb_endpoint, region_name=dynamodb_region, segments=1
    )
    with hooked(
        client_of(target, dynamodb_endpoint, dynamodb_region),
        "before-call.dynamodb.PutItem",
        throttled,
    ):
        report = migrate_list_to_events(config)
    assert report.failures == 4 and report.migrated == 0 and not report.ok
    details = [detail for _, detail in report.problems["failures"]]
    assert all(d.startswith("StorageError: PutItem on") for d in details), details
    assert all("ThrottlingException" in d for d in details)
    again = migrate_list_to_events(dataclasses.replace(config, verify=True))
    assert again.migrated == 4 and again.verified == 4 and again.ok
    assert again.scanned_items == 4 and again.sessions == 4


def test_a_target_deleted_mid_run_raises_table_not_found(
    dynamodb_endpoint: str | None, dynamodb_region: str | None, boto3_client: Any, new_table: Any
) -> None:
    source, target = filled_tables(
        boto3_client, new_table, dynamodb_endpoint, dynamodb_region, small_sessions(6)
    )
    writes: list[str] = []

    def delete_the_target(**_: Any) -> None:
        writes.append("write")
        if len(writes) == 1:
            boto3_client.delete_table(TableName=target)

    client = client_of(target, dynamodb_endpoint, dynamodb_region)
    config = MigrationConfig(
        source, target, endpoint_url=dynamodb_endpoint, region_name=dynamodb_region, segments=1
    )
    with (
        hooked(client, "after-call.dynamodb.PutItem", delete_the_target),
        hooked(client, "after-call.dynamodb.TransactWriteItems", delete_the_target),
        pytest.raises(TableNotFoundError, match=f"table {target!r} does not exist"),
    ):
        migrate_list_to_events(config)
