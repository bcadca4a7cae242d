"""The list-layout item of one session: its requests, as steps.

LangChain's list layout keeps a session in one item whose history attribute is a list of
``messages_to_dict`` maps (`chathist.core.listformat`). Every attribute name goes through
``ExpressionAttributeNames`` (``ttl``, ``Data`` and other reserved words work). Each write also
bumps a counter (`VERSION_ATTRIBUTE`, which LangChain's class ignores) and stores its random id
(`WRITER_ATTRIBUTE`), on condition that the stored id is not its own: a write botocore resent
after DynamoDB had applied it is recognised and not applied twice.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from chathist.core.steps import Steps, call
from chathist.dynamo.tables import move_sessions
from chathist.dynamo.translate import ConditionFailed
from chathist.errors import ConfigurationError, CorruptHistoryError, ItemTooLargeError

__all__ = [
    "MIGRATED_ATTRIBUTE",
    "VERSION_ATTRIBUTE",
    "WRITER_ATTRIBUTE",
    "ListItem",
    "ListStore",
]

VERSION_ATTRIBUTE: Final = "chathistVersion"
"""Counter attribute chathist adds to list items it writes (LangChain's class ignores it): every
write bumps it, and a replacing write is conditional on it."""
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
    counter chathist keeps (None on items it never wrote), whether a migration retired it and
    whether there is an item at all."""

    entries: list[dict[str, Any]] | None
    version: int | None
    migrated: bool
    exists: bool = True
    """Whether there is an item at the key at all (with a list or without one)."""
    expires_at: int | None = None
    """The item's TTL attribute (epoch seconds), if it has one."""

    def expired(self, now: float) -> bool:
        """Whether the item's TTL has passed (DynamoDB deletes it some time later; until then
        it is still returned, and must be treated as gone)."""
        return self.expires_at is not None and self.expires_at <= now

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
    """The list-layout item of one session, at ``key`` (plain values) in ``table_name``."""

    def __init__(
        self,
        table_name: str,
        key: Mapping[str, Any],
        *,
        history_key: str = "History",
        ttl: int | None = None,
        ttl_key_name: str = "expireAt",
        consistent_read: bool = True,
    ) -> None:
        if not isinstance(key, Mapping) or not key:
            raise ConfigurationError("key must be a dict naming at least the table's hash key")
        names = [*key, history_key, VERSION_ATTRIBUTE, WRITER_ATTRIBUTE]
        if ttl:
            names.append(ttl_key_name)
        if len(set(names)) < len(names):
            raise ConfigurationError(
                f"the key attributes, history_messages_key ({history_key!r}) and ttl_key_name"
                f" ({ttl_key_name!r}) must differ"
            )
        self.table_name = table_name
        self.key = dict(key)
        self.history_key = history_key
        self.ttl = ttl
        self.ttl_key_name = ttl_key_name
        self.consistent_read = consistent_read
        self._serializer = TypeSerializer()
        self._deserializer = TypeDeserializer()
        try:
            self.raw_key = {name: self._serializer.serialize(v) for name, v in key.items()}
        except TypeError as exc:
            raise ConfigurationError(f"key {dict(key)!r} is not a DynamoDB key: {exc}") from exc

    def serialize(self, entries: list[dict[str, Any]]) -> dict[str, Any]:
        """The wire form of a history list."""
        return dict(self._serializer.serialize(entries))

    def read(self, *, consistent: bool | None = None) -> Steps[ListItem]:
        """The stored item's list, version counter and migration mark (None if absent)."""
        response = yield from call(
            "GetItem",
            TableName=self.table_name,
            Key=self.raw_key,
            ConsistentRead=self.consistent_read if consistent is None else consistent,
            ProjectionExpression="#h, #v, #m, #k, #x",
            ExpressionAttributeNames={
                "#h": self.history_key,
                "#v": VERSION_ATTRIBUTE,
                "#m": MIGRATED_ATTRIBUTE,
                "#k": next(iter(self.key)),  # so an item holding none of the others is seen
                "#x": self.ttl_key_name,
            },
        )
        return self.parse(response.get("Item"))

    def parse(self, item: Mapping[str, Any] | None) -> ListItem:
        """What a raw item (as GetItem or Scan return it; None: no item) holds."""
        if item is None:
            return ListItem(None, None, False, exists=False)
        raw_list = item.get(self.history_key)
        entries = None if raw_list is None else self._deserializer.deserialize(raw_list)
        if entries is not None and not isinstance(entries, list):
            raise CorruptHistoryError(
                f"attribute {self.history_key!r} is not a list", key=dict(self.key)
            )
        return ListItem(
            entries,
            _number(item.get(VERSION_ATTRIBUTE)),
            MIGRATED_ATTRIBUTE in item,
            expires_at=_number(item.get(self.ttl_key_name)),
        )

    def list_append(self, new: dict[str, Any], room: int | None, write_id: str) -> Steps[bool]:
        """``list_append`` ``new`` (wire form); with ``room``, only if the list holds at most
        that many entries. False if that condition failed."""
        request: dict[str, Any] = {
            "Key": self.raw_key,
            "ExpressionAttributeNames": {"#h": self.history_key, "#v": VERSION_ATTRIBUTE},
            "ExpressionAttributeValues": {":new": new, ":empty": {"L": []}, ":one": {"N": "1"}},
        }
        ttl = self._set_ttl(request)
        request["UpdateExpression"] = (
            f"SET #h = list_append(if_not_exists(#h, :empty), :new){ttl}, #w = :w ADD #v :one"
        )
        # Never append to an expired list (that would bring its messages back): such an item
        # fails this condition, and the caller replaces its list instead.
        condition = "(attribute_not_exists(#x) OR #x > :now)"
        request["ExpressionAttributeNames"]["#x"] = self.ttl_key_name
        request["ExpressionAttributeValues"][":now"] = {"N": str(int(time.time()))}
        if room is not None:
            condition += " AND (attribute_not_exists(#h) OR size(#h) <= :room)"
            request["ExpressionAttributeValues"][":room"] = {"N": str(room)}
        return (yield from self._update_once(request, condition, write_id))

    def replace(
        self, current: ListItem, entries: list[dict[str, Any]], write_id: str
    ) -> Steps[bool]:
        """Store ``entries`` as the whole list, on condition that the item is still
        ``current``; False if it changed."""
        request: dict[str, Any] = {
            "Key": self.raw_key,
            "ExpressionAttributeNames": {"#h": self.history_key, "#v": VERSION_ATTRIBUTE},
            "ExpressionAttributeValues": {
                ":h": self._serializer.serialize(entries),
                ":next": {"N": str((current.version or 0) + 1)},
            },
        }
        ttl = self._set_ttl(request)
        request["UpdateExpression"] = f"SET #h = :h, #v = :next{ttl}, #w = :w"
        condition, names, values = current.condition(self.history_key)
        request["ExpressionAttributeNames"].update(names)
        request["ExpressionAttributeValues"].update(values)
        return (yield from self._update_once(request, f"({condition})", write_id))

    def delete(self) -> Steps[None]:
        """Delete the session's item (as LangChain's ``clear`` does)."""
        yield from call("DeleteItem", TableName=self.table_name, Key=self.raw_key)

    # -- whole items, exactly as read (the bulk rollback and migration) -------------------------

    def to_item(
        self, entries: list[dict[str, Any]], *, expires_at: int | None = None
    ) -> dict[str, Any]:
        """The whole item in LangChain's format, in wire form: the key, the list and, with
        ``expires_at`` (epoch seconds), the TTL attribute; nothing of chathist's."""
        item = {**self.raw_key, self.history_key: self.serialize(entries)}
        if expires_at is not None:
            item[self.ttl_key_name] = {"N": str(expires_at)}
        return item

    def put(self, item: dict[str, Any], current: ListItem) -> Steps[bool]:
        """Write ``item`` (see `to_item`) in place of the stored one, on condition that the
        stored item is still exactly ``current``: a write that landed after the read is never
        lost. False if it changed."""
        return (yield from self._unless_changed("PutItem", current, Item=item))

    def delete_unchanged(self, current: ListItem) -> Steps[bool]:
        """Delete the item on condition that it is still exactly ``current``; False if it
        changed."""
        return (yield from self._unless_changed("DeleteItem", current, Key=self.raw_key))

    def _unless_changed(self, operation: str, current: ListItem, **params: Any) -> Steps[bool]:
        """Send ``operation`` on condition that the stored item is ``current``: none, one
        without a list, or one whose list equals ``current``'s, element for element (stricter
        than `ListItem.condition`, which lets the version counter or the length stand for the
        list, to keep transactions small)."""
        names = {"#k": next(iter(self.key))}
        values: dict[str, Any] = {}
        if not current.exists:
            condition = "attribute_not_exists(#k)"
        elif current.entries is None:
            names["#h"] = self.history_key
            condition = "attribute_exists(#k) AND attribute_not_exists(#h)"
        else:
            names["#h"] = self.history_key
            condition = "attribute_exists(#k) AND #h = :old"
            values[":old"] = self.serialize(current.entries)
        if values:
            params["ExpressionAttributeValues"] = values
        try:
            yield from call(
                operation,
                TableName=self.table_name,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                **params,
            )
        except ConditionFailed:
            return False
        return True

    def retire_action(self, item: ListItem, *, delete: bool, now: int) -> dict[str, Any]:
        """A TransactWriteItems action that deletes the item (``delete``) or marks it migrated,
        on condition that it is still ``item`` and not yet retired."""
        condition, names, values = item.condition(self.history_key, unretired=True)
        body: dict[str, Any] = {
            "TableName": self.table_name,
            "Key": self.raw_key,
            "ConditionExpression": condition,
            "ExpressionAttributeNames": names,
        }
        if not delete:
            body["UpdateExpression"] = "SET #lm = :lmark"
            values[":lmark"] = {"N": str(now)}
        if values:
            body["ExpressionAttributeValues"] = values
        return {"Delete": body} if delete else {"Update": body}

    def _set_ttl(self, request: dict[str, Any]) -> str:
        if not self.ttl:
            return ""
        request["ExpressionAttributeNames"]["#t"] = self.ttl_key_name
        request["ExpressionAttributeValues"][":t"] = {"N": str(int(time.time()) + self.ttl)}
        return ", #t = :t"

    def _update_once(
        self, request: dict[str, Any], condition: str | None, write_id: str
    ) -> Steps[bool]:
        """Send the update (which sets the writer attribute to ``write_id``) on ``condition``;
        False if the condition failed. If botocore resends an update that DynamoDB had applied
        (its answer lost), the resend fails its condition, and the stored writer id shows the
        write is in."""
        request["ExpressionAttributeNames"]["#w"] = WRITER_ATTRIBUTE
        request["ExpressionAttributeValues"][":w"] = {"S": write_id}
        not_applied = "(attribute_not_exists(#w) OR #w <> :w)"
        request["ConditionExpression"] = (
            f"{condition} AND {not_applied}" if condition else not_applied
        )
        try:
            yield from call(
                "UpdateItem",
                TableName=self.table_name,
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
                **request,
            )
        except ConditionFailed as failed:
            old = failed.item or {}
            return bool(old.get(WRITER_ATTRIBUTE, {}).get("S") == write_id)
        except ItemTooLargeError as exc:
            raise ItemTooLargeError(
                f"list-layout session {self.key} of table {self.table_name!r} would grow past"
                " DynamoDB's 400 KB item limit; nothing was written and the stored history is"
                " unchanged. Move the table to chathist's event layout, which has no size"
                f" limit: {move_sessions(self.table_name, 'NEW_TABLE')}"
            ) from exc
        return True
