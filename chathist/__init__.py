"""chathist: LangChain chat history on Amazon DynamoDB that never hits a wall.

One item per event (a message added, a clear, a part of a large message) under the session's
partition key; an append is one conditional write whatever the length of the conversation.

``import chathist`` loads only the error classes and the capacity meter; the history class and
the table functions are imported on first use (PEP 562), so a program pays for LangChain,
botocore and PynamoDB when it uses them, not when it imports the package.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from chathist.dynamo.capacity import Capacity, CapacityMeter
from chathist.errors import (
    ChatHistoryError,
    ClearIncompleteError,
    ConcurrencyError,
    ConfigurationError,
    CorruptHistoryError,
    DecryptionError,
    EncryptionError,
    InvalidSessionIdError,
    ItemTooLargeError,
    KeyAccessError,
    MessageTooLargeError,
    OutcomeUnknownError,
    StorageError,
    TableError,
    TableNotFoundError,
    TableSchemaError,
    UnsupportedValueError,
)

if TYPE_CHECKING:
    from chathist.dynamo.aio import aclose_clients
    from chathist.dynamo.tables import acreate_table, create_table
    from chathist.history import DynamoDBChatMessageHistory

__version__ = "0.1.0"
"""The release (pyproject.toml's ``version``; tests/test_packaging.py checks they agree): a
literal, because reading it from the installed metadata costs ~20 ms at every import."""

_LAZY = {
    "DynamoDBChatMessageHistory": "chathist.history",
    "aclose_clients": "chathist.dynamo.aio",
    "acreate_table": "chathist.dynamo.tables",
    "create_table": "chathist.dynamo.tables",
}


if not TYPE_CHECKING:  # type checkers see the imports above, and no catch-all attribute

    def __getattr__(name: str) -> Any:
        """The public names that need LangChain, botocore or PynamoDB, imported on first use."""
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module 'chathist' has no attribute {name!r}")
        value = getattr(import_module(module), name)
        globals()[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted([*globals(), *_LAZY])


__all__ = [
    "Capacity",
    "CapacityMeter",
    "ChatHistoryError",
    "ClearIncompleteError",
    "ConcurrencyError",
    "ConfigurationError",
    "CorruptHistoryError",
    "DecryptionError",
    "DynamoDBChatMessageHistory",
    "EncryptionError",
    "InvalidSessionIdError",
    "ItemTooLargeError",
    "KeyAccessError",
    "MessageTooLargeError",
    "OutcomeUnknownError",
    "StorageError",
    "TableError",
    "TableNotFoundError",
    "TableSchemaError",
    "UnsupportedValueError",
    "__version__",
    "aclose_clients",
    "acreate_table",
    "create_table",
]
