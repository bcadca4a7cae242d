"""DynamoDB's size rules and limits: the one size model of chathist.

Sizes follow AWS's item-size rules, on items in DynamoDB's wire form (``{"S": "..."}``, as a
botocore client sends and returns them): an item is the sum of its attribute names and values;
a string counts its UTF-8 bytes, binary its raw bytes, a number 1 byte plus 1 per two significant
digits (leading and trailing zeros trimmed) plus 1 if negative (zero: 1 byte; at most 21), null
and booleans 1 byte, a list or map
3 bytes plus 1 byte per element (and a map's keys), a set its elements. Writes, the migration,
``chathist stats`` and the benchmarks all measure with these functions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Context, Decimal, InvalidOperation
from typing import Any, Final

__all__ = [
    "BATCH_ITEMS",
    "ITEM_LIMIT",
    "MAX_NUMBER_BYTES",
    "TRANSACTION_BYTES",
    "TRANSACTION_ITEMS",
    "attribute_size",
    "item_size",
    "number_size",
    "read_units",
    "text_size",
    "write_units",
]

ITEM_LIMIT: Final = 409_600
"""DynamoDB's item size limit (400 KB), attribute names and values included."""
TRANSACTION_ITEMS: Final = 100
"""Most actions in one TransactWriteItems."""
TRANSACTION_BYTES: Final = 4_000_000
"""A little under DynamoDB's 4 MB limit on the items of one transaction."""
BATCH_ITEMS: Final = 25
"""Most requests in one BatchWriteItem."""
MAX_NUMBER_BYTES: Final = 21
"""The most bytes DynamoDB counts for one number (38 significant digits)."""


_EXACT: Final = Context(prec=100)


def text_size(text: str) -> int:
    """Bytes of a string attribute name or value (UTF-8)."""
    return len(text.encode("utf-8"))


def number_size(number: str | int | float | Decimal) -> int:
    """Bytes of a number value: 1 plus 1 per two significant digits, 1 more if negative; zero
    is 1 byte (measured on DynamoDB Local's consumed capacity)."""
    try:
        sign, digits, _ = Decimal(str(number)).normalize(_EXACT).as_tuple()
    except InvalidOperation:
        return MAX_NUMBER_BYTES
    if not any(digits):
        return 1
    return min(MAX_NUMBER_BYTES, (len(digits) + 1) // 2 + 1 + sign)


def attribute_size(value: Mapping[str, Any]) -> int:
    """Bytes of one attribute value in wire form (``{"S": ...}``, ``{"L": [...]}``, ...)."""
    ((kind, data),) = value.items()
    if kind == "S":
        return text_size(data)
    if kind == "B":
        return len(data)
    if kind == "N":
        return number_size(data)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(text_size(element) for element in data)
    if kind == "NS":
        return sum(number_size(element) for element in data)
    if kind == "BS":
        return sum(len(element) for element in data)
    if kind == "L":
        return 3 + sum(1 + attribute_size(element) for element in data)
    if kind == "M":
        return 3 + sum(text_size(k) + 1 + attribute_size(v) for k, v in data.items())
    raise ValueError(f"unknown DynamoDB attribute type {kind!r}")


def item_size(item: Mapping[str, Mapping[str, Any]]) -> int:
    """Bytes of an item in wire form: its attribute names and values (compare with
    `ITEM_LIMIT`)."""
    return sum(text_size(name) + attribute_size(value) for name, value in item.items())


def write_units(size: int) -> int:
    """Write units DynamoDB charges to write ``size`` bytes (1 KB each, rounded up, at least 1)."""
    return max(1, math.ceil(size / 1024))


def read_units(size: int, *, consistent: bool = True) -> float:
    """Read units of reading ``size`` bytes (4 KB each, rounded up; eventually consistent: half)."""
    units = max(1, math.ceil(size / 4096))
    return float(units) if consistent else units / 2
