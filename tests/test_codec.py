"""The codec: every message round-trips exactly, or is refused with a typed error."""

from __future__ import annotations

import json
import math
import zlib
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    ChatMessageChunk,
    FunctionMessage,
    FunctionMessageChunk,
    HumanMessage,
    HumanMessageChunk,
    SystemMessage,
    SystemMessageChunk,
    ToolMessage,
    ToolMessageChunk,
    message_to_dict,
)

from chathist.core import codec
from chathist.core.codec import (
    CODEC_JSON,
    CODEC_JSON_LIST,
    CODEC_ZLIB,
    MAX_DEPTH,
    MAX_INT_DIGITS,
    Payload,
    check_json_value,
    check_readable,
    decode_message,
    decode_messages,
    encode_message,
    pack_payloads,
    packed_size,
    write_units,
)
from chathist.errors import CorruptHistoryError, UnsupportedValueError

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def every_message_type() -> list[BaseMessage]:
    """One message of every type, with the fields that most often break stores."""
    return [
        HumanMessage("hi ✓ 你好 🎉", id="h1", name="alice", additional_kwargs={"n": 1, "f": 0.1}),
        AIMessage(
            "calling",
            tool_calls=[{"name": "search", "args": {"q": "x", "k": 3, "t": 0.5}, "id": "c1"}],
            usage_metadata={"input_tokens": 5, "output_tokens": 7, "total_tokens": 12},
            response_metadata={"model": "m", "logprobs": [-0.25, -1.5e-9]},
            id="a1",
        ),
        SystemMessage("be brief"),
        ToolMessage("42", tool_call_id="c1", artifact={"rows": [1, 2]}, status="success"),
        FunctionMessage("result", name="fn"),
        ChatMessage("hello", role="narrator"),
        AIMessageChunk("partial", id="a2"),
        HumanMessageChunk("chunk"),
        SystemMessageChunk("sys chunk"),
        ToolMessageChunk("t", tool_call_id="c2"),
        FunctionMessageChunk("f", name="fn"),
        ChatMessageChunk("c", role="r"),
        HumanMessage([{"type": "text", "text": "look"}, {"type": "image", "url": "http://x/y"}]),
    ]


@pytest.mark.parametrize("message", every_message_type(), ids=lambda m: m.type)
def test_every_message_type_round_trips_exactly(message: BaseMessage) -> None:
    payload = encode_message(message)
    back = decode_message(payload.codec, payload.data)
    assert type(back) is type(message)
    assert message_to_dict(back) == message_to_dict(message)


def _same_json(a: Any, b: Any) -> bool:
    """Equality that also tells ints from floats and 0.0 from -0.0."""
    if isinstance(a, float) or isinstance(b, float):
        return type(a) is type(b) and a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_json(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_json(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


@given(kwargs=st.dictionaries(st.text(), json_values, max_size=5), content=st.text())
def test_arbitrary_json_kwargs_round_trip_exactly(kwargs: dict[str, Any], content: str) -> None:
    message = AIMessage(content, additional_kwargs=kwargs, response_metadata={"k": kwargs})
    payload = encode_message(message)
    back = decode_message(payload.codec, payload.data)
    assert _same_json(back.additional_kwargs, kwargs)
    assert _same_json(back.response_metadata, {"k": kwargs})
    assert back.content == content


@given(st.text(min_size=1, max_size=40), st.integers(min_value=1, max_value=3000))
def test_large_compressible_payloads_are_compressed_and_still_exact(unit: str, times: int) -> None:
    text = unit * times
    payload = encode_message(HumanMessage(text))
    raw = json.dumps(
        message_to_dict(HumanMessage(text)), separators=(",", ":"), ensure_ascii=False
    ).encode()
    if payload.codec == CODEC_ZLIB:
        assert write_units(len(payload.data)) < write_units(len(raw))
        assert zlib.decompress(payload.data) == raw
    assert decode_message(payload.codec, payload.data).content == text


def test_small_payloads_stay_plain_json() -> None:
    payload = encode_message(HumanMessage("short " * 100))
    assert payload.codec == CODEC_JSON
    assert json.loads(payload.data)["data"]["content"] == "short " * 100


def test_compression_that_saves_no_write_unit_is_not_used() -> None:
    payload = encode_message(HumanMessage("x" * 5000), compress_threshold=None)
    assert payload.codec == CODEC_JSON


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (float("nan"), "NaN"),
        (float("inf"), "infinity"),
        (b"bytes", "bytes"),
        ({1: "x"}, "keys must be strings"),
        ({1.5}, "set"),
        (object(), "object"),
        pytest.param(10**MAX_INT_DIGITS, "more than 4300 digits", id="int-4301-digits"),
        pytest.param(-(10**MAX_INT_DIGITS), "more than 4300 digits", id="int-minus-4301-digits"),
    ],
)
def test_values_json_cannot_hold_exactly_are_refused(value: Any, fragment: str) -> None:
    with pytest.raises(UnsupportedValueError, match=fragment):
        encode_message(HumanMessage("x", additional_kwargs={"v": value}))


awkward_scalars = (
    json_scalars
    | st.floats()  # NaN and infinities too
    | st.decimals(allow_nan=True, allow_infinity=True)
    | st.integers(MAX_INT_DIGITS - 1, MAX_INT_DIGITS + 1).map(lambda digits: 10**digits - 1)
    | st.binary(max_size=3)
    | st.text(alphabet=st.characters(min_codepoint=0xD7F0, max_codepoint=0xE010), max_size=3)
)
awkward_values = st.recursive(
    awkward_scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(st.text(max_size=3) | st.integers() | st.booleans(), inner, max_size=3)
    ),
    max_leaves=12,
)


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


@given(awkward_values)
@example(_nested(MAX_DEPTH + 1))
@example(_nested(MAX_DEPTH - 1))
@example({"a": _nested(MAX_DEPTH)})
def test_the_fast_json_check_accepts_only_what_the_full_check_accepts(value: Any) -> None:
    """`encode_message` checks an ordinary message by writing and reading it back; it may send
    anything to the slow check, but what it accepts is what `check_json_value` accepts, written
    to the same bytes."""
    exact = codec._exact_json(value)
    if exact is None:
        return
    check_json_value(value)  # raises if the fast way accepted what the slow way refuses
    assert exact[0] == codec._json_bytes(value)


@st.composite
def near_plain_forms(draw: st.DrawFn) -> dict[str, Any]:
    """A human, AI or system message's mapping, as read back from JSON: text, name and id
    drawn, and maybe one other field (or the type) changed to any JSON value."""
    cls = draw(st.sampled_from([HumanMessage, AIMessage, SystemMessage]))
    text_or_none = st.none() | st.text()
    as_dict = message_to_dict(cls(draw(st.text()), name=draw(text_or_none), id=draw(text_or_none)))
    data = as_dict["data"]
    if draw(st.booleans()):
        field = draw(st.sampled_from(sorted([*data, "type", "extra"])))
        target = as_dict if field == "type" and draw(st.booleans()) else data
        target[field] = draw(json_values)
    if draw(st.booleans()):
        del data[draw(st.sampled_from(sorted(data)))]
    return json.loads(json.dumps(as_dict))  # type: ignore[no-any-return]


def _ai_with(**data: Any) -> dict[str, Any]:
    as_dict = message_to_dict(AIMessage("x"))
    as_dict["data"].update(data)
    return as_dict


@given(near_plain_forms())
@example(_ai_with(tool_calls="s"))
@example(_ai_with(additional_kwargs=None))
@example(_ai_with(usage_metadata={"input_tokens": "many"}))
def test_a_message_the_codec_calls_plainly_readable_reads_back(as_dict: dict[str, Any]) -> None:
    """`encode_message` skips building a message it calls plainly readable: only one that
    LangChain does read back."""
    if codec._plainly_readable(as_dict):
        check_readable(as_dict)


@given(near_plain_forms())
def test_the_plain_json_is_the_exact_json(as_dict: dict[str, Any]) -> None:
    """A plainly readable mapping is written without reading it back: to the bytes the general
    path writes, which read back equal."""
    plain = codec._plain_json(as_dict)
    if plain is not None:
        assert plain == codec._json_bytes(as_dict)
        assert json.loads(plain) == as_dict


@given(
    st.sampled_from([HumanMessage, AIMessage, SystemMessage]),
    st.text(),
    st.none() | st.text(),
    st.none() | st.text(),
)
def test_text_messages_are_plainly_readable(
    cls: type[BaseMessage], text: str, name: str | None, id_: str | None
) -> None:
    """The ordinary message skips the build (what the check is there for)."""
    as_dict = json.loads(json.dumps(message_to_dict(cls(text, name=name, id=id_))))
    assert codec._plainly_readable(as_dict)
    as_dict["data"]["content"] = None
    assert not codec._plainly_readable(as_dict)


def test_lone_surrogates_are_refused() -> None:
    with pytest.raises(UnsupportedValueError, match="surrogate"):
        encode_message(HumanMessage("bad \ud800 text"))


def test_deep_nesting_is_refused_clearly() -> None:
    deep: Any = "leaf"
    for _ in range(MAX_DEPTH + 5):
        deep = [deep]
    with pytest.raises(UnsupportedValueError, match="nested deeper"):
        check_json_value(deep)


def test_not_a_message_is_refused() -> None:
    with pytest.raises(UnsupportedValueError, match="BaseMessage"):
        encode_message("hello")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("codec", "data"),
    [
        (CODEC_JSON, b"{not json"),
        (CODEC_JSON, b'{"type": "nope", "data": {}}'),
        (CODEC_JSON, b"[1, 2]"),
        (CODEC_ZLIB, b"not zlib"),
        ("rot13", b"{}"),
    ],
)
def test_garbage_payloads_give_corrupt_history_error(codec: str, data: bytes) -> None:
    with pytest.raises(CorruptHistoryError):
        decode_message(codec, data)


def test_ints_up_to_the_digit_limit_round_trip() -> None:
    for number in (10**MAX_INT_DIGITS - 1, -(10**MAX_INT_DIGITS - 1)):
        payload = encode_message(HumanMessage("x", additional_kwargs={"n": number}))
        assert decode_message(payload.codec, payload.data).additional_kwargs["n"] == number


# -- Decimal: what boto3 reads every DynamoDB number as (LangChain's class returns them) ----------


def _round_trip_number(value: Any) -> Any:
    payload = encode_message(AIMessage("x", response_metadata={"n": value}))
    return decode_message(payload.codec, payload.data).response_metadata["n"]


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        (Decimal("3"), 3),
        (Decimal("3.000"), 3),
        (Decimal("1E+2"), 100),
        (Decimal("-0"), 0),
        (Decimal("0.7"), 0.7),
        (Decimal("-2.5E-9"), -2.5e-9),
        (Decimal("1.5E-300"), 1.5e-300),
        # integral, so an int, as the list layout reads such a number
        pytest.param(Decimal("1.5E+300"), 15 * 10**299, id="1.5E+300"),
        (Decimal(12345678901234567890), 12345678901234567890),
    ],
)
def test_decimals_are_stored_as_the_int_or_float_of_the_same_value(
    stored: Decimal, expected: Any
) -> None:
    back = _round_trip_number(stored)
    assert type(back) is type(expected) and back == expected


@pytest.mark.parametrize(
    ("stored", "fragment"),
    [
        (Decimal("NaN"), "NaN"),
        (Decimal("sNaN"), "NaN"),
        (Decimal("Infinity"), "infinity"),
        (Decimal("-Infinity"), "infinity"),
        (Decimal("0.1000000000000000000001"), "no float equals it"),
        (Decimal("1E-400"), "no float equals it"),
        (Decimal("1E+400000000"), "more than 4300 digits"),
    ],
)
def test_decimals_no_int_or_float_equals_are_refused_naming_the_path(
    stored: Decimal, fragment: str
) -> None:
    with pytest.raises(UnsupportedValueError, match=fragment) as caught:
        _round_trip_number(stored)
    assert "response_metadata.n" in str(caught.value)


def _equal_in_value(number: Any, stored: Decimal) -> bool:
    """``number`` is an int or float whose value, written as JSON, is ``stored``."""
    if type(number) is int:
        return Decimal(number) == stored
    return type(number) is float and Decimal(repr(number)) == stored


@given(
    stored=st.decimals(allow_nan=False, allow_infinity=False)
    | st.floats(allow_nan=False, allow_infinity=False).map(lambda f: Decimal(repr(f)))
    | st.integers().map(Decimal)
)
def test_a_decimal_round_trips_equal_in_value_or_is_refused(stored: Decimal) -> None:
    try:
        back = _round_trip_number(stored)
    except UnsupportedValueError:
        # Refused only when no int or float holds it: every float's and int's Decimal is taken.
        assert stored != stored.to_integral_value()
        assert Decimal(repr(float(stored))) != stored
        return
    assert _equal_in_value(back, stored)


@given(
    picks=st.lists(st.integers(0, len(every_message_type()) - 1), min_size=1, max_size=8),
    kwargs=st.dictionaries(st.text(), json_values, max_size=3),
    content=st.text(),
)
def test_packed_messages_round_trip_exactly_in_order(
    picks: list[int], kwargs: dict[str, Any], content: str
) -> None:
    """Several messages packed into one payload decode back to the same messages, in order,
    and the packed size is what the planner counts."""
    sent = [every_message_type()[i] for i in picks]
    sent.append(HumanMessage(content, additional_kwargs=kwargs))
    payloads = [encode_message(m, compress_threshold=None) for m in sent]
    packed = pack_payloads(payloads)
    assert packed.codec == CODEC_JSON_LIST and packed.count == len(sent)
    assert len(packed.data) == packed_size([len(p.data) for p in payloads])
    back = decode_messages(packed.codec, packed.data.decode("utf-8"), packed.count)
    assert [message_to_dict(m) for m in back] == [message_to_dict(m) for m in sent]


def test_a_packed_payload_must_hold_what_its_count_says() -> None:
    packed = pack_payloads([encode_message(HumanMessage(t)) for t in "ab"])
    for count in (1, 3):
        with pytest.raises(CorruptHistoryError, match="expected a list of"):
            decode_messages(packed.codec, packed.data, count)
    with pytest.raises(CorruptHistoryError, match="holds one message"):
        decode_messages(CODEC_JSON, encode_message(HumanMessage("a")).data, 2)
    with pytest.raises(ValueError, match="plain JSON"):
        pack_payloads([Payload(CODEC_ZLIB, zlib.compress(b"{}"))])
