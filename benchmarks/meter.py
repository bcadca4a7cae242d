"""Count what DynamoDB reports to a botocore client: capacity, requests, items, conflicts.

A `HookMeter` is attached to clients through botocore's event system: ``before-parameter-build``
adds ``ReturnConsumedCapacity=TOTAL`` to requests of libraries that do not ask for it (boto3's
resource layer deep-copies the parameters in its own ``provide-client-params`` handler, so that
event is too early), and ``after-call`` reads every response (errors included). chathist's own
meter (``history.consumed_capacity``) uses the same accounting (`chathist.capacity.reported`).

DynamoDB Local under-reports ``TransactWriteItems``: it does not charge 2 WCU per KB of every
item as the service does (100 one-KB items are reported as 2 WCU). The meter therefore also
prices each successful transaction the service's way, from the request's item sizes, and keeps
the difference in `Usage.tx_repriced`; `Usage.wcu` is the reported units plus that difference.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, fields
from typing import Any

from chathist.core.sizes import item_size, write_units
from chathist.dynamo.capacity import reported
from chathist.dynamo.client import METERED

DATA_OPERATIONS = METERED
"""Operations that move items and accept ``ReturnConsumedCapacity`` (chathist's own list)."""


@dataclass(frozen=True)
class Usage:
    """Read/write units, requests sent, items returned by reads, conditional-write conflicts."""

    read_units: float = 0.0
    write_units: float = 0.0
    requests: int = 0
    items: int = 0
    conflicts: int = 0
    tx_repriced: float = 0.0
    """Service-priced minus DynamoDB Local-reported WCU of the transactions (see module doc)."""

    @property
    def wcu(self) -> float:
        """Write units as the service would charge them."""
        return self.write_units + self.tx_repriced

    def __add__(self, other: Usage) -> Usage:
        return Usage(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def __sub__(self, other: Usage) -> Usage:
        return Usage(*(getattr(self, f.name) - getattr(other, f.name) for f in fields(self)))


def _is_conflict(parsed: dict[str, Any]) -> bool:
    code = parsed.get("Error", {}).get("Code", "")
    if code == "ConditionalCheckFailedException":
        return True
    if code == "TransactionCanceledException":
        reasons = parsed.get("CancellationReasons") or []
        return any(r.get("Code") == "ConditionalCheckFailed" for r in reasons)
    return False


def transaction_wcu(params: dict[str, Any]) -> float:
    """What the service charges for a TransactWriteItems request: 2 WCU per KB per item."""
    units = 0
    for action in params.get("TransactItems", []):
        put = action.get("Put")
        if put is not None:
            units += write_units(item_size(put["Item"]))
        else:
            units += 1  # deletes, updates and condition checks of small items
    return 2.0 * units


def _items(operation: str, parsed: dict[str, Any]) -> int:
    if operation in ("Query", "Scan"):
        return int(parsed.get("Count", 0))
    if operation == "GetItem":
        return 1 if "Item" in parsed else 0
    return 0


class HookMeter:
    """Running totals over every client it is attached to (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._total = Usage()
        self._id = f"benchmark-meter-{id(self)}"

    def attach(self, client: Any, *, ask_for_capacity: bool) -> Any:
        """Count ``client``'s responses; with ``ask_for_capacity``, ask DynamoDB to report
        consumed capacity on each data request. Returns ``client``."""
        events = client.meta.events
        ask = self._ask if ask_for_capacity else self._price
        events.register("before-parameter-build.dynamodb", ask, unique_id=self._id + "-ask")
        events.register("after-call.dynamodb", self._record, unique_id=self._id)
        return client

    def _ask(self, params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        if model.name in DATA_OPERATIONS:
            params.setdefault("ReturnConsumedCapacity", "TOTAL")
        self._price(params, model, context)

    def _price(self, params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        if model.name == "TransactWriteItems":
            context["benchmark_transaction_wcu"] = transaction_wcu(params)

    def _record(
        self, parsed: dict[str, Any] | None, model: Any, context: dict[str, Any], **_: Any
    ) -> None:
        operation = model.name
        if operation not in DATA_OPERATIONS:
            return
        parsed = parsed or {}
        capacity = reported(operation, parsed)
        repriced = 0.0
        priced = context.get("benchmark_transaction_wcu")
        if priced is not None and "Error" not in parsed:
            repriced = priced - capacity.write_units
        usage = Usage(
            capacity.read_units,
            capacity.write_units,
            1,
            _items(operation, parsed),
            1 if _is_conflict(parsed) else 0,
            repriced,
        )
        with self._lock:
            self._total = self._total + usage

    @property
    def total(self) -> Usage:
        with self._lock:
            return self._total
