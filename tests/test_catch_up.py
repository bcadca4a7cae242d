"""The catch-up run: ``chathist migrate`` run again after LangChain's class kept writing sessions
it had migrated moves only their new tails, once, against DynamoDB Local.

The old application is played by `tests.test_migration.fill`, which writes each session's item
exactly as LangChain's ``DynamoDBChatMessageHistory`` does (the whole ``History`` list, through
boto3's resource layer).
"""

from __future__ import annotations

import dataclasses
import random
import string
from collections import Counter
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, messages_to_dict

from chathist import DynamoDBChatMessageHistory
from chathist.bulk import MigrationConfig, Report, migrate_list_to_events
from chathist.bulk.compare import migrated_part
from chathist.bulk.report import Problem
from chathist.bulk.to_events import WRITER_PREFIX
from chathist.core.codec import encode_message
from chathist.core.events import Event
from chathist.core.plan import Limits, plan_write
from tests.helpers import hooked, staged_over_256_kb
from tests.reliability import install, record
from tests.test_migration import (
    cli,
    client_of,
    endpoint_args,
    event_partitions,
    fill,
    filled_tables,
)

SECTION = "catch_up"


@pytest.fixture(scope="session", autouse=True)
def _reliability_report(request: pytest.FixtureRequest) -> None:
    install(request)


class Crash(Exception):
    """What kills the run part-way (raised from a botocore hook: it stops the whole run)."""


def turn(session: str, n: int) -> list[BaseMessage]:
    """One turn of ``session``: two small messages (one packed item when written together)."""
    return [HumanMessage(f"{session} asks {n}"), AIMessage(f"{session} answers {n}")]


def big_turn(seed: int) -> list[BaseMessage]:
    """Compressed messages over 256 KB in all, in a legacy item under 400 KB: one transaction,
    or a stage and its commit where the test calls `staged_over_256_kb`."""
    rng = random.Random(seed)
    return [HumanMessage("".join(rng.choices(string.ascii_letters, k=4600))) for _ in range(76)]


def read(target: str, session: str, where: dict[str, Any]) -> list[dict[str, Any]]:
    return messages_to_dict(DynamoDBChatMessageHistory(target, session, **where).messages)


def check_moved(
    test: str, target: str, legacy: dict[str, list[BaseMessage]], where: dict[str, Any]
) -> None:
    """Every session reads exactly as its legacy list; lost and duplicated messages recorded."""
    for session, messages in legacy.items():
        found = [
            str(m.content) for m in DynamoDBChatMessageHistory(target, session, **where).messages
        ]
        seen, expected = Counter(found), Counter(str(m.content) for m in messages)
        record(SECTION, test, "sessions checked")
        record(SECTION, test, "lost", sum((expected - seen).values()))
        record(SECTION, test, "duplicated", sum((seen - expected).values()))
        assert read(target, session, where) == messages_to_dict(messages)


def writers(items: list[dict[str, Any]]) -> Counter[str]:
    """Items per writer id of one partition."""
    return Counter(item["w"]["S"] for item in items if "w" in item)


def setup(
    boto3_client: Any, new_table: Any, endpoint: str | None, region: str | None
) -> tuple[dict[str, list[BaseMessage]], MigrationConfig, dict[str, Any]]:
    """Three sessions (one of them migrated as a staged write) bulk-migrated once."""
    legacy = {"a": turn("a", 0), "b": turn("b", 0) + turn("b", 1), "big": big_turn(1)}
    source, target = filled_tables(boto3_client, new_table, endpoint, region, legacy)
    config = MigrationConfig(
        source, target, endpoint_url=endpoint, region_name=region, segments=1, verify=True
    )
    first = migrate_list_to_events(config)
    assert first.migrated == 3 and first.ok
    return legacy, config, {"endpoint_url": endpoint, "region_name": region}


def old_app_writes(
    config: MigrationConfig, legacy: dict[str, list[BaseMessage]], grown: dict[str, Any]
) -> None:
    """LangChain's class appends ``grown[session]`` to each session's legacy item."""
    for session, more in grown.items():
        legacy[session] = legacy[session] + more
    fill(config.endpoint_url, config.region_name, config.source, legacy)


def test_old_app_writes_after_migration_then_catch_up_moves_exactly_the_tail(
    dynamodb_endpoint: str | None, dynamodb_region: str | None, boto3_client: Any, new_table: Any
) -> None:
    legacy, config, where = setup(boto3_client, new_table, dynamodb_endpoint, dynamodb_region)
    old_app_writes(config, legacy, {"a": turn("a", 1), "big": turn("big", 1)})

    report = migrate_list_to_events(config)
    assert (report.caught_up, report.already, report.conflicts, report.verified) == (2, 1, 0, 3)
    assert report.ok and report.messages == 4 and report.migrated == 0
    assert sorted(report.problems[Problem.CAUGHT_UP]) == [
        ("a", "moved 2 new messages after the 2 migrated before"),
        ("big", "moved 2 new messages after the 76 migrated before"),
    ]
    check_moved("catch-up after the old application wrote", config.target, legacy, where)
    items = event_partitions(boto3_client, config.target)
    # the tail of two small messages is one packed item, under a writer id of its own
    assert sorted(writers(items["a"]).values()) == [1, 1]
    assert all(w.startswith(WRITER_PREFIX) for w in writers(items["big"]))

    # the old application writes on: a second catch-up moves the next tail after the first
    old_app_writes(config, legacy, {"a": turn("a", 2) + big_turn(2), "b": turn("b", 2)})
    again = migrate_list_to_events(config)
    assert (again.caught_up, again.already, again.verified) == (2, 1, 3) and again.ok
    check_moved("catch-up after the old application wrote", config.target, legacy, where)


def test_two_catch_up_runs_store_nothing_twice(
    dynamodb_endpoint: str | None, dynamodb_region: str | None, boto3_client: Any, new_table: Any
) -> None:
    legacy, config, where = setup(boto3_client, new_table, dynamodb_endpoint, dynamodb_region)
    old_app_writes(config, legacy, {"a": turn("a", 1), "b": turn("b", 2) + big_turn(3)})
    assert migrate_list_to_events(config).caught_up == 2
    before = event_partitions(boto3_client, config.target)
    for _ in range(2):
        again = migrate_list_to_events(config)
        assert (again.caught_up, again.already, again.items_written) == (0, 3, 0)
        assert again.ok and again.verified == 3
    assert event_partitions(boto3_client, config.target) == before
    check_moved("two catch-up runs", config.target, legacy, where)


@pytest.mark.parametrize(
    "where_it_dies",
    [
        "before-call.dynamodb.PutItem",  # the tail's request never sent
        "after-call.dynamodb.PutItem",  # the tail stored, its answer never seen
        "after-call.dynamodb.TransactWriteItems",  # a large tail's stage stored, no commit
    ],
)
def test_a_crash_mid_catch_up_then_a_rerun_moves_the_tail_exactly_once(
    where_it_dies: str,
    dynamodb_endpoint: str | None,
    dynamodb_region: str | None,
    boto3_client: Any,
    new_table: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    staged_over_256_kb(monkeypatch)  # the large tail: a stage, then its commit (a PutItem)
    legacy, config, where = setup(boto3_client, new_table, dynamodb_endpoint, dynamodb_region)
    old_app_writes(config, legacy, {"b": big_turn(4) + turn("b", 2)})
    calls: list[str] = []

    def die(**_: Any) -> None:
        calls.append(where_it_dies)
        raise Crash(where_it_dies)

    with (
        hooked(client_of(config.target, dynamodb_endpoint, dynamodb_region), where_it_dies, die),
        pytest.raises(Crash),
    ):
        migrate_list_to_events(config)
    assert calls  # the run died inside the catch-up's writes
    report = migrate_list_to_events(config)
    assert report.ok and report.verified == 3
    assert report.caught_up + report.already == 3 and report.caught_up <= 1
    test = (
        f"catch-up killed part-way ({where_it_dies.split('.')[0]} {where_it_dies.split('.')[-1]})"
    )
    record(SECTION, test, "runs killed part-way")
    check_moved(test, config.target, legacy, where)
    items = event_partitions(boto3_client, config.target)["b"]
    assert len({item["SK"]["S"] for item in items}) == len(items)
    assert len(writers(items)) == 2  # the migration and one catch-up write: no second copy
    again = migrate_list_to_events(config)
    assert again.already == 3 and again.items_written == 0


def test_a_diverged_session_is_reported_and_left_alone(
    dynamodb_endpoint: str | None, dynamodb_region: str | None, boto3_client: Any, new_table: Any
) -> None:
    legacy, config, where = setup(boto3_client, new_table, dynamodb_endpoint, dynamodb_region)
    before = event_partitions(boto3_client, config.target)
    # "a" rewritten (its first message is not what was migrated), "b" cut short; "big" grows
    legacy["a"] = [HumanMessage("a rewrote history"), *turn("a", 7)]
    legacy["b"] = legacy["b"][:1]
    old_app_writes(config, legacy, {"big": turn("big", 1)})

    report = migrate_list_to_events(config)
    assert (report.diverged, report.caught_up) == (2, 1) and not report.ok
    details = dict(report.problems[Problem.DIVERGED])
    assert details["a"].startswith("the legacy list no longer starts with the 2 migrated")
    assert "message 0 (human) differs in content" in details["a"]
    assert "1 messages instead of 4" in details["b"]
    after = event_partitions(boto3_client, config.target)
    test = "diverged sessions"
    record(SECTION, test, "diverged sessions reported", report.diverged)
    touched = sum(after[s] != before[s] for s in ("a", "b"))
    record(SECTION, test, "diverged sessions written to", touched)
    assert touched == 0
    assert read(config.target, "b", where) == messages_to_dict(turn("b", 0) + turn("b", 1))
    argv = ["migrate", "--source", config.source, "--target", config.target, "--quiet"]
    code, text = cli(*argv, *endpoint_args(dynamodb_endpoint, dynamodb_region))
    assert code == 1 and "diverged" in text
    assert text.rstrip().endswith("result: 2 diverged (exit 1)")


def test_a_session_cleared_after_migration_gets_no_legacy_message_back(
    dynamodb_endpoint: str | None, dynamodb_region: str | None, boto3_client: Any, new_table: Any
) -> None:
    legacy, config, where = setup(boto3_client, new_table, dynamodb_endpoint, dynamodb_region)
    DynamoDBChatMessageHistory(config.target, "a", **where).clear()
    old_app_writes(config, legacy, {"a": turn("a", 1)})
    before = event_partitions(boto3_client, config.target)["a"]

    report = migrate_list_to_events(config)
    assert report.cleared == 1 and report.already == 2 and report.ok
    assert report.problems[Problem.CLEARED] == [
        ("a", f"cleared in {config.target!r}; its 4 legacy messages are not moved")
    ]
    assert read(config.target, "a", where) == []
    test = "session cleared after the migration"
    record(SECTION, test, "cleared messages brought back", len(read(config.target, "a", where)))
    assert event_partitions(boto3_client, config.target)["a"] == before


def test_the_application_writing_events_before_the_final_catch_up(
    dynamodb_endpoint: str | None, dynamodb_region: str | None, boto3_client: Any, new_table: Any
) -> None:
    """Switched before the final catch-up: the new application's events stay where they are,
    and the legacy tail goes after them (as a lazy migration places it); verify compares the
    migration's writes with the legacy list."""
    legacy, config, where = setup(boto3_client, new_table, dynamodb_endpoint, dynamodb_region)
    old_app_writes(config, legacy, {"a": turn("a", 1)})
    DynamoDBChatMessageHistory(config.target, "a", **where).add_messages(turn("new app", 0))
    report = migrate_list_to_events(config)
    assert report.caught_up == 1 and report.verified == 3 and report.ok
    assert read(config.target, "a", where) == messages_to_dict(
        turn("a", 0) + turn("new app", 0) + turn("a", 1)
    )
    assert migrate_list_to_events(config).already == 3


def test_a_session_rolled_back_with_the_new_apps_messages_is_not_moved_twice(
    dynamodb_endpoint: str | None, dynamodb_region: str | None, boto3_client: Any, new_table: Any
) -> None:
    """A rollback writes the application's messages back into the legacy item; the old
    application then writes on. The catch-up finds the legacy tail's first message already
    stored by the application and leaves the session alone: nothing stored twice."""
    legacy, config, where = setup(boto3_client, new_table, dynamodb_endpoint, dynamodb_region)
    DynamoDBChatMessageHistory(config.target, "a", **where).add_messages(turn("new app", 0))
    rolled_back = {"a": turn("new app", 0) + turn("a", 1)}  # what rollback + old app leave
    old_app_writes(config, legacy, rolled_back)
    before = event_partitions(boto3_client, config.target)["a"]

    report = migrate_list_to_events(config)
    assert report.conflicts == 1 and not report.ok
    assert report.problems[Problem.CONFLICT] == [
        (
            "a",
            "new legacy message 2 is already stored by another writer (was the session rolled"
            " back to this item?); left alone",
        )
    ]
    found = [
        str(m.content) for m in DynamoDBChatMessageHistory(config.target, "a", **where).messages
    ]
    test = "session rolled back, then migrated again"
    record(SECTION, test, "duplicated", sum((Counter(found) - Counter(set(found))).values()))
    assert found == [str(m.content) for m in turn("a", 0) + turn("new app", 0)]
    assert event_partitions(boto3_client, config.target)["a"] == before


def test_a_dry_run_counts_the_tail_and_writes_nothing(
    dynamodb_endpoint: str | None, dynamodb_region: str | None, boto3_client: Any, new_table: Any
) -> None:
    legacy, config, where = setup(boto3_client, new_table, dynamodb_endpoint, dynamodb_region)
    old_app_writes(config, legacy, {"a": turn("a", 1)})
    before = event_partitions(boto3_client, config.target)
    report: Report = migrate_list_to_events(dataclasses.replace(config, dry_run=True))
    assert report.caught_up == 1 and report.messages == 2 and report.items_written == 1
    assert report.problems[Problem.CAUGHT_UP] == [("a", "would move 2 new messages")]
    assert event_partitions(boto3_client, config.target) == before
    assert read(config.target, "a", where) == messages_to_dict(turn("a", 0))


def test_delete_source_after_a_catch_up_deletes_only_an_unchanged_item(
    dynamodb_endpoint: str | None, dynamodb_region: str | None, boto3_client: Any, new_table: Any
) -> None:
    legacy, config, where = setup(boto3_client, new_table, dynamodb_endpoint, dynamodb_region)
    old_app_writes(config, legacy, {"a": turn("a", 1)})
    report = migrate_list_to_events(dataclasses.replace(config, delete_source=True))
    assert report.caught_up == 1 and report.deleted_sources == 3 and report.ok
    assert boto3_client.scan(TableName=config.source)["Items"] == []
    assert read(config.target, "a", where) == messages_to_dict(legacy["a"])


# -- what the partition holds of the migration's writes (pure) -----------------------------------


@given(
    st.lists(
        st.tuples(st.sampled_from(["mig1.", "app-", "lm-"]), st.integers(1, 3)),
        max_size=8,
    ),
    st.booleans(),
)
def test_migrated_part_is_the_migration_writes_in_order_whoever_wrote_between(
    writes: list[tuple[str, int]], clear_last: bool
) -> None:
    """The sequence holds writes of several writers (one item per write, packed, or one per
    message); `migrated_part` returns the messages of the ``mig1.`` writes in sequence order,
    and says cleared once a clear lies above the first of them (anywhere, if there is none)."""
    limits = Limits(overhead=200)
    events: list[Event] = []
    expected: list[str] = []
    for index, (prefix, count) in enumerate(writes):
        texts = [f"{prefix}{index}.{k}" for k in range(count)]
        payloads = [encode_message(HumanMessage(t)) for t in texts]
        plan = plan_write(payloads, f"{prefix}{index}", replace(limits, pack=index % 2 == 0))
        events += plan.at(len(events))
        if prefix == "mig1.":
            expected += texts
    if clear_last:
        events.append(Event(len(events), "clear", writer="app-clear"))
    part = migrated_part((events, {}), WRITER_PREFIX)
    assert [str(m.content) for m in part.messages] == expected
    assert part.cleared == clear_last  # above the first of them, or anywhere if none
    assert all(str(e.writer).startswith(WRITER_PREFIX) for e in part.events)
