"""Shared fixtures: one DynamoDB Local per test session, a fresh table per test.

Set ``CHATHIST_TEST_ENDPOINT_URL`` to run against an existing server instead (for example
``http://localhost:8000``), or to ``aws`` to run against the real service with the ambient AWS
credentials and region (tables named ``chathist-test-*`` are created and deleted).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from hypothesis import HealthCheck, settings

from chathist.local import LOCAL_CREDENTIALS, DynamoDBLocal, use_local_credentials

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

ENDPOINT_ENV = "CHATHIST_TEST_ENDPOINT_URL"

settings.register_profile(
    "ci",
    deadline=None,
    derandomize=False,
    max_examples=50,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak",
        action="store_true",
        default=False,
        help="run the larger soak tests (marked `soak`), which are skipped otherwise",
    )
    parser.addoption(
        "--reliability-report",
        action="store_true",
        default=False,
        help="write docs/reliability.md if every reliability test of the run passes"
        " (`make reliability`); a run without it writes no file",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "soak: a larger, slower test; runs only with --soak")
    config.addinivalue_line(
        "markers", "sync_only: runs against the sync API only (hooks the sync client, threads)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    sync_only = [
        item
        for item in items
        if item.get_closest_marker("sync_only")
        and getattr(getattr(item, "callspec", None), "params", {}).get("api") == "async"
    ]
    if sync_only:  # a test that hooks the sync botocore client has no async twin
        config.hook.pytest_deselected(items=sync_only)
        items[:] = [item for item in items if item not in sync_only]
    if config.getoption("--soak"):
        return
    skip = pytest.mark.skip(reason="soak test: run with --soak")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def soak(request: pytest.FixtureRequest) -> bool:
    """True when the run was started with ``--soak``."""
    return bool(request.config.getoption("--soak"))


@pytest.fixture(scope="session")
def dynamodb_endpoint() -> Iterator[str | None]:
    """The endpoint URL for the session: a DynamoDB Local started here, an existing server from
    ``$CHATHIST_TEST_ENDPOINT_URL``, or ``None`` (real AWS) when that variable is ``aws``."""
    configured = os.environ.get(ENDPOINT_ENV)
    if configured:
        yield None if configured.strip().lower() == "aws" else configured
        return
    server = DynamoDBLocal().start()
    try:
        use_local_credentials()
        yield server.endpoint_url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def dynamodb_region(dynamodb_endpoint: str | None) -> str | None:
    """The region to pass to clients: boto's own default on AWS, else the environment's or
    ``us-east-1``."""
    if dynamodb_endpoint is None:
        return None
    return (
        os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION")
        or LOCAL_CREDENTIALS["region_name"]
    )


@pytest.fixture(scope="session")
def boto3_client(dynamodb_endpoint: str | None, dynamodb_region: str | None) -> DynamoDBClient:
    """A low-level boto3 DynamoDB client for the session's endpoint."""
    kwargs: dict[str, Any] = {}
    if dynamodb_endpoint is not None:
        kwargs["endpoint_url"] = dynamodb_endpoint
    if dynamodb_region is not None:
        kwargs["region_name"] = dynamodb_region
    return boto3.client("dynamodb", **kwargs)


@pytest.fixture
def table_name(
    dynamodb_endpoint: str | None,
    dynamodb_region: str | None,
    boto3_client: DynamoDBClient,
) -> Iterator[str]:
    """A freshly created chathist event table, deleted after the test."""
    from chathist import create_table

    name = f"chathist-test-{uuid.uuid4().hex[:12]}"
    create_table(name, endpoint_url=dynamodb_endpoint, region_name=dynamodb_region)
    try:
        yield name
    finally:
        with contextlib.suppress(Exception):
            boto3_client.delete_table(TableName=name)


@pytest.fixture
def list_table(boto3_client: DynamoDBClient) -> Iterator[str]:
    """A fresh hash-key-only table (LangChain's list layout), deleted after the test."""
    from tests.helpers import list_table_named

    with list_table_named(boto3_client) as name:
        yield name


@pytest.fixture(scope="session")
def portal() -> Iterator[Any]:
    """One event loop on a thread for the whole run, for the async side of `api`."""
    from tests.helpers import AsyncPortal

    loop = AsyncPortal()
    try:
        yield loop
    finally:
        loop.close()


class Api:
    """Which API a behavioural test drives: ``api.history(...)`` makes a history whose sync
    methods are the real ones (``sync``) or run the native async ones (``async``)."""

    def __init__(self, name: str, history_class: type[Any]) -> None:
        self.name = name
        self.history = history_class


@pytest.fixture(params=["sync", "async"])
def api(request: pytest.FixtureRequest) -> Iterator[Api]:
    """The sync API, then the async API (each test that makes its histories with it runs
    twice). Tests marked ``sync_only`` run once."""
    from chathist import DynamoDBChatMessageHistory

    if request.param == "sync":
        yield Api("sync", DynamoDBChatMessageHistory)
        return
    from tests.helpers import async_driven

    portal = request.getfixturevalue("portal")
    yield Api("async", async_driven(portal))
    from chathist.dynamo.aio import aclose_clients

    portal.run(aclose_clients())  # this test's tables are gone: so are their clients


@pytest.fixture
def new_table(boto3_client: DynamoDBClient) -> Iterator[Any]:
    """``new_table(kind)`` gives a fresh table name; every table is deleted after the test."""
    names: list[str] = []

    def make(prefix: str = "mig") -> str:
        name = f"chathist-test-{prefix}-{uuid.uuid4().hex[:8]}"
        names.append(name)
        return name

    yield make
    for name in names:
        with contextlib.suppress(Exception):
            boto3_client.delete_table(TableName=name)
