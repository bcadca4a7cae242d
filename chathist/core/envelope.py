"""Sealed payloads: the client-side encryption format of an event item. Pure code, no I/O.

An item's payload attributes (whatever they hold: a message, a part of a large one) are packed
into one byte string (`pack_attributes`) and sealed with AES-256-GCM under a *data key*; the
result is an *envelope* stored in the item's ``blob`` attribute::

    version (1 byte) | provider (1) | wrapped-key length (2, big-endian) | wrapped data key
    | nonce (12) | ciphertext and tag (16)

The wrapped data key travels with every item (KMS's ciphertext blob names the KMS key that
wrapped it, so an item sealed under another ``kms_key_id`` is still read). The authenticated
data (`associated_data`) is the envelope's header followed by the item's table, session id and
sort key: an item altered, or copied to another table, session or position, fails to open with
`DecryptionError`, and nothing of it is returned. The data key is fetched by the request path
(`chathist.dynamo.kms`) and cached; this module only seals and opens with the key it is given.

AES-256-GCM (``cryptography``): 12-byte random nonces, a 16-byte tag, 28 bytes per item besides
the wrapped key. A data key is used for at most `MAX_KEY_USES` seals (far below the 2**32 that
random 96-bit nonces allow).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from chathist.errors import ConfigurationError, DecryptionError

__all__ = [
    "KEY_BYTES",
    "MAX_KEY_USES",
    "NONCE_BYTES",
    "PROVIDER_KMS",
    "PROVIDER_LOCAL",
    "TAG_BYTES",
    "VERSION",
    "Envelope",
    "associated_data",
    "check_local_key",
    "encryption_context",
    "open_envelope",
    "pack_attributes",
    "require_cryptography",
    "seal",
    "unpack_attributes",
    "unwrap_local",
    "wrap_local",
]

VERSION: Final = 1
PROVIDER_KMS: Final = 1
"""The data key was wrapped by AWS KMS (``GenerateDataKey``; unwrapped by ``Decrypt``)."""
PROVIDER_LOCAL: Final = 2
"""The data key was wrapped by a raw 256-bit key given in code (development and tests)."""
PROVIDERS: Final = frozenset({PROVIDER_KMS, PROVIDER_LOCAL})
KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12
TAG_BYTES: Final = 16
MAX_KEY_USES: Final = 2**30
"""Seals under one data key before a new one is made (random nonces stay safe to 2**32)."""
_HEADER: Final = struct.Struct(">BBH")
_TYPES: Final = {"S": b"S", "B": b"B"}


def require_cryptography() -> Any:
    """The AESGCM class of ``cryptography``; `ConfigurationError` naming the extra to install
    when it is missing."""
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError as exc:
        raise ConfigurationError(
            "client-side encryption needs the cryptography package:"
            " pip install 'chathist[encryption]'"
        ) from exc
    return AESGCM


def _aesgcm(key: bytes) -> Any:
    return require_cryptography()(key)


def _invalid_tag() -> type[Exception]:
    from cryptography.exceptions import InvalidTag

    return InvalidTag


def check_local_key(key: object) -> bytes:
    """``key`` if it is a raw 256-bit key (32 bytes), else `ConfigurationError`."""
    if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_BYTES:
        raise ConfigurationError(
            f"local_key must be {KEY_BYTES} random bytes (a 256-bit key, e.g. os.urandom(32)),"
            f" got {type(key).__name__}"
            + (f" of {len(key)} bytes" if isinstance(key, (bytes, bytearray)) else "")
        )
    return bytes(key)


def encryption_context(table: str, session: str) -> dict[str, str]:
    """The KMS encryption context of a session's data keys: KMS logs it in CloudTrail, and IAM
    policies can match it (``kms:EncryptionContext:chathist:session``)."""
    return {"chathist:table": table, "chathist:session": session}


def _length_prefixed(*texts: str) -> bytes:
    out = bytearray()
    for text in texts:
        data = text.encode("utf-8")
        out += struct.pack(">I", len(data)) + data
    return bytes(out)


def associated_data(header: bytes, table: str, session: str, sort_key: str) -> bytes:
    """What an envelope's tag authenticates besides its ciphertext: the header and the item's
    place (table, session, sort key), each length-prefixed so no two places encode alike."""
    return b"chathist-seal\x00" + header + _length_prefixed(table, session, sort_key)


@dataclass(frozen=True, slots=True)
class Envelope:
    """A parsed envelope."""

    provider: int
    wrapped: bytes
    nonce: bytes
    ciphertext: bytes
    header: bytes

    @classmethod
    def parse(cls, data: bytes) -> Envelope:
        """The envelope in ``data``; `DecryptionError` if it is not one."""
        if len(data) < _HEADER.size:
            raise DecryptionError("sealed payload is too short to be an envelope")
        version, provider, length = _HEADER.unpack_from(data)
        if version != VERSION:
            raise DecryptionError(
                f"sealed payload has envelope version {version}; this chathist reads"
                f" {VERSION}: upgrade chathist"
            )
        if provider not in PROVIDERS:
            raise DecryptionError(f"sealed payload names unknown key provider {provider}")
        start = _HEADER.size + length
        if length == 0 or len(data) < start + NONCE_BYTES + TAG_BYTES:
            raise DecryptionError("sealed payload is truncated")
        return cls(
            provider,
            bytes(data[_HEADER.size : start]),
            bytes(data[start : start + NONCE_BYTES]),
            bytes(data[start + NONCE_BYTES :]),
            bytes(data[:start]),
        )


def seal(
    data_key: bytes,
    provider: int,
    wrapped: bytes,
    plaintext: bytes,
    *,
    table: str,
    session: str,
    sort_key: str,
    nonce: bytes | None = None,
) -> bytes:
    """The envelope of ``plaintext`` sealed under ``data_key`` (whose wrapped form is
    ``wrapped``) for the item at (``table``, ``session``, ``sort_key``)."""
    if not 0 < len(wrapped) < 2**16:
        raise ValueError(f"a wrapped data key of {len(wrapped)} bytes cannot be stored")
    header = _HEADER.pack(VERSION, provider, len(wrapped)) + wrapped
    nonce = os.urandom(NONCE_BYTES) if nonce is None else nonce
    aad = associated_data(header, table, session, sort_key)
    sealed: bytes = _aesgcm(data_key).encrypt(nonce, plaintext, aad)
    return header + nonce + sealed


def open_envelope(
    data_key: bytes, envelope: Envelope, *, table: str, session: str, sort_key: str
) -> bytes:
    """The plaintext of ``envelope`` at (``table``, ``session``, ``sort_key``);
    `DecryptionError` if it does not authenticate there under ``data_key``."""
    aad = associated_data(envelope.header, table, session, sort_key)
    try:
        result: bytes = _aesgcm(data_key).decrypt(envelope.nonce, envelope.ciphertext, aad)
    except _invalid_tag() as exc:
        raise DecryptionError(
            "encrypted payload does not authenticate: it was altered, copied from another"
            " table, session or sort key, or sealed under another key; it is not returned"
        ) from exc
    return result


def _wrap_aad(context: Mapping[str, str]) -> bytes:
    return b"chathist-local-wrap\x00" + _length_prefixed(
        *(part for item in sorted(context.items()) for part in item)
    )


def wrap_local(local_key: bytes, data_key: bytes, context: Mapping[str, str]) -> bytes:
    """``data_key`` wrapped under a raw ``local_key``, bound to ``context``."""
    nonce = os.urandom(NONCE_BYTES)
    wrapped: bytes = _aesgcm(local_key).encrypt(nonce, data_key, _wrap_aad(context))
    return nonce + wrapped


def unwrap_local(local_key: bytes, wrapped: bytes, context: Mapping[str, str]) -> bytes:
    """The data key in ``wrapped``; `DecryptionError` under another local key or context."""
    try:
        key: bytes = _aesgcm(local_key).decrypt(
            wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], _wrap_aad(context)
        )
    except (_invalid_tag(), ValueError) as exc:
        raise DecryptionError(
            "the data key of an encrypted item does not unwrap under this local_key (another"
            " key, or the item was moved or altered); it is not returned"
        ) from exc
    return key


def pack_attributes(attributes: Mapping[str, Mapping[str, Any]]) -> bytes:
    """Payload attributes in wire form (``{"History": {"S": "..."}}``, ``{"blob": {"B": b""}}``)
    as one byte string: per attribute its name, type and value, length-prefixed."""
    out = bytearray()
    for name, value in attributes.items():
        ((kind, data),) = value.items()
        raw = data.encode("utf-8") if kind == "S" else bytes(data)
        encoded = name.encode("utf-8")
        out += struct.pack(">H", len(encoded)) + encoded + _TYPES[kind]
        out += struct.pack(">I", len(raw)) + raw
    return bytes(out)


def unpack_attributes(data: bytes) -> dict[str, dict[str, Any]]:
    """The attributes `pack_attributes` packed; `DecryptionError` if ``data`` is not that."""
    attributes: dict[str, dict[str, Any]] = {}
    at = 0
    try:
        while at < len(data):
            (length,) = struct.unpack_from(">H", data, at)
            name = data[at + 2 : at + 2 + length].decode("utf-8")
            at += 2 + length
            kind = data[at : at + 1].decode("ascii")
            (size,) = struct.unpack_from(">I", data, at + 1)
            raw = data[at + 5 : at + 5 + size]
            if len(raw) != size or kind not in _TYPES or name in attributes:
                raise ValueError("truncated, unknown type or repeated attribute")
            at += 5 + size
            attributes[name] = {kind: raw.decode("utf-8") if kind == "S" else raw}
    except (struct.error, ValueError) as exc:
        raise DecryptionError(f"decrypted payload is not a set of attributes: {exc}") from exc
    return attributes
