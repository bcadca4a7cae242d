"""What a bulk run moves, where, and how."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from chathist.dynamo.binding import Binding

if TYPE_CHECKING:
    import boto3

__all__ = ["MigrationConfig"]


@dataclass(frozen=True)
class MigrationConfig:
    """What to migrate, where, and how. ``None`` key names are read from the tables' schemas."""

    source: str
    target: str
    endpoint_url: str | None = None
    region_name: str | None = None
    boto3_session: boto3.Session | None = None
    primary_key_name: str | None = None
    """Hash key of the list-layout table (the session id). Default: that table's hash key."""
    sort_key_name: str | None = None
    """Range key of the event-layout table. Default: that table's range key."""
    history_key: str = "History"
    """The list attribute of a list-layout item, and the payload attribute of an event item."""
    ttl_key_name: str = "expireAt"
    legacy_sort_value: str | None = None
    """Rollback into a composite-key table: the range key value of each session's list item."""
    segments: int = 8
    dry_run: bool = False
    verify: bool = False
    delete_source: bool = False
    max_wcu: float | None = None
    overwrite: bool = False
    """Rollback: replace a target list item holding other messages, if it is still the one read."""
    kms_key_id: str | None = None
    """Migration: seal every event written with data keys from this KMS key (client-side
    encryption, as ``DynamoDBChatMessageHistory(kms_key_id=...)``)."""

    def binding(self, table: str) -> Binding:
        """Where ``table`` is, with this run's endpoint, region and boto3 session."""
        return Binding.resolve(table, self.endpoint_url, self.region_name, self.boto3_session)
