"""Smoke test: the benchmark command runs on tiny sizes and writes its table, JSON and plot.

It runs ``python -m benchmarks --quick`` as a subprocess against its own DynamoDB Local (the
command starts one). No timing assertions: only that every contender and scenario is there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = {
    "append_scaling",
    "conversation_cost",
    "reads",
    "batch_append",
    "concurrency",
    "migration",
    "large_messages",
    "async_concurrency",
    "floor",
    "encryption",
}
CONTENDERS = {"chathist-event", "chathist-list", "langchain", "raw-boto3"}

pytest.importorskip("matplotlib")
pytest.importorskip("langchain_community")


def test_quick_benchmark_writes_table_json_and_plot(tmp_path: Path) -> None:
    out = tmp_path / "results"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--quick",
            "--sizes",
            "append=40",
            "read=150",
            "large_mb=0.5",
            "floor_rounds=6",
            "floor_session=100",
            "floor_processes=1",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    table = done.stdout
    assert "| Target | Goal | Measured | Result |" in table
    assert "1. Append scaling" in table
    assert "LangChain DynamoDBChatMessageHistory" in table
    assert (out / "results.md").read_text() in table

    results = json.loads((out / "results.json").read_text())
    assert set(results["contenders"]) == CONTENDERS
    assert set(results["scenarios"]) >= SCENARIOS
    failed = {k: v["error"] for k, v in results["scenarios"].items() if "error" in v}
    assert not failed
    available = {k for k, c in results["contenders"].items() if c["available"]}
    assert {"chathist-event", "langchain", "raw-boto3"} <= available
    for name in ("append_scaling", "batch_append", "concurrency"):
        assert available <= set(results["scenarios"][name]["contenders"]), name
    reads = results["scenarios"]["reads"]
    assert available <= set(reads["window"]["sizes"]["150"])
    assert available <= set(reads["full"]["sizes"]["150"])
    assert available <= set(results["scenarios"]["large_messages"]["sizes"]["0.5"])

    # Real behaviour the numbers must show even at this size: one WCU per chathist append,
    # no message lost by chathist's concurrent writers, LangChain's list layout refusing 0.5 MB.
    appends = results["scenarios"]["append_scaling"]["contenders"]
    assert appends["chathist-event"]["at"]["40"]["wcu"] == 1.0
    assert results["scenarios"]["concurrency"]["contenders"]["chathist-event"]["lost"] == 0
    large = results["scenarios"]["large_messages"]["sizes"]["0.5"]
    assert large["chathist-event"]["error"] is None
    assert large["langchain"]["error"]
    migration = results["scenarios"]["migration"]  # measured, not skipped as unavailable
    assert migration["available"] and all(run["ok"] for run in migration["runs"]), migration

    # Scenario 9: every contender ran every session through the delay proxy, and every session
    # read back exactly what it appended: one PutItem (1 WCU) and one Query per append (each
    # call has a new history object), one Query per window read.
    many = results["scenarios"]["async_concurrency"]
    assert "9. N sessions at once" in table
    assert {"native-async", "executor", "sync-threads"} <= set(many["contenders"])
    appends = many["appends"]
    for n, runs in many["runs"].items():
        assert set(runs) == set(many["contenders"]), n
        for key, run in runs.items():
            sessions = int(n)
            assert (run["errors"], run["wrong_sessions"]) == (0, 0), (n, key, run["first_errors"])
            assert run["calls"] == sessions * (appends + 1), (n, key)
            assert run["requests"] == sessions * (2 * appends + 1), (n, key)
            assert run["wcu"] == sessions * appends, (n, key)
            assert run["proxy"]["chunks"] >= run["requests"], (n, key)
            assert run["proxy"]["added_ms"]["p50"] >= many["delay_ms"] - 0.5, (n, key)

    # Scenario 10: a LangChain turn is 2 requests and one item (the WCU its bytes need, as the
    # raw floor's), the same messages come back, and every case has its paired ratios.
    floor = results["scenarios"]["floor"]
    assert "10. chathist against the raw floor" in table
    turn = floor["cases"]["turn"]
    assert turn["chathist_per_op"]["requests"] == turn["raw_per_op"]["requests"] == 2
    assert turn["chathist_per_op"]["wcu"] == turn["raw_per_op"]["wcu"] == 1
    assert floor["fresh"]["first_append_requests"] == 2  # no DescribeTable
    assert floor["fresh"]["second_table_sessions"] == 0  # nor a botocore session for a table
    assert floor["fresh"]["second_table_shares_the_client"]
    for name, case in floor["cases"].items():
        for stats in [case] if "ratio" in case else [case["window"], case["full"]]:
            assert stats["pairs"] >= 3 and stats["ratio"]["median"] > 0, name

    png = out / "append.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
