"""The errors chathist raises.

Every error derives from `ChatHistoryError`; an error caused by botocore or PynamoDB keeps that
exception as ``__cause__``::

    ChatHistoryError
    ├── ConfigurationError        an argument that cannot apply (also a ValueError)
    ├── InvalidSessionIdError     empty, not a str, or over the key size limit (also a ValueError)
    ├── UnsupportedValueError     a message that cannot be stored exactly (also a ValueError)
    │   └── MessageTooLargeError  a message over the largest size chathist stores
    ├── TableError                the table is missing or has the wrong key schema
    │   ├── TableNotFoundError
    │   └── TableSchemaError
    ├── ConcurrencyError          other writers kept winning the race for the next sequence number
    ├── CorruptHistoryError       stored items that cannot be folded (gap, duplicate, garbage)
    │   └── DecryptionError       an encrypted item that fails authentication (altered, moved,
    │                             wrong key): never returned (also an EncryptionError)
    ├── ItemTooLargeError         a list-layout session that no longer fits one item
    ├── EncryptionError           client-side encryption cannot proceed
    │   └── KeyAccessError        KMS refused a data key (permission, disabled or missing key)
    └── StorageError              DynamoDB failed after botocore's retries
        ├── OutcomeUnknownError   an append whose answers were lost: stored whole, or not at all
        └── ClearIncompleteError  a clear in effect whose erasing lost its answers: clear again
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "ChatHistoryError",
    "ClearIncompleteError",
    "ConcurrencyError",
    "ConfigurationError",
    "CorruptHistoryError",
    "DecryptionError",
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
]


class ChatHistoryError(Exception):
    """Base class of every error chathist raises."""


class ConfigurationError(ChatHistoryError, ValueError):
    """A constructor argument or option that cannot apply here."""


class InvalidSessionIdError(ChatHistoryError, ValueError):
    """A session id that cannot be a DynamoDB key."""


class UnsupportedValueError(ChatHistoryError, ValueError):
    """A message holding a value chathist cannot store and read back exactly."""


class MessageTooLargeError(UnsupportedValueError):
    """A message whose encoded payload is over the largest supported size."""


class TableError(ChatHistoryError):
    """The table cannot be used as asked."""


class TableNotFoundError(TableError):
    """The table does not exist (on this endpoint and region)."""


class TableSchemaError(TableError):
    """The table exists but its key schema does not fit the layout."""


class ConcurrencyError(ChatHistoryError):
    """Other writers won the race for the next sequence number too many times in a row."""


class CorruptHistoryError(ChatHistoryError):
    """Stored items that cannot be folded into messages.

    ``key`` names the offending item (partition and sort key) where one is known; ``at`` is the
    (stage or None, sequence number) of the offending event, as the fold knows it.
    """

    def __init__(
        self,
        message: str,
        *,
        key: Mapping[str, object] | None = None,
        at: tuple[str | None, int] | None = None,
    ) -> None:
        super().__init__(message if key is None else f"{message} (item {key})")
        self.key = key
        self.at = at


class EncryptionError(ChatHistoryError):
    """Client-side encryption (``kms_key_id=``, ``local_key=``) cannot proceed; nothing was
    written and nothing is returned."""


class DecryptionError(EncryptionError, CorruptHistoryError):
    """An encrypted item that does not authenticate: its ciphertext or envelope was altered, it
    was copied to another table, session or sort key, or it was sealed under another key.
    Its content is never returned. Also a `CorruptHistoryError`: the stored history is bad."""


class KeyAccessError(EncryptionError):
    """KMS refused to give or unwrap a data key: no ``kms:GenerateDataKey``/``kms:Decrypt``
    permission for this key and encryption context, a disabled or missing key. ``code`` is
    KMS's error code."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class ItemTooLargeError(ChatHistoryError):
    """A list-layout session that would no longer fit DynamoDB's 400 KB item limit."""


class StorageError(ChatHistoryError):
    """A DynamoDB request failed after botocore's retries; nothing was half-written.

    A write is applied whole or not at all. An event-layout append whose answers were lost
    resends itself and raises `OutcomeUnknownError` if it still cannot tell; other writes (a
    clear, the list layout) may have been applied before this error: read the history before
    sending the same messages again. ``code`` is DynamoDB's error code, where it answered with
    one.
    """

    def __init__(self, message: str, *, code: str | None = None, unsent: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.unsent = unsent
        """True when no connection was made: the request never reached DynamoDB."""


class OutcomeUnknownError(StorageError):
    """An append whose every resend lost its answer (or met a server error): it is stored whole
    or not at all, and which is not known. Do not simply send the messages again: call
    ``history.settle(error)``, which resends this very write (a resend is never stored twice)
    and returns True if it is stored, False if it never will be (then send the messages again).

    ``pending`` is the write, for `settle`; ``session`` and ``seq`` say where it goes.
    """

    def __init__(
        self,
        message: str,
        *,
        session: str,
        seq: int,
        pending: object,
        code: str | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.session = session
        self.seq = seq
        self.pending = pending


class ClearIncompleteError(StorageError):
    """A clear whose tombstone is stored (no read returns what it cleared) but whose erasing of
    the cleared items lost its answers on every resend: some cleared content may still be
    stored. Call ``clear()`` again: it erases what is left (nothing is erased twice wrongly,
    and no message is lost that the clear did not remove)."""
