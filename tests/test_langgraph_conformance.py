"""LangGraph's official checkpointer conformance suite against DynamoDBSaver on DynamoDB Local:
every base capability (put, put_writes, get_tuple, list, delete_thread) and the extended ones
(delete_for_runs, copy_thread, prune) pass. The suite calls only the async methods."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

pytest.importorskip("langgraph.checkpoint.conformance")

from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import BASE_CAPABILITIES

from chathist.langgraph import DynamoDBSaver


def test_conformance_suite_passes(table_name: str, dynamodb_endpoint: str | None) -> None:
    @checkpointer_test(name="chathist.DynamoDBSaver")
    async def saver() -> AsyncIterator[DynamoDBSaver]:
        yield DynamoDBSaver(table_name, endpoint_url=dynamodb_endpoint)

    report = asyncio.run(validate(saver))
    failures = {
        name: result.failures for name, result in report.results.items() if not result.passed
    }
    assert report.passed_all_base(), failures
    assert {c.value for c in BASE_CAPABILITIES} <= set(report.results)
    extended = {"delete_for_runs", "copy_thread", "prune"}
    assert all(report.results[name].passed for name in extended), failures
