"""The request path under asyncio: the same steps, sent with aiobotocore.

`AsyncSender.run` drives the steps of `chathist.core.steps` exactly as `Sender.run` does, with
``await`` where the sync driver blocks; the parameters, metering and error mapping are the
shared `Sending`'s. So the async API has the sync API's rules, not a copy of them.

Clients. aiobotocore clients belong to the event loop they were opened in. `async_client_for`
keeps one client per endpoint, region and credentials (`Binding.connection`: whatever the
table) and running loop, opened on first use and reused by every history there in that loop,
all from one aiobotocore session per profile (or per set of explicit keys) and loop, with a gate
in front of it: at most `MAX_IN_FLIGHT` requests in
flight, the others served first come, first served. The clients are closed by `aclose_clients`
(in the loop), and otherwise when the loop shuts down its async generators, which
``asyncio.run`` does on exit: a program can run several loops one after another without leaking
a connection or a warning.

aiobotocore is optional (``pip install chathist[async]``); `AVAILABLE` says whether it is
installed. Without it the history's async methods run the sync ones in an executor.
"""

from __future__ import annotations

import asyncio
import importlib.util
import weakref
from collections.abc import AsyncIterator, Hashable
from typing import Any, TypeVar, cast

from botocore import xform_name
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from chathist.core.steps import DYNAMODB, Call, Sleep, Steps
from chathist.dynamo.binding import Binding
from chathist.dynamo.client import CLIENT_CONFIG, Sending, error_response, kms_scope
from chathist.errors import ChatHistoryError, ConfigurationError

__all__ = ["AVAILABLE", "AsyncSender", "aclose_clients", "async_client_for"]

T = TypeVar("T")

MAX_IN_FLIGHT = 64
"""Requests one client (one endpoint, region and credentials in one loop) has in flight at
once, and the connections of its pool. aiohttp hands a freed connection to whichever coroutine
asks next, not to the one that has waited longest: a coroutine that gets its answer takes the
connection again for its next request, so with fewer connections than sessions some sessions
wait for others to finish. A fair `asyncio.Semaphore` of the pool's size in front of the client
makes the queue first come, first served. 64 requests in flight are far more than one event
loop's CPU can keep busy (benchmark scenario 9: about 300 requests/s through a 10 ms round trip,
i.e. 3 to 4 in flight on average) and few enough connections to leave the loop, and the server,
their CPU."""

AVAILABLE = importlib.util.find_spec("aiobotocore") is not None
"""Whether aiobotocore is installed (the ``async`` extra); it is imported on first use, so
``import chathist`` does not pay for it."""


class _LoopClients:
    """The clients opened in one event loop, and the aiobotocore sessions they come from
    (per loop too: a session's credential refresh binds to the loop it first ran in)."""

    def __init__(self) -> None:
        self.clients: dict[tuple[str, Binding], Any] = {}
        self.gates: dict[tuple[str, Binding], asyncio.Semaphore] = {}
        self.sessions: dict[Hashable, Any] = {}
        self.lock = asyncio.Lock()
        self.keeper: AsyncIterator[None] | None = None

    async def aclose(self) -> None:
        clients, self.clients, self.gates = list(self.clients.values()), {}, {}
        for client in clients:
            await client.close()


_loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopClients] = (
    weakref.WeakKeyDictionary()
)


async def _close_at_shutdown(clients: _LoopClients) -> AsyncIterator[None]:
    """An async generator the loop finalizes when it shuts down its async generators (as
    ``asyncio.run`` does): then it closes the loop's clients."""
    try:
        yield
    finally:
        await clients.aclose()


async def _loop_clients() -> _LoopClients:
    loop = asyncio.get_running_loop()
    found = _loops.get(loop)
    if found is None:
        found = _loops[loop] = _LoopClients()
        found.keeper = _close_at_shutdown(found)
        await found.keeper.__anext__()
    return found


def _session(binding: Binding, sessions: dict[Hashable, Any]) -> Any:
    """The aiobotocore session for ``binding`` in this loop (``sessions``: the loop's), made
    once per profile, or per set of explicit keys: another table or service makes none."""
    if not AVAILABLE:
        raise ConfigurationError("native asyncio needs aiobotocore: pip install 'chathist[async]'")
    try:
        from aiobotocore.session import AioSession
    except ImportError as exc:  # installed, but broken
        raise ConfigurationError(f"aiobotocore cannot be imported: {exc}") from exc
    profile = binding.profile
    source = binding.boto3_session
    if source is not None:
        # aiobotocore cannot share a boto3 session. Keys given to it explicitly are static:
        # take them; any other credentials, aiobotocore resolves (and refreshes) itself from
        # the same profile.
        credentials = source.get_credentials()
        if credentials is not None and credentials.method == "explicit":
            frozen = credentials.get_frozen_credentials()
            keys = (frozen.access_key or "", frozen.secret_key or "", frozen.token)
            found = sessions.get(keys)
            if found is None:
                found = sessions[keys] = AioSession()
                found.set_credentials(*keys)
            return found
        profile = None if source.profile_name == "default" else source.profile_name
    found = sessions.get(profile)
    if found is None:
        found = sessions[profile] = AioSession(profile=profile)
    return found


async def async_client_for(binding: Binding, service: str = DYNAMODB) -> Any:
    """The aiobotocore client of ``service`` (DynamoDB, or KMS for the region and credentials
    of ``binding``) in the running loop, opened on first use."""
    client, _ = await _client_and_gate(binding, service)
    return client


async def _client_and_gate(
    binding: Binding, service: str = DYNAMODB
) -> tuple[Any, asyncio.Semaphore]:
    binding = binding.connection if service == DYNAMODB else kms_scope(binding)
    key = (service, binding)
    clients = await _loop_clients()
    found = clients.clients.get(key)
    if found is not None:
        return found, clients.gates[key]
    async with clients.lock:
        found = clients.clients.get(key)
        if found is None:
            size = MAX_IN_FLIGHT
            try:
                context = _session(binding, clients.sessions).create_client(
                    service,
                    region_name=binding.region_name,
                    endpoint_url=binding.endpoint_url,
                    config=CLIENT_CONFIG.merge(Config(max_pool_connections=size)),
                )
                found = await context.__aenter__()
            except (BotoCoreError, ValueError) as exc:
                raise ConfigurationError(f"cannot create a {service} client: {exc}") from exc
            clients.clients[key] = found
            clients.gates[key] = asyncio.Semaphore(size)
    return found, clients.gates[key]


async def aclose_clients() -> None:
    """Close every client opened in the running loop (new ones open on the next request).
    Call it when no request of this loop is in flight (at shutdown): a request sent through a
    client being closed fails."""
    found = _loops.get(asyncio.get_running_loop())
    if found is not None:
        await found.aclose()


class AsyncSender(Sending):
    """The asyncio twin of `chathist.dynamo.client.Sender`."""

    async def send(self, request: Call) -> dict[str, Any]:
        """Send one request; return its response or raise its chathist error."""
        params = self.params(request)
        response: dict[str, Any] | None = None
        try:
            client, gate = await _client_and_gate(self.binding, request.service)
            method = getattr(client, xform_name(request.operation))
            async with gate:
                response = cast(dict[str, Any], await method(**params))
            return response
        except (ClientError, BotoCoreError) as exc:
            response = error_response(exc)
            raise self.failure(exc, request, params) from exc
        finally:
            self.record(request, response)

    async def run(self, steps: Steps[T]) -> T:
        """Drive ``steps`` to their result, awaiting each request and each backoff."""
        answer: Any = None
        error: ChatHistoryError | None = None
        while True:
            try:
                op = steps.throw(error) if error is not None else steps.send(answer)
            except StopIteration as done:
                return cast(T, done.value)
            answer = error = None
            if isinstance(op, Sleep):
                await asyncio.sleep(op.seconds)
                continue
            try:
                answer = await self.send(op)
            except ChatHistoryError as exc:
                error = exc
