"""Smoke test of benchmark scenario 12 (`benchmarks.langgraph_turns`) on tiny sizes: every
contender runs, the table, JSON and plot are written. No timings are asserted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("langgraph_checkpoint_aws")

from benchmarks import langgraph_turns


def test_scenario_ten_writes_table_json_and_plot(
    tmp_path: Path, dynamodb_endpoint: str | None
) -> None:
    if dynamodb_endpoint is None:
        pytest.skip("runs on DynamoDB Local")
    out = tmp_path / "lg"
    assert (
        langgraph_turns.main(
            ["--turns", "2,3", "--out", str(out), "--endpoint-url", dynamodb_endpoint]
        )
        == 0
    )
    results = json.loads((out / "langgraph.json").read_text())["results"]
    assert set(results) == {
        "chathist",
        "langgraph-checkpoint-aws",
        "langgraph-checkpoint-aws gzip",
    }
    ours = results["chathist"]["points"]
    assert ours["3"]["wcu"] == ours["2"]["wcu"] <= 10
    assert ours["3"]["warm_read_requests"] == 1
    assert (out / "langgraph.png").stat().st_size > 0
    assert "chathist" in (out / "langgraph.md").read_text()
