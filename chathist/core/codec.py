"""Message codec: a LangChain message to bytes and back, exactly.

A message is stored as its ``message_to_dict`` form written as compact UTF-8 JSON. JSON keeps ints
as ints and floats as floats (``repr`` round-trips every finite float), so nothing comes back as
``Decimal``. A ``Decimal`` (boto3 reads every DynamoDB number as one, so messages returned by
LangChain's class hold them) is stored as the int or float of the same value (`exact_number`).
Values JSON cannot hold exactly are refused before anything is written: NaN and infinities,
Decimals no int or float equals, ints over `MAX_INT_DIGITS` digits, non-string dict keys, bytes
and other objects, lone surrogates, nesting deeper than `MAX_DEPTH`. Tuples are stored as lists.

Several small messages written together may share one payload (`pack_payloads`, codec
`CODEC_JSON_LIST`: a JSON array of their mappings), so that one item carries them.

Payloads larger than ``compress_threshold`` are compressed with zlib when that saves at least one
DynamoDB write unit (1 KB); the codec name stored with each payload says which was done, so items
written under other defaults stay readable.
"""

from __future__ import annotations

import json
import math
import sys
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    message_to_dict,
    messages_from_dict,
)

from chathist.core.sizes import write_units
from chathist.errors import CorruptHistoryError, UnsupportedValueError

__all__ = [
    "CODEC_JSON",
    "CODEC_JSON_LIST",
    "CODEC_ZLIB",
    "DEFAULT_COMPRESS_THRESHOLD",
    "MAX_DEPTH",
    "MAX_INT_DIGITS",
    "Payload",
    "check_json_value",
    "check_readable",
    "decode_message",
    "decode_messages",
    "encode_message",
    "exact_number",
    "message_from_dict",
    "messages_from_dicts",
    "pack_payloads",
    "packed_size",
    "payload_dicts",
]

CODEC_JSON: Final = "json"
"""UTF-8 JSON text."""
CODEC_ZLIB: Final = "json+zlib"
"""UTF-8 JSON text compressed with zlib."""
CODEC_JSON_LIST: Final = "json-list"
"""Several messages in one payload: a UTF-8 JSON array of their ``message_to_dict`` mappings."""
CODECS: Final = frozenset({CODEC_JSON, CODEC_ZLIB, CODEC_JSON_LIST})

DEFAULT_COMPRESS_THRESHOLD: Final = 4096
"""Payloads up to this many bytes stay plain JSON, readable in the AWS console."""
MAX_DEPTH: Final = 200
"""Deepest nesting of lists and dicts accepted in a message."""
MAX_INT_DIGITS: Final = 4300
"""Most digits of an int in a message: Python's default limit on converting an int to and from
text (``sys.int_info.default_max_str_digits``), which json.dumps and json.loads obey."""
_INT_LIMIT: Final = 10**MAX_INT_DIGITS


@dataclass(frozen=True, slots=True)
class Payload:
    """An encoded message (or ``count`` packed messages): the codec used and the bytes it
    produced."""

    codec: str
    data: bytes
    count: int = 1


def exact_number(value: Decimal, path: str = "message") -> int | float:
    """``value`` as the int (when it is integral) or float of the same value; a Decimal that
    neither holds exactly is refused with `UnsupportedValueError` naming ``path``.

    A float is exact when its shortest ``repr`` is ``value`` (``Decimal(repr(f)) == value``), which
    is how LangChain and chathist write floats as DynamoDB numbers (``Decimal(str(f))``), so
    every number they stored comes back as what it was.
    """
    if not value.is_finite():
        raise UnsupportedValueError(f"{path}: Decimal {value} cannot be stored (NaN and infinity)")
    if value == value.to_integral_value():
        if value.adjusted() >= MAX_INT_DIGITS:
            raise UnsupportedValueError(
                f"{path}: Decimal {value} is an int of more than {MAX_INT_DIGITS} digits"
            )
        return int(value)
    number = float(value)
    if math.isfinite(number) and Decimal(repr(number)) == value:
        return number
    raise UnsupportedValueError(
        f"{path}: Decimal {value} is not an integer and no float equals it (the nearest is"
        f" {number!r}); round it, or store it as a string"
    )


def check_json_value(value: Any, path: str = "message", depth: int = 0) -> None:
    """Raise `UnsupportedValueError` unless ``value`` is JSON that round-trips exactly."""
    if depth > MAX_DEPTH:
        raise UnsupportedValueError(f"{path}: nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, (str, bool)):
        return
    if isinstance(value, int):
        if abs(value) >= _INT_LIMIT:
            raise UnsupportedValueError(f"{path}: an int of more than {MAX_INT_DIGITS} digits")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise UnsupportedValueError(f"{path}: {value!r} cannot be stored (NaN and infinity)")
        return
    if isinstance(value, Decimal):
        exact_number(value, path)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise UnsupportedValueError(
                    f"{path}: dict key {key!r} has type {type(key).__name__}; keys must be strings"
                )
            check_json_value(item, f"{path}.{key}", depth + 1)
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            check_json_value(item, f"{path}[{index}]", depth + 1)
        return
    raise UnsupportedValueError(
        f"{path}: type {type(value).__name__} is not JSON (use str, int, float, bool, None, "
        "list or dict; encode bytes as base64 text)"
    )


def _exact_json(value: Any) -> tuple[bytes, Any] | None:
    """``value`` as compact JSON and read back, if that provably holds what `check_json_value`
    accepts; None when it must be checked the slow way (or is refused). Written and read back by
    the json module's C code, an ordinary message is checked without a Python call per value:
    what reads back equal is JSON-exact (a non-str key, a tuple, an inexact Decimal does not),
    NaN and infinity are refused by ``allow_nan=False``, an int over `MAX_INT_DIGITS` digits by
    the interpreter's limit (when it is the default), and no nesting deeper than `MAX_DEPTH`
    fits in as few brackets."""
    limit = getattr(sys, "get_int_max_str_digits", lambda: 0)()
    if limit == 0 or limit > MAX_INT_DIGITS:
        return None
    try:
        text = json.dumps(
            value, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=exact_number
        )
        if text.count("{") + text.count("[") > MAX_DEPTH:
            return None
        data = text.encode("utf-8")
        loaded = json.loads(data)
    except Exception:  # whatever it is, the slow way says what is wrong
        return None
    return (data, loaded) if loaded == value else None


def _json_bytes(value: Any) -> bytes:
    check_json_value(value)
    try:
        text = json.dumps(
            value, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=exact_number
        )
    except ValueError as exc:  # an int over a limit lowered with sys.set_int_max_str_digits
        raise UnsupportedValueError(f"message cannot be written as JSON: {exc}") from exc
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UnsupportedValueError(
            f"message holds a string that is not valid Unicode (a lone surrogate at {exc.start})"
        ) from exc


def encode_message(
    message: BaseMessage, *, compress_threshold: int | None = DEFAULT_COMPRESS_THRESHOLD
) -> Payload:
    """Encode ``message``; compress when it is over the threshold and that saves a write unit.

    ``compress_threshold=None`` never compresses.
    """
    if not isinstance(message, BaseMessage):
        raise UnsupportedValueError(
            f"expected a LangChain BaseMessage, got {type(message).__name__}"
        )
    as_dict = message_to_dict(message)
    raw = _plain_json(as_dict)
    if raw is None:
        exact = _exact_json(as_dict)
        if exact is None:
            raw = _json_bytes(as_dict)  # raises what is wrong, or writes a tuple as a list
            exact = raw, json.loads(raw)
        raw, loaded = exact
        check_readable(loaded)
    if compress_threshold is not None and len(raw) > compress_threshold:
        packed = zlib.compress(raw, 6)
        if write_units(len(packed)) < write_units(len(raw)):
            return Payload(CODEC_ZLIB, packed)
    return Payload(CODEC_JSON, raw)


def decode_message(codec: str, data: bytes | str) -> BaseMessage:
    """Decode a stored payload back into its message."""
    return messages_from_dicts(payload_dicts(codec, data))[0]


def pack_payloads(payloads: Sequence[Payload]) -> Payload:
    """Plain-JSON payloads as one `CODEC_JSON_LIST` payload (a JSON array of them, in order):
    one item can then carry several small messages, as one payload."""
    if any(p.codec != CODEC_JSON for p in payloads):
        raise ValueError("only plain JSON payloads are packed")
    data = b"[" + b",".join(p.data for p in payloads) + b"]"
    return Payload(CODEC_JSON_LIST, data, sum(p.count for p in payloads))


def packed_size(sizes: Sequence[int]) -> int:
    """Bytes of the packed payload of plain-JSON payloads of these sizes (`pack_payloads`)."""
    return sum(sizes) + max(len(sizes), 1) + 1


def decode_messages(codec: str, data: bytes | str, count: int = 1) -> list[BaseMessage]:
    """The messages of a stored payload: one, or the ``count`` of a packed payload."""
    return messages_from_dicts(payload_dicts(codec, data, count))


def payload_dicts(
    codec: str, data: bytes | str, count: int = 1, take: int | None = None
) -> list[Any]:
    """The ``message_to_dict`` mappings a stored payload holds (one, or the ``count`` of a
    packed one), only the newest ``take`` of them: a reader decodes JSON per item and builds
    the messages of a whole read in one `messages_from_dicts` call, as a hand-written loop
    would. The mappings are checked when the messages are built."""
    try:
        if codec == CODEC_JSON_LIST:
            found = json.loads(data)
            if not isinstance(found, list) or len(found) != max(count, 1):
                raise CorruptHistoryError(
                    f"cannot decode stored messages: expected a list of {count}, got"
                    f" {len(found) if isinstance(found, list) else type(found).__name__}"
                )
            return found[-take:] if take is not None and take < len(found) else found
        if count > 1:
            raise CorruptHistoryError(f"a {codec!r} payload holds one message, not {count}")
        if codec == CODEC_ZLIB:
            if isinstance(data, str):
                raise ValueError("compressed payload stored as text")
            data = zlib.decompress(data)
        elif codec != CODEC_JSON:
            raise ValueError(f"unknown codec {codec!r}")
        return [json.loads(data)]
    except (ValueError, TypeError, zlib.error) as exc:
        plural = "s" if codec == CODEC_JSON_LIST else ""
        raise CorruptHistoryError(f"cannot decode stored message{plural}: {exc}") from exc


def messages_from_dicts(dicts: list[Any]) -> list[BaseMessage]:
    """The messages of ``message_to_dict`` mappings, built in one LangChain call;
    `CorruptHistoryError` (saying what is wrong with the first bad one) if any is not one."""
    try:
        return messages_from_dict(dicts)
    except Exception as exc:  # whatever LangChain's constructors raise: say which is bad
        for as_dict in dicts:
            message_from_dict(as_dict)
        raise CorruptHistoryError(f"cannot decode stored messages: {exc}") from exc


def message_from_dict(as_dict: Any) -> BaseMessage:
    """The message of a ``message_to_dict`` mapping; `CorruptHistoryError` for anything that is
    not one (LangChain raises ValueError, TypeError, KeyError, AttributeError or pydantic's
    errors, depending on what is wrong)."""
    if not isinstance(as_dict, dict) or "type" not in as_dict or "data" not in as_dict:
        raise CorruptHistoryError("cannot decode stored message: not a message_to_dict mapping")
    try:
        return messages_from_dict([as_dict])[0]
    except Exception as exc:  # whatever LangChain's constructors raise: the item is corrupt
        raise CorruptHistoryError(
            f"cannot decode stored message: {type(exc).__name__}: {exc}"
        ) from exc


def _plain_forms() -> dict[str, tuple[frozenset[str], tuple[str, ...], tuple[Any, ...]]]:
    """Per type of LangChain's own text messages, of the ``data`` of an empty one: its keys,
    and the keys and values of its fields but content, name and id."""
    forms = {}
    for cls in (HumanMessage, AIMessage, SystemMessage):
        as_dict = message_to_dict(cls(""))
        data = as_dict["data"]
        rest = tuple(k for k in data if k not in ("content", "name", "id"))
        forms[as_dict["type"]] = (frozenset(data), rest, tuple(data[k] for k in rest))
    return forms


_PLAIN_FORMS: Final = _plain_forms()


def _plainly_readable(as_dict: Any) -> bool:
    """Whether ``as_dict`` is a human, AI or system message's mapping with nothing set but a
    text content, a name and an id: every field else as in an empty message of its class,
    which LangChain built and so reads back. Such a message always reads back (a str content,
    name and id are what its class takes), so `check_readable` need not build it: a fifth of
    an ordinary append's client time on DynamoDB Local."""
    kind = as_dict.get("type") if type(as_dict) is dict else None
    form = _PLAIN_FORMS.get(kind) if type(kind) is str else None
    if form is None:
        return False
    keys, rest, values = form
    data = as_dict.get("data")
    return (
        type(data) is dict
        and data.keys() == keys
        and type(data["content"]) is str
        and (data["name"] is None or type(data["name"]) is str)
        and (data["id"] is None or type(data["id"]) is str)
        and tuple(map(data.__getitem__, rest)) == values
    )


def _plain_json(as_dict: Any) -> bytes | None:
    """``as_dict`` as compact JSON if it is `_plainly_readable`: its values are then text, None
    and empty lists and dicts, which JSON holds exactly, and it reads back as a message, so
    neither check needs to read it back. None otherwise, or if a text holds a lone surrogate
    (the general path says what is wrong)."""
    if not _plainly_readable(as_dict):
        return None
    try:
        return json.dumps(as_dict, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except (ValueError, TypeError):  # (UnicodeEncodeError is a ValueError)
        return None


def check_readable(as_dict: Any) -> None:
    """Raise `UnsupportedValueError` unless ``as_dict`` (what would be stored) reads back as a
    message. LangChain does not validate assignment (``m.content = None`` is accepted), so a
    message can hold what its own class refuses to load: such a write would make every later
    read of the session fail, and is refused before anything is sent."""
    try:
        message_from_dict(as_dict)
    except CorruptHistoryError as exc:
        text = str(exc).removeprefix("cannot decode stored message: ")
        raise UnsupportedValueError(f"message cannot be read back once stored: {text}") from exc
