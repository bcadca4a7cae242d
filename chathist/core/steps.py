"""Steps: the rules of chathist written once, without I/O, for a sync and an async driver.

Every operation that talks to DynamoDB (append, read, clear, a migration...) is a generator that
*yields* what it needs done, a `Call` (one DynamoDB request) or a `Sleep` (a backoff), and
receives the answer: the response dict of a call, or, thrown into it, the typed error the call
ended in. It returns its result. A driver owns the sending: `chathist.dynamo.client.Sender.run`
with a botocore client, its async twin with aiobotocore. So the rules (sequence numbers after a
lost race, the fold, the read-again rules, retries) exist once, and sync and async cannot drift.

Steps compose with ``yield from``::

    def append_then_read(log):
        yield from log.append(payloads)
        return (yield from log.read(limit=20))
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = ["DYNAMODB", "KMS", "Call", "Op", "Sleep", "Steps", "call", "sleep"]

DYNAMODB = "dynamodb"
KMS = "kms"
"""The services a `Call` goes to: DynamoDB (every storage request), and AWS KMS for the data
keys of client-side encryption."""

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Call:
    """One request: ``operation`` as in the API reference (``"PutItem"``) and its parameters
    (``ReturnConsumedCapacity`` is added by the driver); ``service`` is `DYNAMODB` or `KMS`."""

    operation: str
    params: dict[str, Any]
    service: str = DYNAMODB


@dataclass(frozen=True, slots=True)
class Sleep:
    """Wait ``seconds`` (a backoff between attempts)."""

    seconds: float


Op = Call | Sleep
Steps = Generator[Op, Any, T]
"""A generator of steps returning a ``T``; run it with a driver."""


def call(operation: str, **params: Any) -> Steps[dict[str, Any]]:
    """Send one request; return its response. A failed request raises its typed error here."""
    response: dict[str, Any] = yield Call(operation, params)
    return response


def sleep(seconds: float) -> Steps[None]:
    """Wait ``seconds``."""
    if seconds > 0:
        yield Sleep(seconds)
