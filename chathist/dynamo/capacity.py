"""Consumed-capacity accounting: running totals of what DynamoDB reported for each request.

The request path (`chathist.dynamo.client`) asks every request for ``ReturnConsumedCapacity=TOTAL``
and records each response here, failed ones included (a failed condition is charged too).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

__all__ = ["Capacity", "CapacityMeter"]

_READS = frozenset({"GetItem", "Query", "Scan", "BatchGetItem", "TransactGetItems"})


@dataclass(frozen=True)
class Capacity:
    """Read and write units DynamoDB reported, the number of DynamoDB requests sent, and the
    number of AWS KMS requests (data keys of client-side encryption) sent."""

    read_units: float = 0.0
    write_units: float = 0.0
    requests: int = 0
    kms_requests: int = 0

    def __add__(self, other: Capacity) -> Capacity:
        return Capacity(
            self.read_units + other.read_units,
            self.write_units + other.write_units,
            self.requests + other.requests,
            self.kms_requests + other.kms_requests,
        )

    def __sub__(self, other: Capacity) -> Capacity:
        return Capacity(
            self.read_units - other.read_units,
            self.write_units - other.write_units,
            self.requests - other.requests,
            self.kms_requests - other.kms_requests,
        )


def reported(operation: str, response: dict[str, Any] | None) -> Capacity:
    """The capacity one response reports (``ReturnConsumedCapacity=TOTAL``), as one request."""
    reads, writes = _units(operation, response)
    return Capacity(reads, writes, 1)


def _units(operation: str, response: dict[str, Any] | None) -> tuple[float, float]:
    """(read units, write units) one response reports."""
    consumed = (response or {}).get("ConsumedCapacity") or []
    if isinstance(consumed, dict):
        consumed = [consumed]
    reads = writes = 0.0
    for entry in consumed:
        total = float(entry.get("CapacityUnits", 0.0))
        read, write = entry.get("ReadCapacityUnits"), entry.get("WriteCapacityUnits")
        if read is None and write is None:  # TOTAL: one number, of the operation's kind
            read, write = (total, 0.0) if operation in _READS else (0.0, total)
        elif read is None:  # only one of the two split out: the rest of the total is the other
            read = max(0.0, total - float(write))
        elif write is None:
            write = max(0.0, total - float(read))
        reads += float(read)
        writes += float(write)
    return reads, writes


class CapacityMeter:
    """Thread-safe running totals; read them with `total`, zero them with `reset`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = [0.0, 0.0, 0, 0]  # read units, write units, requests, KMS requests

    def record(self, operation: str, response: dict[str, Any] | None) -> None:
        """Add what ``response`` (of ``operation``) reports; a failed request counts as one."""
        reads, writes = _units(operation, response)
        with self._lock:  # (plain numbers: this runs for every request)
            counts = self._counts
            counts[0] += reads
            counts[1] += writes
            counts[2] += 1

    def record_kms(self) -> None:
        """Count one AWS KMS request (answered or failed)."""
        with self._lock:
            self._counts[3] += 1

    @property
    def total(self) -> Capacity:
        with self._lock:
            reads, writes, requests, kms = self._counts
        return Capacity(reads, writes, int(requests), int(kms))

    def reset(self) -> Capacity:
        """Zero the totals and return what they were."""
        with self._lock:
            (reads, writes, requests, kms), self._counts = self._counts, [0.0, 0.0, 0, 0]
        return Capacity(reads, writes, int(requests), int(kms))
