"""Paging: one Query or Scan, a page at a time, for as long as the reader wants more.

A query returns at most 1 MB (or ``Limit`` items) per page and a ``LastEvaluatedKey`` while there
is more; a `Cursor` follows it. Each page is one step, so a reader that has what it needs (a
window, a fold that met a clear) stops without fetching the rest. An answer without an ``Items``
list (a body cut on the wire that still parsed) is an error, never an empty page.
"""

from __future__ import annotations

from typing import Any

from chathist.core.steps import Steps, call
from chathist.errors import StorageError

__all__ = ["Cursor"]


class Cursor:
    """The pages of one ``Query`` or ``Scan`` request, in order."""

    def __init__(self, operation: str, params: dict[str, Any], *, empty: bool = False) -> None:
        self.operation = operation
        self.params = dict(params)
        self.done = empty
        """True when no page is left (``empty``: the request is known to match nothing)."""
        self.scanned = 0
        """Items DynamoDB evaluated so far (``ScannedCount``, before a filter)."""

    def next_page(self) -> Steps[list[dict[str, Any]] | None]:
        """The next page's items, or None when there are no more pages."""
        if self.done:
            return None
        page = yield from call(self.operation, **self.params)
        items = page.get("Items")
        if not isinstance(items, list):
            raise StorageError(
                f"{self.operation} on {self.params.get('TableName')!r}: the answer holds no"
                " Items list (a truncated or malformed response); nothing was read from it"
            )
        self.scanned += int(page.get("ScannedCount", len(items)))
        last = page.get("LastEvaluatedKey")
        if last:
            self.params["ExclusiveStartKey"] = last
        else:
            self.done = True
        return items

    def next_page_of(self, limit: int | None) -> Steps[list[dict[str, Any]] | None]:
        """`next_page` of at most ``limit`` items (None: as many as a page holds), for a reader
        that knows how many more it can use."""
        if limit is None:
            self.params.pop("Limit", None)
        else:
            self.params["Limit"] = limit
        return (yield from self.next_page())
