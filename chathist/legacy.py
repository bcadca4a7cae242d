"""LangChain's list layout: one item per session holding a list of ``messages_to_dict`` maps.

This module converts between that list and LangChain messages (pure functions, used by the
history class and the migration commands) and does the list layout's I/O (`ListStore`).

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

Writes (`ListStore`). Every attribute name goes through ``ExpressionAttributeNames`` (``ttl``,
``Data`` and other reserved words work). An append is one ``UpdateItem``:
``SET #h = list_append(if_not_exists(#h, :empty), :new)``, which refreshes the TTL attribute and
bumps a counter attribute (`VERSION_ATTRIBUTE`, which LangChain's class ignores). DynamoDB
applies each update atomically, so concurrent appends all land. With ``history_size`` the same
update is used, on condition that the list stays within the limit; when it would not, the writer
reads the item, keeps the latest ``history_size`` entries and writes them back on condition that
the counter is unchanged (on an item LangChain wrote, which has no counter: that the list still
has the length read), retrying a bounded number of times (`ConcurrencyError`). A write that would
take the item past 400 KB is refused by DynamoDB before anything changes, and surfaces as
`ItemTooLargeError` naming the migration command. Each write also stores its random id
(`WRITER_ATTRIBUTE`) and is conditional on the stored id not being its own, so when botocore
resends a write whose answer was lost after DynamoDB applied it, the resend is recognised and
nothing is appended twice (unless another writer wrote in between the two sends).

Lazy migration (the event-layout history's ``legacy_*`` options). The session's legacy item is
read (consistently) together with its counter, or its list length when LangChain wrote it last.
The first write (``add_messages`` or ``clear``) is committed as ONE ``TransactWriteItems``:

- the events of the legacy messages followed by the new entries (for a clear: the tombstone
  only), each a conditional put at the session's next free sequence numbers
  (``attribute_not_exists``), as every event-layout append is; and
- the legacy item's retirement: a ``Delete`` (``delete_legacy=True``) or an ``Update`` that sets
  `MIGRATED_ATTRIBUTE`, on condition that the item is still what was read (same counter, or same
  list length) and not already retired.

So either both happen or neither. Two writers racing: both read the legacy item; the first
transaction commits; the second fails (its sequence numbers are taken, or the legacy item is
gone or marked), re-reads, finds no legacy item, and appends only its own entries after the
first writer's. The legacy messages are moved exactly once, and nothing is lost. A writer that
changed the legacy item in between (LangChain's class, during a rolling switch) makes the
condition fail too, and the migration is redone from a fresh read.

A write larger than one transaction (100 items, 4 MB) is staged by `chathist.writes.plan_write`:
the staged events go first (invisible until committed), and the final transaction holds the
commit event plus the legacy retirement. The plan leaves room in that transaction for the extra
action (one item, 400 KB). A loser's staged events are never committed and stay invisible.

Reading: the legacy messages come first, then the events; a clear among the events hides the
legacy messages (a migration never moves messages that a clear hides). A legacy item that is
absent, has no list, or carries the migration mark is ignored.

Limits. Give every writer of a session the legacy location until its data is migrated: the
moved messages go at the end of the event sequence, so events written before the migration by a
history without the legacy options would end up before them. LangChain's class writing the
legacy item after it was migrated (a fleet still switching) writes a new legacy item that a
later write migrates again, after the events; and with ``delete_legacy=False`` such writes to a
marked item are ignored.
"""

from __future__ import annotations

import enum
import math
import random
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, DecimalException
from typing import Any, Final, cast

from boto3.dynamodb.types import DYNAMODB_CONTEXT, Binary, TypeDeserializer, TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError
from langchain_core.messages import BaseMessage, messages_from_dict, messages_to_dict

from chathist.capacity import CapacityMeter
from chathist.codec import check_json_value, exact_number
from chathist.errors import (
    ConcurrencyError,
    ConfigurationError,
    CorruptHistoryError,
    ItemTooLargeError,
    StorageError,
    TableNotFoundError,
    TableSchemaError,
    UnsupportedValueError,
)
from chathist.events import Event
from chathist.models import Binding, botocore_failure, dynamodb_client, event_model
from chathist.store import EventStore
from chathist.tables import check_item_key, describe_key_schema, move_sessions

__all__ = [
    "MIGRATED_ATTRIBUTE",
    "VERSION_ATTRIBUTE",
    "WRITER_ATTRIBUTE",
    "ListItem",
    "ListStore",
    "Outcome",
    "commit_migration",
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
    try:
        return messages_from_dict(converted)
    except (ValueError, TypeError, KeyError) as exc:
        raise CorruptHistoryError(f"history holds an unreadable message: {exc}") from exc


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
    (`chathist.codec.exact_number`), and so reads back as that; it needs no
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
        result.append(
            to_dynamodb_numbers(entry, coerce_float_to_decimal=coerce_float_to_decimal, path=path)
        )
    return result


# -- the list layout's I/O ------------------------------------------------------------------------

VERSION_ATTRIBUTE: Final = "chathistVersion"
"""Counter attribute chathist adds to list items it writes (LangChain's class ignores it): every
write bumps it, and a truncating write (``history_size``) is conditional on it."""
_SIZE_ERROR = "maximum allowed size"


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


WRITER_ATTRIBUTE: Final = "chathistWriter"
"""The id of the last write chathist applied to a list item, to recognise a resent write."""
MIGRATED_ATTRIBUTE: Final = "chathistMigrated"
"""Set (to epoch seconds) on a legacy item whose messages a lazy migration moved into events but
was asked to keep (``delete_legacy=False``); chathist then ignores the item."""


def _number(raw: Mapping[str, Any] | None) -> int | None:
    if raw is None or "N" not in raw:
        return None
    return int(Decimal(raw["N"]))


@dataclass(frozen=True)
class ListItem:
    """What `ListStore.read` found: the raw list (None: no item or no list), the version
    counter chathist keeps (None on items it never wrote) and whether a migration retired it."""

    entries: list[dict[str, Any]] | None
    version: int | None
    migrated: bool

    def condition(
        self, history_name: str, *, unretired: bool = False
    ) -> tuple[str, dict[str, str], dict[str, Any]]:
        """A condition expression (with its names and values) that holds only while the stored
        item is still the one read: same version counter, or (on an item chathist never wrote)
        same list length; with ``unretired``, also not marked as migrated."""
        names = {"#lv": VERSION_ATTRIBUTE}
        values: dict[str, Any] = {}
        if self.version is not None:
            expression = "#lv = :lv"
            values[":lv"] = {"N": str(self.version)}
        elif self.entries is None:
            names["#lh"] = history_name
            expression = "attribute_not_exists(#lv) AND attribute_not_exists(#lh)"
        else:
            names["#lh"] = history_name
            expression = "attribute_not_exists(#lv) AND size(#lh) = :ln"
            values[":ln"] = {"N": str(len(self.entries))}
        if unretired:
            names["#lm"] = MIGRATED_ATTRIBUTE
            expression += " AND attribute_not_exists(#lm)"
        return expression, names, values


class ListStore:
    """The item of one session in LangChain's list layout: read it, append to it, delete it.

    ``key`` is the item's full primary key (plain Python values); ``history_key`` the list
    attribute; ``ttl_key_name`` the expiry attribute refreshed (to now + ``ttl``) by each write.
    Every attribute name goes through ``ExpressionAttributeNames``.
    """

    def __init__(
        self,
        binding: Binding,
        key: Mapping[str, Any],
        *,
        history_key: str = "History",
        ttl: int | None = None,
        ttl_key_name: str = "expireAt",
        history_size: int | None = None,
        coerce_float_to_decimal: bool = False,
        meter: CapacityMeter | None = None,
        max_attempts: int = 64,
        consistent_read: bool = True,
    ) -> None:
        if not key:
            raise ConfigurationError("key must name at least the table's hash key")
        names = [
            *key,
            history_key,
            VERSION_ATTRIBUTE,
            WRITER_ATTRIBUTE,
            *([ttl_key_name] if ttl else []),
        ]
        if len(set(names)) < len(names):
            raise ConfigurationError(
                f"the key attributes, history_messages_key ({history_key!r}) and ttl_key_name"
                f" ({ttl_key_name!r}) must differ"
            )
        self.table_name = binding.table_name
        self.key = dict(key)
        self.history_key = history_key
        self.ttl = ttl
        self.ttl_key_name = ttl_key_name
        self.history_size = history_size
        self.coerce_float_to_decimal = coerce_float_to_decimal
        self.meter = meter if meter is not None else CapacityMeter()
        self.max_attempts = max_attempts
        self.consistent_read = consistent_read
        self._binding = binding
        self._serializer = TypeSerializer()
        self._deserializer = TypeDeserializer()
        try:
            self._raw_key = {name: self._serializer.serialize(v) for name, v in key.items()}
        except TypeError as exc:
            raise ConfigurationError(f"key {dict(key)!r} is not a DynamoDB key: {exc}") from exc
        self._key_checked = False

    @property
    def client(self) -> Any:
        """The botocore client (shared with the table's event model; built on first use)."""
        return dynamodb_client(event_model(self._binding))

    # -- requests -------------------------------------------------------------------------------

    def _check_key(self) -> None:
        """Check the key against the table's key schema (looked up once per process) before
        the first request, so a mismatch is a `TableSchemaError` that says what to do instead
        of DynamoDB's "number of conditions on the keys is invalid" or "type mismatch"."""
        if self._key_checked:
            return
        try:
            schema = describe_key_schema(self._binding)
        except TableNotFoundError as exc:
            raise TableNotFoundError(f"table {self.table_name!r} does not exist") from exc
        types = {name: next(iter(value)) for name, value in self._raw_key.items()}
        check_item_key(schema, self.table_name, types)
        self._key_checked = True

    def _call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        kwargs.setdefault("TableName", self.table_name)
        self._check_key()
        try:
            return self.meter.call(self.client, operation, **kwargs)
        except ClientError as exc:
            code = _error_code(exc)
            text = str(exc)
            if code == "ResourceNotFoundException":
                raise TableNotFoundError(f"table {self.table_name!r} does not exist") from exc
            if code == "ValidationException" and _SIZE_ERROR in text:
                raise ItemTooLargeError(
                    f"list-layout session {self.key} of table {self.table_name!r} would grow past"
                    " DynamoDB's 400 KB item limit; nothing was written and the stored history is"
                    " unchanged. Move the table to chathist's event layout, which has no size"
                    f" limit: {move_sessions(self.table_name, 'NEW_TABLE')}"
                ) from exc
            if code == "ValidationException" and (
                "match the schema" in text or "Missing the key" in text
            ):
                raise TableSchemaError(
                    f"key {self.key} does not match the key schema of table"
                    f" {self.table_name!r}: {exc}"
                ) from exc
            if code == "ConditionalCheckFailedException":
                raise
            raise StorageError(f"{operation} on {self.table_name!r} failed: {exc}") from exc
        except BotoCoreError as exc:
            failure = botocore_failure(exc, self._binding.endpoint_url)
            raise StorageError(f"{operation} on {self.table_name!r} failed: {failure}") from exc

    # -- reads ----------------------------------------------------------------------------------

    def read(self, *, consistent: bool = True) -> ListItem:
        """The stored item's list, version counter and migration mark (all None if absent)."""
        response = self._call(
            "GetItem",
            Key=self._raw_key,
            ConsistentRead=consistent,
            ProjectionExpression="#h, #v, #m",
            ExpressionAttributeNames={
                "#h": self.history_key,
                "#v": VERSION_ATTRIBUTE,
                "#m": MIGRATED_ATTRIBUTE,
            },
        )
        item = response.get("Item") or {}
        raw_list = item.get(self.history_key)
        entries = None if raw_list is None else self._deserializer.deserialize(raw_list)
        if entries is not None and not isinstance(entries, list):
            raise CorruptHistoryError(
                f"attribute {self.history_key!r} is not a list", key=dict(self.key)
            )
        return ListItem(entries, _number(item.get(VERSION_ATTRIBUTE)), MIGRATED_ATTRIBUTE in item)

    def messages(self) -> list[BaseMessage]:
        """The stored messages (the latest ``history_size`` of them), oldest first."""
        messages = messages_from_legacy(self.read(consistent=self.consistent_read).entries or [])
        if self.history_size:
            messages = messages[-self.history_size :]
        return messages

    # -- writes ---------------------------------------------------------------------------------

    def _set_ttl(self, request: dict[str, Any], now: float) -> str:
        if not self.ttl:
            return ""
        request["ExpressionAttributeNames"]["#t"] = self.ttl_key_name
        request["ExpressionAttributeValues"][":t"] = {"N": str(int(now) + self.ttl)}
        return ", #t = :t"

    def append(self, messages: Sequence[BaseMessage]) -> None:
        """Append ``messages`` atomically (all or none; no concurrent append is lost).

        Without ``history_size`` this is one ``list_append`` update. With it, the same update is
        tried when the list stays within ``history_size``; otherwise the list is read, cut to the
        latest ``history_size`` and written back on condition that nobody wrote in between
        (retried up to ``max_attempts`` times, then `ConcurrencyError`).
        """
        entries = messages_to_legacy(messages, coerce_float_to_decimal=self.coerce_float_to_decimal)
        if not entries:
            return
        new: dict[str, Any] = dict(self._serializer.serialize(entries))
        write_id = uuid.uuid4().hex
        limit = self.history_size
        if limit is None or len(entries) <= limit:
            room = None if limit is None else limit - len(entries)
            if self._list_append(new, room, write_id):
                return
        for attempt in range(self.max_attempts):
            if self._replace(entries, limit, write_id):
                return
            time.sleep(random.uniform(0, min(0.25, 0.002 * 2**attempt)))
        raise ConcurrencyError(
            f"list-layout session {self.key}: other writers changed it {self.max_attempts} times"
            " in a row while a truncating write was retried"
        )

    def _list_append(self, new: dict[str, Any], room: int | None, write_id: str) -> bool:
        """``list_append`` ``new``; with ``room``, only if the list holds at most that many."""
        request: dict[str, Any] = {
            "Key": self._raw_key,
            "ExpressionAttributeNames": {"#h": self.history_key, "#v": VERSION_ATTRIBUTE},
            "ExpressionAttributeValues": {":new": new, ":empty": {"L": []}, ":one": {"N": "1"}},
        }
        ttl = self._set_ttl(request, time.time())
        request["UpdateExpression"] = (
            f"SET #h = list_append(if_not_exists(#h, :empty), :new){ttl}, #w = :w ADD #v :one"
        )
        condition = None
        if room is not None:
            condition = "(attribute_not_exists(#h) OR size(#h) <= :room)"
            request["ExpressionAttributeValues"][":room"] = {"N": str(room)}
        return self._update_once(request, condition, write_id)

    def _update_once(self, request: dict[str, Any], condition: str | None, write_id: str) -> bool:
        """Send the update (which sets the writer attribute to ``write_id``) on ``condition``;
        False if the condition failed. Idempotent: if botocore resends an update that DynamoDB
        had applied (its answer lost), the resend fails its condition, and the stored writer id
        shows the write is in."""
        request["ExpressionAttributeNames"]["#w"] = WRITER_ATTRIBUTE
        request["ExpressionAttributeValues"][":w"] = {"S": write_id}
        not_applied = "(attribute_not_exists(#w) OR #w <> :w)"
        request["ConditionExpression"] = (
            f"{condition} AND {not_applied}" if condition else not_applied
        )
        request["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
        try:
            self._call("UpdateItem", **request)
        except ClientError as exc:  # only a failed condition gets here
            old = cast(dict[str, Any], exc.response).get("Item") or {}
            return bool(old.get(WRITER_ATTRIBUTE, {}).get("S") == write_id)
        return True

    def _replace(self, entries: list[dict[str, Any]], limit: int | None, write_id: str) -> bool:
        """Read, append, keep the latest ``limit``, write back if unchanged; False if changed."""
        current = self.read()
        stored, version = current.entries, current.version
        combined = [*(stored or []), *entries]
        if limit is not None:
            combined = combined[-limit:]
        request: dict[str, Any] = {
            "Key": self._raw_key,
            "ExpressionAttributeNames": {"#h": self.history_key, "#v": VERSION_ATTRIBUTE},
            "ExpressionAttributeValues": {
                ":h": self._serializer.serialize(combined),
                ":next": {"N": str((version or 0) + 1)},
            },
        }
        ttl = self._set_ttl(request, time.time())
        request["UpdateExpression"] = f"SET #h = :h, #v = :next{ttl}, #w = :w"
        condition, names, values = current.condition(self.history_key)
        request["ExpressionAttributeNames"].update(names)
        request["ExpressionAttributeValues"].update(values)
        return self._update_once(request, f"({condition})", write_id)

    def delete(self) -> None:
        """Delete the session's item (as LangChain's ``clear`` does)."""
        self._call("DeleteItem", Key=self._raw_key)

    # -- lazy migration -------------------------------------------------------------------------

    def retire_action(self, item: ListItem, *, delete: bool, now: int) -> dict[str, Any]:
        """A TransactWriteItems action that deletes the item (``delete``) or marks it migrated,
        on condition that it is still ``item`` and not yet retired."""
        condition, names, values = item.condition(self.history_key, unretired=True)
        body: dict[str, Any] = {
            "TableName": self.table_name,
            "Key": self._raw_key,
            "ConditionExpression": condition,
            "ExpressionAttributeNames": names,
        }
        if not delete:
            body["UpdateExpression"] = "SET #lm = :lmark"
            values[":lmark"] = {"N": str(now)}
        if values:
            body["ExpressionAttributeValues"] = values
        return {"Delete": body} if delete else {"Update": body}


class Outcome(enum.Enum):
    """How `commit_migration` ended."""

    DONE = "done"
    SEQUENCE_TAKEN = "taken"
    """Another writer holds one of the sequence numbers: find the end again and retry."""
    LEGACY_CHANGED = "changed"
    """The legacy item changed or was retired since it was read: read it again."""


def commit_migration(
    store: EventStore, session: str, events: Sequence[Event], retire: dict[str, Any]
) -> Outcome:
    """Write ``events`` (each where its key is free) and the legacy item's ``retire`` action
    in one transaction: the migration happens wholly or not at all."""
    condition = store.model.seq.does_not_exist()
    puts = [
        {"Put": store.to_item(session, e).get_save_kwargs_from_instance(condition=condition)}
        for e in events
    ]
    try:
        store.meter.call(
            store.client,
            "TransactWriteItems",
            TransactItems=[*puts, retire],
            ClientRequestToken=uuid.uuid4().hex,
        )
    except ClientError as exc:
        response = cast(dict[str, Any], exc.response)
        code = _error_code(exc)
        if code == "ResourceNotFoundException":
            raise TableNotFoundError(f"table of session {session!r} does not exist: {exc}") from exc
        if code != "TransactionCanceledException":
            raise StorageError(f"lazy migration of session {session!r} failed: {exc}") from exc
        reasons = [r.get("Code") for r in response.get("CancellationReasons") or []]
        if not set(reasons) <= {"None", None, "ConditionalCheckFailed", "TransactionConflict"}:
            raise StorageError(f"lazy migration of session {session!r} failed: {exc}") from exc
        if reasons and reasons[-1] == "ConditionalCheckFailed":
            return Outcome.LEGACY_CHANGED
        return Outcome.SEQUENCE_TAKEN
    except BotoCoreError as exc:
        failure = botocore_failure(exc, store.model.Meta.host)
        raise StorageError(f"lazy migration of session {session!r} failed: {failure}") from exc
    return Outcome.DONE
