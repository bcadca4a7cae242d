"""The options of a history, checked once: every argument error is raised here, before any I/O.

`HistoryOptions.build` takes the constructor's arguments (LangChain's, then chathist's own) and
returns one frozen object; the history class keeps it and does nothing else with its arguments.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from chathist.core.envelope import check_local_key, require_cryptography
from chathist.core.retry import RetryRule
from chathist.core.sizes import text_size
from chathist.dynamo.binding import Binding
from chathist.dynamo.capacity import CapacityMeter
from chathist.dynamo.items import INTERNAL_NAMES
from chathist.dynamo.tables import move_sessions
from chathist.errors import ConfigurationError, InvalidSessionIdError

if TYPE_CHECKING:
    import boto3

__all__ = [
    "MAX_KEY_BYTES",
    "MAX_TTL",
    "HistoryOptions",
    "Layout",
    "list_layout_encryption_error",
    "validate_session_id",
]

Layout = Literal["auto", "events", "list"]

MAX_KEY_BYTES = 2048
"""DynamoDB's limit on a partition key value, in UTF-8 bytes."""
MAX_TTL = 100 * 365 * 24 * 3600
"""The longest ``ttl`` accepted (100 years): an expiry must stay a plausible epoch time."""


def validate_session_id(session_id: object) -> str:
    """Return ``session_id`` if it can be a partition key value, else raise."""
    if not isinstance(session_id, str):
        raise InvalidSessionIdError(f"session_id must be a str, got {type(session_id).__name__}")
    if not session_id:
        raise InvalidSessionIdError("session_id must not be empty")
    try:
        size = text_size(session_id)
    except UnicodeEncodeError as exc:
        raise InvalidSessionIdError("session_id is not valid Unicode (lone surrogate)") from exc
    if size > MAX_KEY_BYTES:
        raise InvalidSessionIdError(
            f"session_id is {size} bytes in UTF-8; DynamoDB keys hold at most {MAX_KEY_BYTES}"
        )
    return session_id


def list_layout_encryption_error(table: str) -> ConfigurationError:
    """Client-side encryption asked of LangChain's list layout: refused, saying where it works."""
    move = move_sessions(table, f"{table}-events")
    return ConfigurationError(
        f"kms_key_id/local_key (client-side encryption) works in the event layout only; table"
        f" {table!r} is used in LangChain's list layout (one item per session, which LangChain's"
        " own class cannot read encrypted). Use layout='events' on a table with a sort key. To"
        f" move this table's sessions into one, encrypting them: {move} --kms-key-id KEY"
    )


def _check_kms_key_id(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(
            f"kms_key_id must be a KMS key id, ARN or alias (alias/...), got {value!r}"
        )
    return value


def _name(name: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{name} must be a non-empty str, got {value!r}")
    return value


def _count(name: str, value: object, *, most: int | None = None) -> int | None:
    """LangChain treats 0 and None alike ("no limit"); negative numbers are refused."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"{name} must be an int or None, got {value!r}")
    if value < 0:
        raise ConfigurationError(f"{name} must not be negative, got {value}")
    if most is not None and value > most:
        raise ConfigurationError(f"{name} must be at most {most}, got {value}")
    return value or None


def _key_dict(name: str, value: object) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or not value or not all(isinstance(k, str) for k in value):
        raise ConfigurationError(
            f"{name} must be a dict of attribute names to values, got {value!r}"
        )
    return dict(value)


@dataclass(frozen=True)
class HistoryOptions:
    """Everything a history was configured with, validated."""

    binding: Binding
    session_id: str
    layout: Layout
    primary_key_name: str
    sort_key_name: str
    history_messages_key: str
    ttl_key_name: str
    key: dict[str, Any] | None
    ttl: int | None
    history_size: int | None
    coerce_float_to_decimal: bool
    consistent_read: bool
    compress_threshold: int | None
    append_rule: RetryRule
    meter: CapacityMeter
    legacy_binding: Binding | None
    legacy_key: dict[str, Any] | None
    legacy_messages_key: str
    delete_legacy: bool
    kms_key_id: str | None = None
    """Client-side encryption: the KMS key new items' data keys come from."""
    local_key: bytes | None = field(default=None, repr=False)
    """Client-side encryption under a raw 256-bit key (development and tests)."""

    @property
    def encrypting(self) -> bool:
        """Whether new items are sealed (client-side encryption)."""
        return self.kms_key_id is not None or self.local_key is not None

    @property
    def migrating(self) -> bool:
        """Whether a lazy migration from a list-layout item is configured."""
        return self.legacy_binding is not None

    @classmethod
    def build(
        cls,
        *,
        table_name: str,
        session_id: str,
        endpoint_url: str | None,
        primary_key_name: str,
        key: dict[str, Any] | None,
        boto3_session: boto3.Session | None,
        kms_key_id: str | None,
        ttl: int | None,
        ttl_key_name: str,
        history_size: int | None,
        history_messages_key: str | None,
        coerce_float_to_decimal: bool,
        sort_key_name: str,
        region_name: str | None,
        consistent_read: bool,
        compress_threshold: int | None,
        max_append_attempts: int,
        append_timeout: float,
        capacity_meter: CapacityMeter | None,
        layout: Layout,
        legacy_table_name: str | None,
        legacy_key: dict[str, Any] | None,
        legacy_messages_key: str | None,
        delete_legacy: bool,
        local_key: bytes | None = None,
    ) -> HistoryOptions:
        """Check the constructor's arguments; raise `ConfigurationError` (or
        `InvalidSessionIdError`) for the first that cannot apply."""
        binding = Binding.resolve(table_name, endpoint_url, region_name, boto3_session)
        session_id = validate_session_id(session_id)
        if layout not in ("auto", "events", "list"):
            raise ConfigurationError(f"layout must be 'auto', 'events' or 'list', got {layout!r}")
        key = _key_dict("key", key)
        legacy_key = _key_dict("legacy_key", legacy_key)
        if key is not None and layout == "events":
            raise ConfigurationError(
                "key addresses one item per session (LangChain's list layout); the event layout"
                " stores one item per event under session_id: drop key, or use layout='list'"
            )
        migrating = legacy_table_name is not None or legacy_key is not None
        if migrating and (layout == "list" or key is not None):
            raise ConfigurationError(
                "legacy_table_name/legacy_key migrate a list-layout session into the event"
                " layout; they do not apply to layout='list' or with key"
            )
        kms_key_id = _check_kms_key_id(kms_key_id)
        if local_key is not None:
            local_key = check_local_key(local_key)
            if kms_key_id is not None:
                raise ConfigurationError("give kms_key_id or local_key, not both")
        if (kms_key_id is not None or local_key is not None) and (
            layout == "list" or key is not None
        ):
            raise list_layout_encryption_error(table_name)
        if kms_key_id is not None or local_key is not None:
            require_cryptography()
        primary_key_name = _name("primary_key_name", primary_key_name)
        sort_key_name = _name("sort_key_name", sort_key_name)
        history_messages_key = _name("history_messages_key", history_messages_key)
        ttl_key_name = _name("ttl_key_name", ttl_key_name)
        names = {primary_key_name, sort_key_name, history_messages_key, ttl_key_name}
        if key is None and len(names) < 4:
            raise ConfigurationError(
                "primary_key_name, sort_key_name, history_messages_key and ttl_key_name must differ"
            )
        clashes = sorted(names & INTERNAL_NAMES)
        if key is None and layout != "list" and clashes:
            raise ConfigurationError(
                f"attribute name(s) {clashes} are used by chathist's event items; choose others"
            )
        if isinstance(max_append_attempts, bool) or not isinstance(max_append_attempts, int):
            raise ConfigurationError(
                f"max_append_attempts must be an int, got {max_append_attempts!r}"
            )
        if not isinstance(append_timeout, (int, float)) or isinstance(append_timeout, bool):
            raise ConfigurationError(f"append_timeout must be a number, got {append_timeout!r}")
        if max_append_attempts < 1 or append_timeout <= 0:
            raise ConfigurationError("max_append_attempts and append_timeout must be positive")
        if compress_threshold is not None and (
            isinstance(compress_threshold, bool) or not isinstance(compress_threshold, int)
        ):
            raise ConfigurationError(
                f"compress_threshold must be an int or None, got {compress_threshold!r}"
            )
        if capacity_meter is not None and not isinstance(capacity_meter, CapacityMeter):
            raise ConfigurationError(
                f"capacity_meter must be a chathist.CapacityMeter, got {capacity_meter!r}"
            )
        legacy_binding = None
        if migrating:
            legacy_binding = binding.with_table(
                _name("legacy_table_name", legacy_table_name or table_name)
            )
            legacy_key = legacy_key or {primary_key_name: session_id}
            if legacy_binding == binding and legacy_key.get(primary_key_name) == session_id:
                raise ConfigurationError(
                    "legacy_key must not be in the session's own partition of the event table"
                )
        return cls(
            binding=binding,
            session_id=session_id,
            layout=layout,
            primary_key_name=primary_key_name,
            sort_key_name=sort_key_name,
            history_messages_key=history_messages_key,
            ttl_key_name=ttl_key_name,
            key=key,
            ttl=_count("ttl", ttl, most=MAX_TTL),
            history_size=_count("history_size", history_size),
            coerce_float_to_decimal=bool(coerce_float_to_decimal),
            consistent_read=bool(consistent_read),
            compress_threshold=compress_threshold,
            append_rule=RetryRule(attempts=max_append_attempts, timeout=float(append_timeout)),
            meter=capacity_meter if capacity_meter is not None else CapacityMeter(),
            legacy_binding=legacy_binding,
            legacy_key=legacy_key,
            legacy_messages_key=_name(
                "legacy_messages_key", legacy_messages_key or history_messages_key
            ),
            delete_legacy=bool(delete_legacy),
            kms_key_id=kms_key_id,
            local_key=local_key,
        )
