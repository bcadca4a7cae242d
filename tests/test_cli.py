"""The ``chathist`` command line, driven as a subprocess the way a user runs it."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    messages_to_dict,
)

from chathist import DynamoDBChatMessageHistory, create_table
from chathist.cli import main
from chathist.cli.sessions import import_plan
from chathist.core.sizes import item_size
from tests.helpers import create_list_table, without_aws_credentials

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

SUBCOMMANDS = ["local", "create-table", "show", "repair", "export", "import", "stats"]


def run_cli(
    endpoint: str | None, *args: str, stdin: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``python -m chathist.cli ARGS --endpoint-url ENDPOINT`` (no endpoint on real AWS)."""
    command = [sys.executable, "-m", "chathist.cli", *args]
    if endpoint is not None:
        command += ["--endpoint-url", endpoint]
    env = dict(os.environ)
    env.pop("CHATHIST_ENDPOINT_URL", None)
    return subprocess.run(
        command, input=stdin, capture_output=True, text=True, timeout=timeout, env=env
    )


def history(table: str, session: str, endpoint: str | None) -> DynamoDBChatMessageHistory:
    return DynamoDBChatMessageHistory(table_name=table, session_id=session, endpoint_url=endpoint)


def sample_conversation() -> list[BaseMessage]:
    """Messages that exercise the codec: unicode, floats, tool calls, a large payload."""
    return [
        SystemMessage("You are terse."),
        HumanMessage("Grüße, 世界! 🙂", id="m-1", additional_kwargs={"n": 1, "f": 0.1}),
        AIMessage(
            "",
            tool_calls=[{"name": "add", "args": {"a": 2, "b": 2.5}, "id": "call-1"}],
            usage_metadata={"input_tokens": 3, "output_tokens": 5, "total_tokens": 8},
        ),
        ToolMessage("4.5", tool_call_id="call-1"),
        AIMessage("x" * 450_000),  # larger than one DynamoDB item
    ]


@pytest.fixture
def other_table(
    dynamodb_endpoint: str | None, dynamodb_region: str | None, boto3_client: DynamoDBClient
) -> Iterator[str]:
    """A second fresh event table (an import target)."""
    name = f"chathist-test-{uuid.uuid4().hex[:12]}"
    create_table(name, endpoint_url=dynamodb_endpoint, region_name=dynamodb_region)
    try:
        yield name
    finally:
        with contextlib.suppress(Exception):
            boto3_client.delete_table(TableName=name)


def assert_one_error_line(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("chathist: error: ")
    assert "Traceback" not in result.stderr
    return lines[0]


# -- help, usage ------------------------------------------------------------------------------


def test_top_level_help_lists_commands_and_exit_codes() -> None:
    result = run_cli(None, "--help")
    assert result.returncode == 0
    for name in SUBCOMMANDS:
        assert re.search(rf"^\s+{re.escape(name)}\b", result.stdout, re.MULTILINE), name
    assert "exit codes:" in result.stdout
    for code in ("0", "1", "2", "3", "130"):
        assert re.search(rf"^\s+{code}\s", result.stdout, re.MULTILINE), code


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_help_has_examples_and_connection_options(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "examples:" in out
    assert f"chathist {command}" in out.split("examples:")[1]
    for option in ("--endpoint-url", "--region", "--profile", "--debug"):
        assert option in out


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(None, "show", "only-a-table").returncode == 2
    assert main(["no-such-command"]) == 2
    assert main([]) == 2
    assert main(["show", "T", "s", "--last", "x"]) == 2
    assert "usage:" in capsys.readouterr().err


# -- create-table -------------------------------------------------------------------------------


def test_create_table_then_again_is_a_no_op(
    dynamodb_endpoint: str | None, boto3_client: DynamoDBClient
) -> None:
    name = f"chathist-test-{uuid.uuid4().hex[:12]}"
    try:
        first = run_cli(dynamodb_endpoint, "create-table", name, "--ttl")
        assert first.returncode == 0, first.stderr
        assert "created" in first.stdout
        ttl = boto3_client.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        assert ttl.get("AttributeName") == "expireAt"
        second = run_cli(dynamodb_endpoint, "create-table", name)
        assert second.returncode == 0, second.stderr
        assert "already exists" in second.stdout
    finally:
        with contextlib.suppress(Exception):
            boto3_client.delete_table(TableName=name)


def test_wrong_schema_is_one_line_and_debug_shows_the_traceback(
    dynamodb_endpoint: str | None,
    boto3_client: DynamoDBClient,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name = f"chathist-test-{uuid.uuid4().hex[:12]}"
    create_list_table(boto3_client, name)
    try:
        line = assert_one_error_line(run_cli(dynamodb_endpoint, "create-table", name))
        assert name in line
        args = ["create-table", name, "--debug"]
        if dynamodb_endpoint is not None:
            args += ["--endpoint-url", dynamodb_endpoint]
        assert main(args) == 1
        err = capsys.readouterr().err
        assert "Traceback" in err and "TableSchemaError" in err
    finally:
        with contextlib.suppress(Exception):
            boto3_client.delete_table(TableName=name)


def test_missing_table_is_one_line(
    dynamodb_endpoint: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = f"chathist-test-missing-{uuid.uuid4().hex[:8]}"
    line = assert_one_error_line(run_cli(dynamodb_endpoint, "show", missing, "s"))
    assert missing in line and "does not exist" in line
    endpoint = [] if dynamodb_endpoint is None else ["--endpoint-url", dynamodb_endpoint]
    for args in (["export", missing], ["stats", missing], ["import", missing, "-"]):
        assert main([*args, *endpoint]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("chathist: error: ") and missing in err[0]


def test_an_endpoint_url_without_a_scheme_is_one_line_with_the_fix() -> None:
    line = assert_one_error_line(run_cli("127.0.0.1:18811", "show", "ChatEvents", "s"))
    assert "did you mean http://127.0.0.1:18811?" in line


def test_no_region_is_one_line_naming_the_command_line_options(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "CHATHIST_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    assert main(["show", f"chathist-test-noregion-{uuid.uuid4().hex[:8]}", "s"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("chathist: error: ")
    assert "--region" in err[0] and "region_name=" not in err[0]


def test_missing_credentials_against_an_endpoint_say_that_any_keys_do(
    dynamodb_endpoint: str | None,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    if dynamodb_endpoint is None:
        pytest.skip("needs an endpoint URL (DynamoDB Local)")
    without_aws_credentials(monkeypatch, tmp_path)
    table = f"chathist-test-nokeys-{uuid.uuid4().hex[:8]}"  # clients made afresh (no keys)
    assert main(["show", table, "s", "--endpoint-url", dynamodb_endpoint]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("chathist: error: ")
    assert err[0].count("export AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local") == 1


# -- show ---------------------------------------------------------------------------------------


def test_show_transcript_json_and_last(dynamodb_endpoint: str | None, table_name: str) -> None:
    messages = sample_conversation()[:4]
    history(table_name, "s-1", dynamodb_endpoint).add_messages(messages)

    text = run_cli(dynamodb_endpoint, "show", table_name, "s-1")
    assert text.returncode == 0, text.stderr
    assert "[1] system" in text.stdout and "You are terse." in text.stdout
    assert "Grüße, 世界! 🙂" in text.stdout
    assert 'tool call call-1: add({"a": 2, "b": 2.5})' in text.stdout
    assert "[4] tool -> tool call call-1" in text.stdout

    as_json = run_cli(dynamodb_endpoint, "show", table_name, "s-1", "--json")
    assert json.loads(as_json.stdout) == json.loads(json.dumps(messages_to_dict(messages)))

    last = run_cli(dynamodb_endpoint, "show", table_name, "s-1", "--json", "--last", "1")
    assert [m["type"] for m in json.loads(last.stdout)] == ["tool"]

    empty = run_cli(dynamodb_endpoint, "show", table_name, "nobody")
    assert empty.returncode == 0 and empty.stdout == ""
    assert "no messages" in empty.stderr


# -- export / import ----------------------------------------------------------------------------


def test_export_import_round_trip_is_lossless_and_resumable(
    dynamodb_endpoint: str | None, table_name: str, other_table: str, tmp_path: Path
) -> None:
    conversation = sample_conversation()
    history(table_name, "a", dynamodb_endpoint).add_messages(conversation)
    history(table_name, "b", dynamodb_endpoint).add_messages(conversation[:2])
    cleared = history(table_name, "cleared", dynamodb_endpoint)
    cleared.add_user_message("gone")
    cleared.clear()

    dump = tmp_path / "all.jsonl"
    exported = run_cli(dynamodb_endpoint, "export", table_name, "--output", str(dump))
    assert exported.returncode == 0, exported.stderr
    lines = [json.loads(line) for line in dump.read_text(encoding="utf-8").splitlines()]
    assert [line["session_id"] for line in lines] == ["a", "b"]  # sorted; empty skipped
    assert "exported 2 sessions, 7 messages, 1 empty skipped" in exported.stderr

    # A half-done earlier run: "a" holds a prefix, "b" is complete.
    history(other_table, "a", dynamodb_endpoint).add_messages(conversation[:3])
    history(other_table, "b", dynamodb_endpoint).add_messages(conversation[:2])
    imported = run_cli(dynamodb_endpoint, "import", other_table, str(dump))
    assert imported.returncode == 0, imported.stderr
    assert "imported 1 sessions (2 messages); 1 already complete; 0 conflicts" in imported.stderr

    for session, expected in (("a", conversation), ("b", conversation[:2])):
        assert history(other_table, session, dynamodb_endpoint).messages == expected

    again = run_cli(dynamodb_endpoint, "import", other_table, str(dump))
    assert "imported 0 sessions (0 messages); 2 already complete" in again.stderr

    # Byte-identical export from the copy; stdout export and stdin import work too.
    copy = run_cli(dynamodb_endpoint, "export", other_table, "a", "b")
    assert copy.stdout == dump.read_text(encoding="utf-8")


def test_import_conflict_is_reported_and_left_alone(
    dynamodb_endpoint: str | None, table_name: str
) -> None:
    history(table_name, "c", dynamodb_endpoint).add_user_message("something else")
    line = {"session_id": "c", "messages": messages_to_dict([HumanMessage("from the file")])}
    result = run_cli(dynamodb_endpoint, "import", table_name, "-", stdin=json.dumps(line) + "\n")
    assert result.returncode == 1
    assert "conflict: session 'c'" in result.stderr
    assert history(table_name, "c", dynamodb_endpoint).messages == [HumanMessage("something else")]


def test_import_of_a_bad_file_is_one_line(
    dynamodb_endpoint: str | None, table_name: str, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"session_id": "s", "messages": []}\nnot json\n', encoding="utf-8")
    line = assert_one_error_line(run_cli(dynamodb_endpoint, "import", table_name, str(bad)))
    assert "line 2" in line
    missing = assert_one_error_line(
        run_cli(dynamodb_endpoint, "import", table_name, str(tmp_path / "nope.jsonl"))
    )
    assert "nope.jsonl" in missing


# -- stats --------------------------------------------------------------------------------------


def test_stats_counts_sessions_messages_and_finds_the_largest(
    dynamodb_endpoint: str | None, table_name: str
) -> None:
    history(table_name, "small", dynamodb_endpoint).add_user_message("hi")
    history(table_name, "big", dynamodb_endpoint).add_messages(
        [HumanMessage(f"{i} " + "y" * 2000) for i in range(30)]
    )
    result = run_cli(dynamodb_endpoint, "stats", table_name, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["layout"] == "events"
    assert report["sessions"] == 2
    assert report["messages"] == 31
    assert report["largest_session"]["session_id"] == "big"
    assert report["largest_session"]["messages"] == 30
    assert report["bytes"] > 30 * 2000 > report["bytes"] - report["largest_session"]["bytes"]

    one = run_cli(dynamodb_endpoint, "stats", table_name, "small")
    assert one.returncode == 0, one.stderr
    assert re.search(r"^messages:\s+1$", one.stdout, re.MULTILINE)
    assert re.search(r"^layout:\s+events ", one.stdout, re.MULTILINE)


def test_stats_reports_the_list_layout_of_a_hash_only_table(
    dynamodb_endpoint: str | None, boto3_client: DynamoDBClient
) -> None:
    name = f"chathist-test-{uuid.uuid4().hex[:12]}"
    create_list_table(boto3_client, name)
    try:
        result = run_cli(dynamodb_endpoint, "stats", name, "--json")
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["layout"] == "list"
        assert report["sessions"] == 0
    finally:
        with contextlib.suppress(Exception):
            boto3_client.delete_table(TableName=name)


# -- pure parts ---------------------------------------------------------------------------------


def test_import_plan_rule() -> None:
    one, two = messages_to_dict([HumanMessage("1"), AIMessage("2")])
    assert import_plan([], [one, two]).action == "append"
    assert import_plan([one], [one, two]) == import_plan([one], [one, two])
    assert import_plan([one], [one, two]).start == 1
    assert import_plan([one, two], [one, two]).action == "skip"
    assert import_plan([two], [one, two]).action == "conflict"
    assert import_plan([one, two], [one]).action == "conflict"
    assert import_plan([], []).action == "skip"


@given(
    wanted=st.lists(st.sampled_from(["a", "b", "c"]), max_size=6),
    stored=st.lists(st.sampled_from(["a", "b", "c"]), max_size=6),
)
def test_import_plan_never_duplicates_or_overwrites(wanted: list[str], stored: list[str]) -> None:
    def as_dicts(texts: list[str]) -> list[dict[str, object]]:
        return messages_to_dict([HumanMessage(t) for t in texts])

    outcome = import_plan(as_dicts(stored), as_dicts(wanted))
    if outcome.action == "conflict":
        assert stored != wanted[: len(stored)] or len(stored) > len(wanted)
    else:
        assert stored + wanted[outcome.start :] == wanted  # the result is exactly the file's
        assert (outcome.action == "skip") == (stored == wanted)


def test_item_size_follows_dynamodb_rules() -> None:
    assert item_size({"SessionId": {"S": "abc"}}) == 9 + 3
    assert item_size({"b": {"B": b"\x00" * 10}}) == 1 + 10
    assert item_size({"n": {"N": "12345"}}) == 1 + 4
    assert item_size({"l": {"L": [{"S": "ab"}, {"BOOL": True}]}}) == 1 + 3 + (1 + 2) + (1 + 1)


# -- local --------------------------------------------------------------------------------------


def test_local_prints_the_endpoint_serves_and_stops_on_sigterm() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "chathist.cli", "local"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        match = re.search(r"running at (http://127\.0\.0\.1:\d+)", first)
        assert match, first + (process.stderr.read() if process.poll() is not None else "")
        endpoint = match.group(1)
        created = run_cli(endpoint, "create-table", "LocalCheck")
        assert created.returncode == 0, created.stderr
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=60)
        assert process.returncode == 0
        assert "Stopping DynamoDB Local." in out
        port = int(endpoint.rsplit(":", 1)[1])
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
            pass  # nothing listens any more
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# -- long values, create-table --layout list ----------------------------------------------------


def test_show_cuts_long_values_short_unless_full(
    dynamodb_endpoint: str | None, table_name: str
) -> None:
    """An 800 KB base64 image prints as its start and a count; --full and --json keep it."""
    from chathist.cli.sessions import SHOW_LIMIT

    image = "iVBORw0KGgo" + "A" * 800_000
    picture = HumanMessage(
        [
            {"type": "text", "text": "what is in this picture?"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image}"}},
        ]
    )
    essay = AIMessage(
        "word " * 900, tool_calls=[{"name": "f", "args": {"q": "z" * 5000}, "id": "1"}]
    )
    history(table_name, "pics", dynamodb_endpoint).add_messages([picture, essay])

    short = run_cli(dynamodb_endpoint, "show", table_name, "pics")
    assert short.returncode == 0, short.stderr
    assert len(short.stdout) < 4 * SHOW_LIMIT + 2000
    url = f"data:image/png;base64,{image}"
    assert f"{url[:SHOW_LIMIT]}... ({len(url) - SHOW_LIMIT:,} more characters)" in short.stdout
    assert "what is in this picture?" in short.stdout
    answer = short.stdout.split("[2] ai")[1]
    assert f"{('word ' * 900)[:SHOW_LIMIT]}... ({4500 - SHOW_LIMIT:,} more characters)" in answer
    assert f'"q": "{"z" * SHOW_LIMIT}... ({5000 - SHOW_LIMIT:,} more characters)"' in answer

    full = run_cli(dynamodb_endpoint, "show", table_name, "pics", "--full")
    assert full.returncode == 0, full.stderr
    assert url in full.stdout and "more characters" not in full.stdout

    as_json = run_cli(dynamodb_endpoint, "show", table_name, "pics", "--json")
    assert json.loads(as_json.stdout)[0]["data"]["content"][1]["image_url"]["url"] == url


def test_create_table_list_layout_makes_a_rollback_target(
    dynamodb_endpoint: str | None, boto3_client: DynamoDBClient, table_name: str
) -> None:
    name = f"chathist-test-{uuid.uuid4().hex[:12]}"
    try:
        first = run_cli(dynamodb_endpoint, "create-table", name, "--layout", "list", "--ttl")
        assert first.returncode == 0, first.stderr
        assert first.stdout == f"table {name}: created; TTL on expireAt\n"
        table = boto3_client.describe_table(TableName=name)["Table"]
        assert table["KeySchema"] == [{"AttributeName": "SessionId", "KeyType": "HASH"}]
        assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
        ttl = boto3_client.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        assert ttl.get("AttributeName") == "expireAt"
        again = run_cli(dynamodb_endpoint, "create-table", name, "--layout", "list")
        assert again.returncode == 0, again.stderr
        assert "already exists with the list-layout key schema" in again.stdout
        # The list layout is what chathist (and LangChain's class) read there.
        stats = run_cli(dynamodb_endpoint, "stats", name, "--json")
        assert json.loads(stats.stdout)["layout"] == "list"
    finally:
        with contextlib.suppress(Exception):
            boto3_client.delete_table(TableName=name)
    over_events = run_cli(dynamodb_endpoint, "create-table", table_name, "--layout", "list")
    assert table_name in assert_one_error_line(over_events)
    with_range = run_cli(
        dynamodb_endpoint, "create-table", name, "--layout", "list", "--sort-key-name", "SK"
    )
    assert "--sort-key-name" in assert_one_error_line(with_range)


def test_repair_deletes_a_stray_key_that_stopped_every_read(
    dynamodb_endpoint: str | None,
    table_name: str,
    boto3_client: DynamoDBClient,
    capsys: pytest.CaptureFixture[str],
) -> None:
    history(table_name, "s-1", dynamodb_endpoint).add_user_message("kept")
    boto3_client.put_item(TableName=table_name, Item={"SessionId": {"S": "s-1"}, "SK": {"S": "1"}})
    where = [] if dynamodb_endpoint is None else ["--endpoint-url", dynamodb_endpoint]
    assert main(["show", table_name, "s-1", *where]) != 0
    assert "chathist repair" in capsys.readouterr().err
    assert main(["repair", table_name, "s-1", *where]) == 0
    assert capsys.readouterr().out.strip() == "s-1: 1 items deleted"
    assert main(["show", table_name, "s-1", *where]) == 0
    assert "kept" in capsys.readouterr().out
