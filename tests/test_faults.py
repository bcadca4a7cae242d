"""Faults injected at the botocore layer, against DynamoDB Local.

A ``before-send`` hook on the history's botocore client stands in for the network and the
service: it answers with a throttling error or a 5xx instead of sending, drops the connection
before sending, or sends the request for real and then drops the connection so the client never
sees the answer (DynamoDB applied the write; botocore retries it). Rival writers take sequence
numbers between a history's read of the end and its write. Each test checks what the user sees:
the right messages, each exactly once, no half message, and a typed error when retries run out.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from botocore.exceptions import ConnectionClosedError
from botocore.httpsession import URLLib3Session
from botocore.retries.standard import ExponentialBackoff
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from chathist import ConcurrencyError, DynamoDBChatMessageHistory, StorageError
from tests.helpers import hooked, one_item_per_message, partition_items
from tests.loopback_proxy import LoopbackProxy
from tests.reliability import install, note, record

SECTION = "faults"


@pytest.fixture(scope="session", autouse=True)
def _reliability_report(request: pytest.FixtureRequest) -> None:
    install(request)


# -- fault injection -------------------------------------------------------------------------------


class _Body:
    """The raw stream of a fake HTTP response."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._data


def fake_response(request: AWSPreparedRequest, status: int, body: dict[str, Any]) -> AWSResponse:
    """An HTTP response as DynamoDB would send it, made up without sending ``request``."""
    data = json.dumps(body).encode()
    headers = {
        "Content-Type": "application/x-amz-json-1.0",
        "Content-Length": str(len(data)),
        "x-amzn-RequestId": f"fault-{uuid.uuid4().hex}",
    }
    return AWSResponse(request.url, status, headers, _Body(data))


def _error(code: str, message: str, **fields: Any) -> dict[str, Any]:
    return {"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": message, **fields}


def _transact_size(request: AWSPreparedRequest) -> int:
    return len(json.loads(request.body or b"{}").get("TransactItems", []))


Fault = Callable[[AWSPreparedRequest], "AWSResponse | None"]


class Faults:
    """Scheduled faults on one botocore client, per operation; counts what it injected.

    ``plan(operation, kind, kind, ...)`` makes the next calls of ``operation`` meet those faults
    in order (``"ok"`` lets one through); ``always=kind`` then keeps injecting ``kind``.
    """

    def __init__(self, client: Any, test: str) -> None:
        self.client = client
        self.test = test
        self.injected: Counter[str] = Counter()
        self.attempts: Counter[str] = Counter()
        self.applied: list[int] = []
        self.outcomes: dict[str, list[str | None]] = {}
        self._plans: dict[str, deque[str]] = {}
        self._always: dict[str, str | None] = {}
        self._handlers: list[tuple[str, Any]] = []
        self._http = URLLib3Session()
        self._lock = threading.Lock()
        self.on_send: dict[str, Callable[[], None]] = {}

    def plan(self, operation: str, *kinds: str, always: str | None = None) -> None:
        first = operation not in self._plans
        self._plans[operation] = deque(kinds)
        self._always[operation] = always
        if first:
            self._hook(f"before-send.dynamodb.{operation}", self._before_send(operation))
            self._hook(f"after-call.dynamodb.{operation}", self._after_call(operation))

    def _hook(self, event: str, handler: Any) -> None:
        self.client.meta.events.register_first(event, handler)
        self._handlers.append((event, handler))

    def close(self) -> None:
        for event, handler in self._handlers:
            self.client.meta.events.unregister(event, handler)
        self._handlers.clear()

    def _next(self, operation: str) -> str | None:
        with self._lock:
            self.attempts[operation] += 1
            plan = self._plans[operation]
            if plan:
                kind = plan.popleft()
                return None if kind == "ok" else kind
            return self._always[operation]

    def _before_send(self, operation: str) -> Any:
        def handler(request: AWSPreparedRequest, **_: Any) -> AWSResponse | None:
            hook = self.on_send.get(operation)
            if hook is not None:
                hook()
            kind = self._next(operation)
            if kind is None:
                return None
            with self._lock:
                self.injected[kind] += 1
            record(SECTION, self.test, f"{kind} injected")
            record(SECTION, self.test, "faults injected")
            return FAULTS[kind](self, request)

        return handler

    def _after_call(self, operation: str) -> Any:
        def handler(parsed: dict[str, Any], **_: Any) -> None:
            code = parsed.get("Error", {}).get("Code")
            self.outcomes.setdefault(operation, []).append(code)

        return handler

    # -- the faults -----------------------------------------------------------------------------

    def throughput_exceeded(self, request: AWSPreparedRequest) -> AWSResponse:
        return fake_response(
            request,
            400,
            _error(
                "ProvisionedThroughputExceededException",
                "The level of configured provisioned throughput for the table was exceeded.",
            ),
        )

    def throttling(self, request: AWSPreparedRequest) -> AWSResponse:
        return fake_response(request, 400, _error("ThrottlingException", "Rate exceeded"))

    def internal_error(self, request: AWSPreparedRequest) -> AWSResponse:
        return fake_response(
            request, 500, _error("InternalServerError", "Internal server error (injected)")
        )

    def unavailable(self, request: AWSPreparedRequest) -> AWSResponse:
        return fake_response(request, 503, _error("ServiceUnavailable", "Service unavailable"))

    def transaction_conflict(self, request: AWSPreparedRequest) -> AWSResponse:
        size = _transact_size(request)
        reasons = [{"Code": "TransactionConflict", "Message": "Transaction is ongoing"}] + [
            {"Code": "None"} for _ in range(size - 1)
        ]
        codes = ", ".join(r["Code"] for r in reasons)
        return fake_response(
            request,
            400,
            _error(
                "TransactionCanceledException",
                f"Transaction cancelled, please refer cancellation reasons for specific reasons"
                f" [{codes}]",
                CancellationReasons=reasons,
            ),
        )

    def unprocessed(self, request: AWSPreparedRequest) -> AWSResponse:
        """A BatchWriteItem answered with every request unprocessed (nothing applied)."""
        body = json.loads(request.body or b"{}")
        return fake_response(request, 200, {"UnprocessedItems": body["RequestItems"]})

    def dropped_before_send(self, request: AWSPreparedRequest) -> AWSResponse:
        raise ConnectionClosedError(endpoint_url=request.url)

    def dropped_after_apply(self, request: AWSPreparedRequest) -> AWSResponse:
        """Send the request for real (DynamoDB applies it), then lose the answer."""
        response = self._http.send(request)
        with self._lock:
            self.applied.append(response.status_code)
        raise ConnectionClosedError(endpoint_url=request.url)

    def token_forgotten(self, request: AWSPreparedRequest) -> None:
        """Let a retried transaction through with a new ClientRequestToken, as if DynamoDB had
        forgotten the first one (tokens are remembered for 10 minutes)."""
        body = json.loads(request.body or b"{}")
        body["ClientRequestToken"] = uuid.uuid4().hex
        data = json.dumps(body).encode()
        request.body = data
        request.headers["Content-Length"] = str(len(data))
        return None


FAULTS: dict[str, Callable[[Faults, AWSPreparedRequest], Any]] = {
    "ProvisionedThroughputExceededException": Faults.throughput_exceeded,
    "ThrottlingException": Faults.throttling,
    "500 InternalServerError": Faults.internal_error,
    "503 ServiceUnavailable": Faults.unavailable,
    "TransactionConflict": Faults.transaction_conflict,
    "BatchWriteItem all unprocessed": Faults.unprocessed,
    "connection dropped before sending": Faults.dropped_before_send,
    "connection dropped after DynamoDB applied the write": Faults.dropped_after_apply,
    "ClientRequestToken forgotten on retry": Faults.token_forgotten,
}
THROTTLE = "ProvisionedThroughputExceededException"
THROTTLING = "ThrottlingException"
E500 = "500 InternalServerError"
E503 = "503 ServiceUnavailable"
CONFLICT = "TransactionConflict"
UNPROCESSED = "BatchWriteItem all unprocessed"
DROP_BEFORE = "connection dropped before sending"
DROP_AFTER = "connection dropped after DynamoDB applied the write"
FORGET_TOKEN = "ClientRequestToken forgotten on retry"


def list_client(history: DynamoDBChatMessageHistory) -> Any:
    """The botocore client a list-layout history sends its requests with."""
    return history.client


# -- fixtures and checks ---------------------------------------------------------------------------


@pytest.fixture
def backoff(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The delays botocore's standard retry mode computed before each retry, in order."""
    delays: list[float] = []
    original = ExponentialBackoff.delay_amount

    def delay_amount(self: ExponentialBackoff, context: Any) -> float:
        delay = float(original(self, context))
        delays.append(delay)
        return delay

    monkeypatch.setattr(ExponentialBackoff, "delay_amount", delay_amount)
    return delays


class Setup:
    """A history on the test's table, its faults, and a rival on its own botocore client."""

    def __init__(self, table: str, endpoint: str | None, region: str | None, test: str) -> None:
        self.table = table
        self.endpoint = endpoint
        self.region = region
        self.test = test
        self.session = f"faults-{uuid.uuid4().hex[:8]}"
        self.history = self.new_history()
        self.faults = Faults(self.history.client, test)

    def new_history(self, **options: Any) -> DynamoDBChatMessageHistory:
        return DynamoDBChatMessageHistory(
            self.table, self.session, endpoint_url=self.endpoint, region_name=self.region, **options
        )

    def rival(self) -> DynamoDBChatMessageHistory:
        """A history of the same session whose requests the faults do not touch (its own
        boto3 session, hence its own botocore client)."""
        return DynamoDBChatMessageHistory(
            self.table,
            self.session,
            endpoint_url=self.endpoint,
            region_name=self.region,
            boto3_session=boto3.Session(region_name=self.region),
        )

    def contents(self) -> list[str]:
        return [str(m.content) for m in self.new_history().messages]

    def items(self, boto3_client: Any) -> list[dict[str, Any]]:
        """Every item of the session, raw."""
        return partition_items(boto3_client, self.table, self.session)

    def check(self, expected: list[str]) -> list[str]:
        """Record lost and duplicated messages against ``expected``; assert the exact history."""
        return self.check_with(self.new_history(), expected)

    def check_with(self, reader: DynamoDBChatMessageHistory, expected: list[str]) -> list[str]:
        """`check`, reading through ``reader``."""
        final = [str(m.content) for m in reader.messages]
        seen = Counter(final)
        record(SECTION, self.test, "lost", sum(1 for c in expected if seen[c] == 0))
        record(SECTION, self.test, "duplicated", sum(n - 1 for n in seen.values() if n > 1))
        assert final == expected
        return final


@pytest.fixture
def setup(
    request: pytest.FixtureRequest,
    table_name: str,
    dynamodb_endpoint: str | None,
    dynamodb_region: str | None,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Setup]:
    # One item per message, so that a call of two messages is a transaction: these tests
    # inject faults into both write paths, the single put and the transaction.
    one_item_per_message(monkeypatch)
    test = request.node.name.removeprefix("test_").replace("_", " ")
    made = Setup(table_name, dynamodb_endpoint, dynamodb_region, test)
    yield made
    made.faults.close()


def human(text: str) -> BaseMessage:
    return HumanMessage(text)


def pair(a: str, b: str) -> list[BaseMessage]:
    return [HumanMessage(a), AIMessage(b)]


# -- retried faults --------------------------------------------------------------------------------


def test_throttling_and_server_errors_are_retried_with_backoff(
    setup: Setup, backoff: list[float], boto3_client: Any
) -> None:
    """ProvisionedThroughputExceeded, ThrottlingException, 500 and 503 on reads and writes are
    retried by botocore with backoff, and the operation succeeds."""
    faults, history = setup.faults, setup.history
    faults.plan("Query", THROTTLE, E503)
    faults.plan("PutItem", THROTTLE, THROTTLING, DROP_BEFORE)
    faults.plan("TransactWriteItems", THROTTLING, E500, E503)
    history.add_message(human("one"))
    history.add_messages(pair("two", "three"))
    assert faults.attempts["PutItem"] == 4
    assert faults.attempts["TransactWriteItems"] == 4
    assert sum(faults.injected.values()) == 8
    assert len(backoff) >= 8 and all(d >= 0 for d in backoff)
    setup.check(["one", "two", "three"])
    faults.plan("Query", THROTTLING, E500, E503)
    assert [m.content for m in history.messages] == ["one", "two", "three"]
    assert len(setup.items(boto3_client)) == 3
    record(SECTION, setup.test, "retries with a computed backoff delay", len(backoff))


def test_connection_dropped_after_put_is_not_duplicated(setup: Setup, boto3_client: Any) -> None:
    """DynamoDB applied the PutItem, the answer was lost, botocore sent it again: the store
    recognises its own writer id in the refused retry (ALL_OLD) and counts the append as done."""
    faults, history = setup.faults, setup.history
    faults.plan("PutItem", DROP_AFTER)
    history.add_message(human("once"))
    assert faults.applied == [200]  # the first attempt reached DynamoDB and was applied
    assert faults.outcomes["PutItem"] == ["ConditionalCheckFailedException"]  # the retry
    history.add_message(human("after"))
    setup.check(["once", "after"])
    assert len(setup.items(boto3_client)) == 2


def test_connection_dropped_after_transaction_is_not_duplicated(
    setup: Setup, boto3_client: Any
) -> None:
    """The same for a TransactWriteItems append: the retry carries the same ClientRequestToken;
    and when DynamoDB no longer knows the token, the store recognises its writer id in the
    cancellation reasons."""
    faults, history = setup.faults, setup.history
    faults.plan("TransactWriteItems", DROP_AFTER)
    history.add_messages(pair("a1", "a2"))
    assert faults.applied == [200]
    token_outcome = faults.outcomes["TransactWriteItems"][-1]
    if token_outcome is None:
        note(
            SECTION,
            setup.test,
            "DynamoDB Local honoured the ClientRequestToken: the retried transaction succeeded"
            " without writing again.",
        )
    else:
        assert token_outcome == "TransactionCanceledException"
        note(SECTION, setup.test, "DynamoDB Local ignored the ClientRequestToken.")
    faults.plan("TransactWriteItems", DROP_AFTER, FORGET_TOKEN)
    history.add_messages(pair("b1", "b2"))
    assert faults.applied == [200, 200]
    assert faults.outcomes["TransactWriteItems"][-1] == "TransactionCanceledException"
    setup.check(["a1", "a2", "b1", "b2"])
    assert len(setup.items(boto3_client)) == 4


# -- conflicts -------------------------------------------------------------------------------------


def test_transaction_cancelled_by_a_conflict_is_retried(setup: Setup, boto3_client: Any) -> None:
    """A TransactionConflict cancellation (another transaction was busy on the same items: it
    proves nobody took our numbers) is retried, and the history has no gap."""
    faults, history = setup.faults, setup.history
    history.add_message(human("first"))
    faults.plan("TransactWriteItems", CONFLICT, CONFLICT)
    history.add_messages(pair("x1", "x2"))
    history.add_message(human("last"))
    assert faults.attempts["TransactWriteItems"] == 3
    setup.check(["first", "x1", "x2", "last"])
    assert len(setup.items(boto3_client)) == 4


def test_rival_taking_the_next_number_is_retried(setup: Setup, boto3_client: Any) -> None:
    """Another writer appends between this history's read of the end and its write, for a
    single put and for a transaction: the loser retries after the rival's messages."""
    faults, history = setup.faults, setup.history
    rival = setup.rival()
    history.add_message(human("start"))
    faults.plan("PutItem")
    faults.plan("TransactWriteItems")
    taken: list[str] = []

    def rival_writes(operation: str) -> Callable[[], None]:
        def write() -> None:
            if faults.attempts[operation] == 0:
                content = f"rival-{len(taken)}"
                rival.add_message(human(content))
                taken.append(content)
                record(SECTION, setup.test, "rival appends injected")
                record(SECTION, setup.test, "faults injected")

        return write

    faults.on_send["PutItem"] = rival_writes("PutItem")
    faults.on_send["TransactWriteItems"] = rival_writes("TransactWriteItems")
    history.add_message(human("mine"))
    history.add_messages(pair("m1", "m2"))
    assert faults.outcomes["PutItem"][0] == "ConditionalCheckFailedException"
    assert faults.outcomes["TransactWriteItems"][0] == "TransactionCanceledException"
    setup.check(["start", "rival-0", "mine", "rival-1", "m1", "m2"])
    assert len(setup.items(boto3_client)) == 6


def test_large_append_interrupted_by_a_rival_is_whole(setup: Setup, boto3_client: Any) -> None:
    """A message too large for one transaction is written in several requests; a rival append
    between them neither splits it nor is lost, and clear() leaves nothing of it behind."""
    faults, history = setup.faults, setup.history
    rival = setup.rival()
    big = os.urandom(4_500_000).hex()  # ~9 MB of text, ~4.5 MB compressed: several requests
    history.add_message(human("before"))
    calls = Counter[str]()
    rivals: list[str] = []

    def rival_on_second_request(operation: str) -> Callable[[], None]:
        def maybe() -> None:
            calls["writes"] += 1
            if calls["writes"] == 2 and not rivals:
                rivals.append("rival")
                rival.add_message(human("rival"))
                record(SECTION, setup.test, "rival appends injected")
                record(SECTION, setup.test, "faults injected")

        return maybe

    for operation in ("PutItem", "TransactWriteItems"):
        faults.plan(operation)
        faults.on_send[operation] = rival_on_second_request(operation)
    history.add_message(human(big))
    assert rivals, "the large append was written in a single request"
    final = setup.contents()
    assert final.count(big) == 1 and final.count("rival") == 1 and final[0] == "before"
    record(SECTION, setup.test, "requests of the large append", calls["writes"])
    setup.check(final)
    history.clear()
    assert setup.contents() == []
    left = setup.items(boto3_client)
    assert [i["event"]["S"] for i in left] == ["erased"] * (len(left) - 1) + ["clear"]
    assert not any(i["SK"]["S"].startswith("!") or "blob" in i or "History" in i for i in left)


def test_large_append_failing_midway_leaves_no_half_message(
    setup: Setup, boto3_client: Any
) -> None:
    """A message written in several requests whose second request fails for good: StorageError,
    readers never see a part of it, and the next append works."""
    faults, history = setup.faults, setup.history
    big = os.urandom(4_500_000).hex()
    history.add_message(human("before"))
    faults.plan("TransactWriteItems", "ok", always=E500)
    faults.plan("PutItem", "ok", always=E500)
    with pytest.raises(StorageError):
        history.add_message(human(big))
    record(SECTION, setup.test, "typed errors raised")
    assert setup.contents() == ["before"]
    faults.plan("TransactWriteItems")
    faults.plan("PutItem")
    history.add_message(human("after"))
    setup.check(["before", "after"])
    leftovers = len(setup.items(boto3_client)) - 2
    record(SECTION, setup.test, "invisible staged items left by the failed write", leftovers)
    note(
        SECTION,
        setup.test,
        "The staged parts written before the failure stay stored (never shown) until a clear()"
        " run after the stage counts as abandoned (one hour).",
    )


# -- retries run out -------------------------------------------------------------------------------


def test_exhausted_retries_raise_typed_errors_and_leave_history_consistent(
    setup: Setup, boto3_client: Any
) -> None:
    """A fault that outlasts botocore's retries raises StorageError; nothing half-written stays
    behind and the next append works."""
    faults, history = setup.faults, setup.history
    history.add_messages(pair("kept1", "kept2"))
    before = setup.items(boto3_client)

    faults.plan("PutItem", always=E500)
    with pytest.raises(StorageError):
        history.add_message(human("lost to 500"))
    faults.plan("TransactWriteItems", always=DROP_BEFORE)
    with pytest.raises(StorageError):
        history.add_messages(pair("lost to", "dropped connections"))
    assert setup.items(boto3_client) == before
    record(SECTION, setup.test, "typed errors raised", 2)

    faults.plan("PutItem")
    faults.plan("TransactWriteItems")
    history.add_message(human("later"))
    history.add_messages(pair("later1", "later2"))
    setup.check(["kept1", "kept2", "later", "later1", "later2"])


def test_exhausted_read_retries_raise_storage_error(setup: Setup) -> None:
    """A read whose Query keeps failing with 503 raises StorageError; the next read works."""
    setup.history.add_message(human("kept"))
    setup.faults.plan("Query", always=E503)
    try:
        with pytest.raises(StorageError):
            setup.history.messages  # noqa: B018
    finally:
        setup.faults.plan("Query")
    record(SECTION, setup.test, "typed errors raised")
    setup.check(["kept"])


def test_ambiguous_failure_stores_the_message_whole_or_not_at_all(
    setup: Setup, boto3_client: Any
) -> None:
    """Every attempt reaches DynamoDB and every answer is lost: the caller gets StorageError
    although the write was applied. The batch is stored whole, once, and later appends work."""
    faults, history = setup.faults, setup.history
    faults.plan("TransactWriteItems", always=DROP_AFTER)
    with pytest.raises(StorageError):
        history.add_messages(pair("maybe1", "maybe2"))
    assert faults.applied[0] == 200
    faults.plan("TransactWriteItems")
    history.add_messages(pair("next1", "next2"))
    final = setup.contents()
    assert final in (["next1", "next2"], ["maybe1", "maybe2", "next1", "next2"])
    setup.check(final)
    note(
        SECTION,
        setup.test,
        "A StorageError after lost answers does not say whether the write was applied"
        f" (here it was: {final[:2] == ['maybe1', 'maybe2']}); it is whole and never repeated"
        " by chathist, so a caller retrying such an append may store it twice.",
    )


def test_losing_every_race_raises_concurrency_error(setup: Setup, boto3_client: Any) -> None:
    """A rival that always wins the next number: ConcurrencyError after max_append_attempts,
    none of the loser's messages stored, the rival's all there, and the next append works."""
    history = setup.new_history(max_append_attempts=3)
    faults = Faults(history.client, setup.test)
    rival = setup.rival()
    rivals: list[str] = []

    def rival_wins() -> None:
        rivals.append(f"rival-{len(rivals)}")
        rival.add_message(human(rivals[-1]))
        record(SECTION, setup.test, "rival appends injected")
        record(SECTION, setup.test, "faults injected")

    try:
        faults.plan("PutItem")
        faults.on_send["PutItem"] = rival_wins
        with pytest.raises(ConcurrencyError):
            history.add_message(human("never"))
        record(SECTION, setup.test, "typed errors raised")
    finally:
        faults.close()
    assert len(rivals) == 3
    assert setup.contents() == rivals
    history.add_message(human("finally"))
    final = setup.contents()
    assert final == [*rivals, "finally"]
    assert len(setup.items(boto3_client)) == 4
    setup.check(final)


# -- clear -----------------------------------------------------------------------------------------


def test_clear_interrupted_midway_is_finished_by_the_next_clear(
    setup: Setup, boto3_client: Any
) -> None:
    """Deleting fails after the first batch: readers already see an empty history; the next
    clear() deletes what is left; unprocessed batch items are resent."""
    faults, history = setup.faults, setup.history
    for start in range(0, 60, 20):
        history.add_messages([human(f"m{i}") for i in range(start, start + 20)])
    faults.plan("BatchWriteItem", "ok", always=E500)
    with pytest.raises(StorageError):
        history.clear()
    left = setup.items(boto3_client)
    assert len(left) > 1  # the tombstone and the messages not yet deleted
    assert setup.contents() == []
    assert history.messages == []

    faults.plan("BatchWriteItem", UNPROCESSED, "ok", UNPROCESSED)
    history.clear()
    left = setup.items(boto3_client)
    content = [i for i in left if i["event"]["S"] not in ("erased", "clear")]
    record(SECTION, setup.test, "content left after a completed clear", len(content))
    assert [i["event"]["S"] for i in left] == ["erased"] * (len(left) - 1) + ["clear"]
    assert setup.contents() == []
    history.add_message(human("fresh"))
    setup.check(["fresh"])


# -- list layout -----------------------------------------------------------------------------------


def test_list_layout_retries_throttling_and_5xx(
    list_table: str, dynamodb_endpoint: str | None, dynamodb_region: str | None
) -> None:
    """List layout: throttled and failed GetItem/UpdateItem are retried and succeed."""
    setup = Setup(list_table, dynamodb_endpoint, dynamodb_region, "list layout retries")
    history = setup.new_history(layout="list")
    faults = Faults(list_client(history), setup.test)
    try:
        faults.plan("UpdateItem", THROTTLE, E500)
        faults.plan("GetItem", E503)
        history.add_messages(pair("l1", "l2"))
        assert [m.content for m in history.messages] == ["l1", "l2"]
        assert faults.attempts["UpdateItem"] == 3
    finally:
        faults.close()
    setup.check_with(setup.new_history(layout="list"), ["l1", "l2"])


def test_list_layout_connection_dropped_after_append_is_not_duplicated(
    list_table: str, dynamodb_endpoint: str | None, dynamodb_region: str | None
) -> None:
    """List layout: an UpdateItem (list_append) applied, its answer lost, botocore retries."""
    setup = Setup(list_table, dynamodb_endpoint, dynamodb_region, "list layout dropped answer")
    history = setup.new_history(layout="list")
    faults = Faults(list_client(history), setup.test)
    try:
        faults.plan("UpdateItem", DROP_AFTER)
        history.add_messages(pair("once1", "once2"))
        assert faults.applied == [200]
    finally:
        faults.close()
    final = [str(m.content) for m in setup.new_history(layout="list").messages]
    if final == ["once1", "once2", "once1", "once2"]:
        pytest.xfail(
            "known bug: the list layout's list_append is not idempotent; when the answer to an"
            " applied UpdateItem is lost, botocore's retry appends the messages a second time"
        )
    setup.check_with(setup.new_history(layout="list"), ["once1", "once2"])


@pytest.mark.parametrize("failing", ["DeleteRequest", "PutRequest"])
def test_a_clear_failing_partway_leaves_the_next_clear_able_to_delete_everything(
    setup: Setup, boto3_client: Any, failing: str
) -> None:
    """The stage deletion (or the erase) of a clear fails: the next clear still finds every
    staged write below its tombstone and deletes it. No message content survives a completed
    clear, whichever step failed first."""
    history = setup.history
    for start in (0, 40):
        history.add_messages([human(f"m{i}") for i in range(start, start + 40)])  # staged
    assert any(i["SK"]["S"].startswith("!") for i in setup.items(boto3_client))

    def fail_batches(request: AWSPreparedRequest, **_: Any) -> AWSResponse | None:
        if failing.encode() not in (request.body or b""):
            return None
        record(SECTION, setup.test, f"{E500} injected")
        record(SECTION, setup.test, "faults injected")
        return setup.faults.internal_error(request)

    event = "before-send.dynamodb.BatchWriteItem"
    with hooked(history.client, event, fail_batches), pytest.raises(StorageError):
        history.clear()
    assert setup.contents() == []
    setup.new_history().clear()
    left = setup.items(boto3_client)
    content = [i for i in left if i["event"]["S"] not in ("erased", "clear")]
    record(SECTION, setup.test, "content left after a completed clear", len(content))
    assert content == []
    history.add_message(human("fresh"))
    setup.check(["fresh"])


def test_list_layout_resend_after_another_writers_append_is_stored_twice(
    list_table: str, dynamodb_endpoint: str | None, dynamodb_region: str | None
) -> None:
    """The stated limit of the list layout (README): an applied append whose answer was lost is
    recognised on its resend only if no other writer appended in between (the item keeps the
    id of the last write only). Here a rival appends between the two: the resend applies
    again. The event layout's answer to the same race is
    `test_concurrent_appends_through_a_lossy_proxy_are_stored_exactly_once`."""
    setup = Setup(list_table, dynamodb_endpoint, dynamodb_region, "list layout resend limit")
    history = setup.new_history(layout="list")
    rival = DynamoDBChatMessageHistory(
        list_table,
        setup.session,
        endpoint_url=dynamodb_endpoint,
        region_name=dynamodb_region,
        layout="list",
        boto3_session=boto3.Session(region_name=dynamodb_region),
    )
    faults = Faults(list_client(history), setup.test)
    sends: list[int] = []

    def rival_between_attempts() -> None:
        sends.append(1)
        if len(sends) == 2:
            rival.add_message(human("rival"))

    faults.on_send["UpdateItem"] = rival_between_attempts
    try:
        faults.plan("UpdateItem", DROP_AFTER, "ok")
        history.add_message(human("once"))
    finally:
        faults.close()
    final = [str(m.content) for m in setup.new_history(layout="list").messages]
    assert final == ["once", "rival", "once"]
    record(SECTION, setup.test, "stored twice by design (the list layout's stated limit)", 1)
    note(
        SECTION,
        setup.test,
        "Not counted as duplicated above: this test shows the list layout's stated limit (README):"
        " a resend after another writer's append is stored twice.",
    )


# -- faults on the wire (tests/loopback_proxy.py) --------------------------------------------------


@pytest.fixture
def wire(dynamodb_endpoint: str | None, monkeypatch: pytest.MonkeyPatch) -> Iterator[LoopbackProxy]:
    """A loopback proxy with faults in front of the test's DynamoDB Local (a fresh endpoint,
    hence fresh botocore clients with a full retry quota). Clients are per endpoint, and a
    later test's proxy may get this one's port: the test's clients are forgotten after it."""
    import chathist.dynamo.client

    if dynamodb_endpoint is None:
        pytest.skip("the fault proxy needs a loopback endpoint")
    monkeypatch.setattr(chathist.dynamo.client, "_clients", {})
    with LoopbackProxy(dynamodb_endpoint, 0.0, where="thread", faults=True) as proxy:
        yield proxy


def record_wire(test: str, stats: Any) -> None:
    names = {
        "drop-answer": DROP_AFTER + " (on the wire)",
        "drop-request": "request dropped on the wire",
        "truncate": "answer body cut short on the wire",
    }
    for kind, count in stats.faults.items():
        record(SECTION, test, f"{names[kind]} injected", count)
        record(SECTION, test, "faults injected", count)


def test_a_truncated_query_answer_is_an_error_never_an_empty_history(
    table_name: str, dynamodb_region: str | None, wire: LoopbackProxy
) -> None:
    setup = Setup(table_name, wire.endpoint_url, dynamodb_region, "truncated query answer")
    setup.history.add_messages(pair("q", "a"))
    wire.fault("Query", "truncate", limit=1)
    with pytest.raises(StorageError):
        _ = setup.new_history().messages
    record_wire(setup.test, wire.reset())
    record(SECTION, setup.test, "typed errors raised")
    setup.check(["q", "a"])


def test_concurrent_appends_through_a_lossy_proxy_are_stored_exactly_once(
    table_name: str, dynamodb_region: str | None, wire: LoopbackProxy
) -> None:
    """Two writers append to one session while the proxy drops a third of the PutItem answers
    after DynamoDB applied them: enough to drain botocore's retry quota (refunded only by
    successful answers; a resent applied put ends in a failed condition). Every append returns
    having stored its message once; none raises."""
    test = "concurrent appends through a lossy proxy"
    setup = Setup(table_name, wire.endpoint_url, dynamodb_region, test)
    writers, appends = 2, 100
    wire.fault("PutItem", "drop-answer", rate=0.35, limit=10_000, seed=16)
    errors: list[BaseException] = []

    def write(name: str) -> None:
        # Each dropped answer makes botocore back off (up to 20 s a retry while its quota
        # lasts), so a few drops in a row can outlast the default 30 s append budget, which is
        # then a ConcurrencyError, not a lost or doubled message: give the budget room.
        history = setup.new_history(append_timeout=300)
        for i in range(appends):
            try:
                history.add_message(human(f"{name}:{i}"))
            except BaseException as exc:  # reported below
                errors.append(exc)

    threads = [threading.Thread(target=write, args=(f"w{n}",)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = wire.reset()
    record_wire(test, stats)
    record(SECTION, test, "appends", writers * appends)
    record(SECTION, test, "appends that raised", len(errors))
    assert stats.faults["drop-answer"] > 60  # well past botocore's retry quota
    assert errors == []
    final = [str(m.content) for m in setup.new_history().messages]
    expected = [f"w{n}:{i}" for n in range(writers) for i in range(appends)]
    seen = Counter(final)
    record(SECTION, test, "lost", sum(1 for c in expected if seen[c] == 0))
    record(SECTION, test, "duplicated", sum(n - 1 for n in seen.values() if n > 1))
    assert sorted(final) == sorted(expected)
    for n in range(writers):
        assert [c for c in final if c.startswith(f"w{n}:")] == [f"w{n}:{i}" for i in range(appends)]


@pytest.mark.parametrize("kind", ["drop-answer", "drop-request"])
def test_an_append_whose_outcome_stays_unknown_is_settled_without_a_duplicate(
    table_name: str,
    dynamodb_region: str | None,
    wire: LoopbackProxy,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
) -> None:
    """Every resend of an append loses its answer (``drop-answer``: applied; ``drop-request``:
    never seen): the append raises OutcomeUnknownError, and ``settle`` says which, storing
    nothing twice. A write never applied whose number another writer took settles as False:
    the caller sends it again, and it is stored once."""
    from botocore.config import Config

    import chathist.dynamo.client
    import chathist.event_log
    from chathist import OutcomeUnknownError

    monkeypatch.setattr(
        chathist.dynamo.client,
        "CLIENT_CONFIG",
        Config(retries={"total_max_attempts": 1, "mode": "standard"}, parameter_validation=False),
    )
    monkeypatch.setattr(chathist.event_log, "RESEND_RULE", chathist.event_log.RetryRule(3))
    test = f"outcome unknown settled ({kind})"
    setup = Setup(table_name, wire.endpoint_url, dynamodb_region, test)
    history = setup.history
    history.add_message(human("before"))
    wire.fault("PutItem", kind, limit=3)
    with pytest.raises(OutcomeUnknownError) as caught:
        history.add_message(human("ambiguous"))
    record(SECTION, test, "typed errors raised")
    if kind == "drop-request":
        setup.rival().add_message(human("rival"))  # takes the number the append wanted
    stored = history.settle(caught.value)
    assert stored is (kind == "drop-answer")
    if not stored:
        history.add_message(human("ambiguous"))
    record_wire(test, wire.reset())
    expected = ["before", "ambiguous"] if stored else ["before", "rival", "ambiguous"]
    setup.check(expected)


@pytest.fixture
def one_send(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore sends each request once (no resend of its own), and chathist resends three
    times: what a drained retry quota leaves, in few requests."""
    from botocore.config import Config

    import chathist.dynamo.client
    import chathist.event_log

    monkeypatch.setattr(
        chathist.dynamo.client,
        "CLIENT_CONFIG",
        Config(retries={"total_max_attempts": 1, "mode": "standard"}, parameter_validation=False),
    )
    monkeypatch.setattr(chathist.event_log, "RESEND_RULE", chathist.event_log.RetryRule(3))


@pytest.mark.usefixtures("one_send")
@pytest.mark.parametrize("lost", [1, 3], ids=["one-lost", "all-lost"])
@pytest.mark.parametrize("kind", ["drop-answer", "drop-request"])
def test_a_lazy_migration_whose_answers_are_lost_moves_the_legacy_messages_once(
    table_name: str,
    list_table: str,
    dynamodb_endpoint: str | None,
    dynamodb_region: str | None,
    wire: LoopbackProxy,
    kind: str,
    lost: int,
) -> None:
    """The transaction that moves the legacy messages and retires the legacy item loses its
    answer (or its request): chathist resends it (the one resend loop). One loss: the append
    returns, stored once. Every resend lost: OutcomeUnknownError, and ``settle`` finishes it,
    never moving the legacy messages twice."""
    from chathist import OutcomeUnknownError

    test = f"lazy migration, {kind}, {lost} lost"
    setup = Setup(table_name, wire.endpoint_url, dynamodb_region, test)
    DynamoDBChatMessageHistory(
        list_table,
        setup.session,
        endpoint_url=dynamodb_endpoint,
        region_name=dynamodb_region,
        layout="list",
    ).add_messages(pair("old q", "old a"))
    history = setup.new_history(legacy_table_name=list_table)
    wire.fault("TransactWriteItems", kind, limit=lost)
    try:
        history.add_message(human("new"))
    except OutcomeUnknownError as unknown:
        assert lost == 3
        record(SECTION, test, "typed errors raised")
        assert history.settle(unknown) is True
    else:
        assert lost == 1
    record_wire(test, wire.reset())
    setup.check_with(setup.new_history(legacy_table_name=list_table), ["old q", "old a", "new"])
    setup.check(["old q", "old a", "new"])  # in the events, not read from the legacy item


@pytest.mark.usefixtures("one_send")
@pytest.mark.parametrize("lost", [1, 3], ids=["one-lost", "all-lost"])
@pytest.mark.parametrize("kind", ["drop-answer", "drop-request"])
def test_a_clear_whose_batch_answers_are_lost_is_finished_or_says_clear_again(
    table_name: str,
    dynamodb_region: str | None,
    wire: LoopbackProxy,
    boto3_client: Any,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
    lost: int,
) -> None:
    """The batch write that erases a clear's items loses its answer (or request): resent (the
    one resend loop, batches are idempotent). Every resend lost: ClearIncompleteError, which
    says the clear is in effect and to clear again; the next clear leaves no content."""
    from chathist import ClearIncompleteError

    one_item_per_message(monkeypatch)
    test = f"clear's batch write, {kind}, {lost} lost"
    setup = Setup(table_name, wire.endpoint_url, dynamodb_region, test)
    for text in ("a", "b", "c"):
        setup.history.add_message(human(text))
    wire.fault("BatchWriteItem", kind, limit=lost)
    try:
        setup.history.clear()
    except ClearIncompleteError as incomplete:
        assert lost == 3 and "call clear() again" in str(incomplete)
        record(SECTION, test, "typed errors raised")
        assert setup.contents() == []  # the clear is in effect
        setup.history.clear()
    else:
        assert lost == 1
    record_wire(test, wire.reset())
    left = setup.items(boto3_client)
    content = [i for i in left if i["event"]["S"] not in ("erased", "clear")]
    record(SECTION, test, "content left after a completed clear", len(content))
    assert content == []
    setup.check([])
