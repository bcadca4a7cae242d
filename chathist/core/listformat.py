"""LangChain's list layout as data: a session's ``History`` list <-> LangChain messages. Pure code.

In the list layout (langchain-community's ``DynamoDBChatMessageHistory``) a session is one item
whose history attribute is a list of ``messages_to_dict`` maps, stored with boto3's
TypeSerializer.

Numbers. boto3 reads every DynamoDB number as ``Decimal``; `messages_from_legacy` turns one
written as an integer (digits only) into an ``int`` and any other into a ``float``. A float is
stored as ``Decimal(str(f))`` (as LangChain does), which can be digits only when the float is
integral (``1e16`` becomes ``10000000000000000``; ``1.0`` stays ``1.0`` unless the service trims
it to ``1``): such floats read back as ints of the same value (equal in Python; pydantic fields
typed ``float`` turn them back into floats). Every other float reads back exactly.

Floats on write. `messages_to_legacy` stores floats only when asked to
(``coerce_float_to_decimal=True``, as ``Decimal(str(f))``); otherwise a float is refused with an
`UnsupportedValueError` that says so. That is what LangChain's class can store (boto3 refuses
floats), and coercion is opt-in because it is lossy in the way described above. NaN and
infinities are always refused, and so are numbers DynamoDB cannot hold (more than 38 significant
digits, or magnitudes outside 1e-130..1e126).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from decimal import Decimal, DecimalException
from typing import Any

from boto3.dynamodb.types import DYNAMODB_CONTEXT, Binary
from langchain_core.messages import BaseMessage, messages_to_dict

from chathist.core.codec import check_json_value, check_readable, exact_number, message_from_dict
from chathist.errors import CorruptHistoryError, UnsupportedValueError

__all__ = [
    "from_dynamodb_numbers",
    "messages_from_legacy",
    "messages_to_legacy",
    "to_dynamodb_numbers",
]

_SMALLEST = Decimal("1e-130")
_TOO_LARGE = Decimal("1e126")


def from_dynamodb_numbers(value: Any) -> Any:
    """``value`` (as boto3's TypeDeserializer gives it) with every Decimal turned into an int
    (when it is written as an integer: digits, no point, no exponent) or a float, sets into lists
    and binary into bytes, recursively."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, Decimal):
        if str(value).lstrip("-").isdigit():
            return int(value)  # written as an integer: digits only
        return float(value)
    if isinstance(value, dict):
        return {key: from_dynamodb_numbers(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [from_dynamodb_numbers(item) for item in value]
    if isinstance(value, (set, frozenset)):
        return [from_dynamodb_numbers(item) for item in sorted(value, key=repr)]
    if isinstance(value, Binary):
        return bytes(value)  # type: ignore[call-overload]
    return value


def messages_from_legacy(items: list[dict[str, Any]]) -> list[BaseMessage]:
    """The messages of a list-layout History attribute (as boto3 deserialized it).

    Raises `CorruptHistoryError` if ``items`` is not a list of ``messages_to_dict`` maps.
    """
    if not isinstance(items, list):
        raise CorruptHistoryError(
            f"the history attribute is of type {type(items).__name__}, not a list of messages"
        )
    converted = from_dynamodb_numbers(items)
    for index, entry in enumerate(converted):
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("type"), str)
            or not isinstance(entry.get("data"), dict)
        ):
            raise CorruptHistoryError(
                f"history entry {index} is not a message map with 'type' and 'data'"
            )
    messages = []
    for index, entry in enumerate(converted):
        try:
            messages.append(message_from_dict(entry))
        except CorruptHistoryError as exc:
            raise CorruptHistoryError(f"history entry {index}: {exc}") from exc
    return messages


def _dynamodb_number(value: int | float, path: str) -> int | Decimal:
    """``value`` as DynamoDB can store it; `UnsupportedValueError` if it cannot, exactly."""
    number = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    try:
        DYNAMODB_CONTEXT.create_decimal(number)
        if not number.is_zero() and not _SMALLEST <= abs(number) < _TOO_LARGE:
            raise DecimalException
    except DecimalException as exc:
        raise UnsupportedValueError(
            f"{path}: {value!r} does not fit a DynamoDB number (at most 38 significant digits,"
            " magnitude 1e-130 to 1e126)"
        ) from exc
    return value if isinstance(value, int) else number


def to_dynamodb_numbers(value: Any, *, coerce_float_to_decimal: bool, path: str = "message") -> Any:
    """``value`` (checked JSON) with floats as Decimal, ready for boto3's TypeSerializer.

    A Decimal (a number read back by boto3) is stored as the int or float of the same value
    (`chathist.core.codec.exact_number`), and so reads back as that; it needs no
    ``coerce_float_to_decimal``, which is about floats that may read back as ints.
    """
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, Decimal):
        return _dynamodb_number(exact_number(value, path), path)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise UnsupportedValueError(f"{path}: {value!r} cannot be stored (NaN and infinity)")
        if not coerce_float_to_decimal:
            raise UnsupportedValueError(
                f"{path}: the float {value!r} cannot be stored in the list layout as is; pass"
                " coerce_float_to_decimal=True to store floats as DynamoDB numbers (as LangChain"
                " does), or use the event layout, which stores floats exactly"
            )
        return _dynamodb_number(value, path)
    if isinstance(value, int):
        return _dynamodb_number(value, path)
    if isinstance(value, dict):
        return {
            key: to_dynamodb_numbers(
                item, coerce_float_to_decimal=coerce_float_to_decimal, path=f"{path}.{key}"
            )
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [
            to_dynamodb_numbers(
                item, coerce_float_to_decimal=coerce_float_to_decimal, path=f"{path}[{index}]"
            )
            for index, item in enumerate(value)
        ]
    raise UnsupportedValueError(f"{path}: type {type(value).__name__} is not JSON")


def messages_to_legacy(
    messages: Sequence[BaseMessage], *, coerce_float_to_decimal: bool
) -> list[dict[str, Any]]:
    """``messages`` as list-layout entries (``messages_to_dict`` maps, floats as Decimal).

    Raises `UnsupportedValueError` for a value the list layout cannot store (see the module
    docstring), before anything is written.
    """
    messages = list(messages)  # read once: an iterator would be empty the second time
    for index, message in enumerate(messages):
        if not isinstance(message, BaseMessage):
            raise UnsupportedValueError(
                f"messages[{index}]: expected a LangChain BaseMessage, got {type(message).__name__}"
            )
    entries = messages_to_dict(messages)
    result: list[dict[str, Any]] = []
    for index, entry in enumerate(entries):
        path = f"messages[{index}]"
        check_json_value(entry, path)
        check_readable(entry)
        result.append(
            to_dynamodb_numbers(entry, coerce_float_to_decimal=coerce_float_to_decimal, path=path)
        )
    return result
