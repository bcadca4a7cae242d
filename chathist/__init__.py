"""chathist: LangChain chat history on Amazon DynamoDB that never hits a wall.

One item per event (a message added, a clear, a part of a large message) under the session's
partition key; an append is one conditional write whatever the length of the conversation.
"""

from importlib.metadata import PackageNotFoundError, version

from chathist.dynamo.aio import aclose_clients
from chathist.dynamo.capacity import Capacity, CapacityMeter
from chathist.dynamo.tables import acreate_table, create_table
from chathist.errors import (
    ChatHistoryError,
    ConcurrencyError,
    ConfigurationError,
    CorruptHistoryError,
    DecryptionError,
    EncryptionError,
    InvalidSessionIdError,
    ItemTooLargeError,
    KeyAccessError,
    MessageTooLargeError,
    StorageError,
    TableError,
    TableNotFoundError,
    TableSchemaError,
    UnsupportedValueError,
)
from chathist.history import DynamoDBChatMessageHistory

try:
    __version__ = version("chathist")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "Capacity",
    "CapacityMeter",
    "ChatHistoryError",
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
