"""The request path: the only code that sends requests to DynamoDB.

- `client_for` makes botocore clients, one per endpoint, region and credentials (the boto3
  session given, or the default credentials of a profile), all with one configuration and from
  one botocore session per profile (a boto3 session's own, when one is given), and caches them:
  a second history, or a second table behind the same endpoint, builds nothing new
  (docs/design.md, "Clients": why the tables share botocore's retry quota).
- `Sender` runs steps (`chathist.core.steps`): it sends each `Call` with
  ``ReturnConsumedCapacity=TOTAL``, records the capacity in its meter (failed requests too),
  and turns every botocore error into chathist's (`chathist.dynamo.translate`), which it throws
  back into the steps.
- botocore's own retries (throttling, 5xx, dropped connections) are configured here, once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any, Final, TypeVar, cast

import botocore.session
from botocore import xform_name
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from botocore.useragent import UserAgentString

from chathist.core.steps import DYNAMODB, KMS, Call, Sleep, Steps, call
from chathist.dynamo.binding import Binding
from chathist.dynamo.capacity import CapacityMeter
from chathist.dynamo.paging import Cursor
from chathist.dynamo.translate import translate
from chathist.errors import ChatHistoryError, ConfigurationError

__all__ = ["CLIENT_CONFIG", "Sender", "botocore_session", "client_for", "kms_client_for"]

T = TypeVar("T")

MAX_ATTEMPTS: Final = 8
"""Attempts botocore makes of one request (with exponential backoff) before it gives up."""
MAX_POOL_CONNECTIONS: Final = 512
"""Connections one sync client keeps. urllib3 never makes a request wait for one: a thread that
finds them all busy opens a connection of its own and closes it after the request. 512 covers a
server of hundreds of threads and stays under half of the usual limit of 1,024 open files. (The
asyncio client has its own limit: `chathist.dynamo.aio.MAX_IN_FLIGHT`.)"""
_BASE_CONFIG: Final = Config(
    retries={"total_max_attempts": MAX_ATTEMPTS, "mode": "standard"},
    parameter_validation=False,
    max_pool_connections=MAX_POOL_CONNECTIONS,
)
USER_AGENT: Final = (
    UserAgentString.from_environment().with_client_config(_BASE_CONFIG).to_string()
    + " lib/chathist"
)
"""The User-Agent of every request, built once. botocore otherwise rebuilds it twice per request
(sanitising each component character by character), about a sixth of the CPU a request costs
the client (profiled in benchmark scenario 9); the fixed string drops only botocore's
per-request feature flags."""
CLIENT_CONFIG: Final = _BASE_CONFIG.merge(Config(user_agent=USER_AGENT))

METERED: Final = frozenset(
    {
        "GetItem",
        "PutItem",
        "UpdateItem",
        "DeleteItem",
        "Query",
        "Scan",
        "BatchGetItem",
        "BatchWriteItem",
        "TransactGetItems",
        "TransactWriteItems",
    }
)
"""Operations that report consumed capacity and count as requests in a meter (the table-level
ones, such as DescribeTable, do neither)."""

_lock = threading.Lock()
_sessions: dict[str | None, botocore.session.Session] = {}
_clients: dict[Binding, Any] = {}
_kms_clients: dict[Binding, Any] = {}


def botocore_session(profile: str | None = None) -> botocore.session.Session:
    """The botocore session that default-credential clients of ``profile`` are made from (one
    per profile and process)."""
    with _lock:
        found = _sessions.get(profile)
        if found is None:
            found = _sessions[profile] = botocore.session.Session(profile=profile)
        return found


def client_for(binding: Binding) -> Any:
    """The botocore DynamoDB client of ``binding``'s endpoint, region and credentials, made once
    per process and shared by every table there (botocore clients are thread-safe)."""
    return _cached(_clients, binding.connection, DYNAMODB)


def _cached(clients: dict[Binding, Any], binding: Binding, service: str) -> Any:
    """The client of ``service`` for ``binding`` in ``clients``, made once."""
    with _lock:
        found = clients.get(binding)
    if found is not None:
        return found
    session = botocore_session(binding.profile)
    with _lock:
        found = clients.get(binding)
        if found is None:
            found = clients[binding] = _make_client(binding, session, service)
    return found


def kms_scope(binding: Binding) -> Binding:
    """What a KMS client depends on: the region and credentials of ``binding``, not its table
    or DynamoDB endpoint (KMS's endpoint is AWS's, or ``$AWS_ENDPOINT_URL_KMS``)."""
    return Binding("", None, binding.region_name, binding.boto3_session, binding.profile)


def kms_client_for(binding: Binding) -> Any:
    """The botocore AWS KMS client for ``binding``'s region and credentials, made once per
    process from the same botocore session as its DynamoDB clients."""
    return _cached(_kms_clients, kms_scope(binding), KMS)


def _make_client(
    binding: Binding, session: botocore.session.Session, service: str = DYNAMODB
) -> Any:
    options: dict[str, Any] = {
        "region_name": binding.region_name,
        "endpoint_url": binding.endpoint_url,
        "config": CLIENT_CONFIG,
    }
    try:
        if binding.boto3_session is not None:
            return binding.boto3_session.client(service, **options)  # type: ignore[call-overload]
        return session.create_client(service, **options)
    except (BotoCoreError, ValueError) as exc:  # a missing profile, a bad region or endpoint
        raise ConfigurationError(f"cannot create a {service} client: {exc}") from exc


class Sending:
    """What the sync `Sender` and its asyncio twin share: the request's parameters, the
    metering and the error mapping of every request."""

    def __init__(self, binding: Binding, meter: CapacityMeter) -> None:
        self.binding = binding
        self.meter = meter

    @staticmethod
    def params(request: Call) -> dict[str, Any]:
        """The parameters to send: the request's, asking for consumed capacity where it can."""
        if request.operation in METERED:
            return dict(request.params, ReturnConsumedCapacity="TOTAL")
        return request.params

    def record(self, request: Call, response: dict[str, Any] | None) -> None:
        """Meter one request (a failed one counts too, with what its error response says)."""
        if request.service == KMS:
            self.meter.record_kms()
        elif request.operation in METERED:
            self.meter.record(request.operation, response)

    def failure(self, exc: Exception, request: Call, params: dict[str, Any]) -> ChatHistoryError:
        """The chathist error of a request that raised ``exc``."""
        return translate(
            exc, request.operation, params, where=self.binding.where, service=request.service
        )


def error_response(exc: Exception) -> dict[str, Any] | None:
    """The response carried by a botocore error (a ClientError's), if any."""
    return cast(dict[str, Any], exc.response) if isinstance(exc, ClientError) else None


class Sender(Sending):
    """Sends requests for one binding and meters them; runs steps."""

    _client: Any = None

    @property
    def client(self) -> Any:
        """The botocore client requests go through (shared by every sender of the binding's
        endpoint, region and credentials, whatever their table), looked up once."""
        found = self._client
        if found is None:
            found = self._client = client_for(self.binding)
        return found

    def send(self, request: Call) -> dict[str, Any]:
        """Send one request; return its response or raise its chathist error."""
        params = self.params(request)
        response: dict[str, Any] | None = None
        try:
            client = self.client if request.service == DYNAMODB else kms_client_for(self.binding)
            method = getattr(client, xform_name(request.operation))
            response = cast(dict[str, Any], method(**params))
            return response
        except (ClientError, BotoCoreError) as exc:
            response = error_response(exc)
            raise self.failure(exc, request, params) from exc
        finally:
            self.record(request, response)

    def run(self, steps: Steps[T]) -> T:
        """Drive ``steps`` to their result, sending each request and sleeping each backoff."""
        answer: Any = None
        error: ChatHistoryError | None = None
        while True:
            try:
                op = steps.throw(error) if error is not None else steps.send(answer)
            except StopIteration as done:
                return cast(T, done.value)
            answer = error = None
            if isinstance(op, Sleep):
                time.sleep(op.seconds)
                continue
            try:
                answer = self.send(op)
            except ChatHistoryError as exc:
                error = exc

    def call(self, operation: str, **params: Any) -> dict[str, Any]:
        """Send one request now (for code that is not written as steps)."""
        return self.run(call(operation, **params))

    def items(self, cursor: Cursor) -> Iterator[dict[str, Any]]:
        """The items of a Query or Scan, fetching each page when the previous one is used up."""
        while (page := self.run(cursor.next_page())) is not None:
            yield from page
