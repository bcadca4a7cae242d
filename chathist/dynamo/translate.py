"""The one place where botocore's errors become chathist's.

`translate` maps whatever a request raised (`ClientError`, `BotoCoreError`) to the typed errors of
`chathist.errors`, keeping the original as ``__cause__``. Two outcomes that the caller decides on
are not errors of the user's: `ConditionFailed` (a conditional write met a taken key, or a
changed item) and `TransactionCanceled` (with DynamoDB's reason for every action). They stay
inside chathist: the steps that send conditional writes catch them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    NoRegionError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from chathist.errors import (
    ChatHistoryError,
    ConfigurationError,
    DecryptionError,
    ItemTooLargeError,
    KeyAccessError,
    StorageError,
    TableNotFoundError,
    TableSchemaError,
)

__all__ = [
    "KMS_PERMISSION_HINT",
    "LOCAL_CREDENTIALS_HINT",
    "ConditionFailed",
    "TransactionCanceled",
    "table_of",
    "translate",
]

_KEY_SCHEMA_TEXTS = (
    "does not match the schema",
    "missing the key",
    "number of conditions on the keys is invalid",
    "type mismatch for key",
    "query condition missed key schema element",
    "one of the required keys was not given a value",
    "key schema",
)
LOCAL_CREDENTIALS_HINT = (
    "for DynamoDB Local any keys do: export AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local"
)


class ConditionFailed(ChatHistoryError):
    """A conditional write's condition failed; ``item`` is the stored item (``ALL_OLD``), if
    DynamoDB returned it."""

    def __init__(self, message: str, item: Mapping[str, Any] | None) -> None:
        super().__init__(message)
        self.item = item


class TransactionCanceled(ChatHistoryError):
    """A transaction was cancelled; ``reasons`` holds DynamoDB's code (and ``Item``) for each
    action, in the order the actions were sent."""

    def __init__(self, message: str, reasons: list[Mapping[str, Any]]) -> None:
        super().__init__(message)
        self.reasons = reasons

    @property
    def codes(self) -> list[str | None]:
        """The cancellation code of each action (``"None"`` for an action that was fine)."""
        return [reason.get("Code") for reason in self.reasons]


def table_of(operation: str, params: Mapping[str, Any]) -> str:
    """The table a request is about, for messages."""
    if "TableName" in params:
        return str(params["TableName"])
    if operation == "BatchWriteItem":
        return ", ".join(params.get("RequestItems", {})) or "?"
    for action in params.get("TransactItems", []):
        for body in action.values():
            if "TableName" in body:
                return str(body["TableName"])
    return "?"


_KMS_DECRYPTION_CODES = frozenset({"InvalidCiphertextException", "IncorrectKeyException"})
"""KMS's answers for a wrapped data key that does not unwrap (altered, or bound to another
encryption context: the item was moved to another table or session)."""
KMS_PERMISSION_HINT = (
    "the caller needs kms:GenerateDataKey (to write) and kms:Decrypt (to read) on the key,"
    " for encryption contexts with chathist:table and chathist:session (docs/security.md)"
)


def _translate_kms(exc: Exception, operation: str, where: str) -> ChatHistoryError:
    """The chathist error of a failed AWS KMS request (data keys of client-side encryption)."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        text = str(error.get("Message", "")) or str(exc)
        if code in _KMS_DECRYPTION_CODES:
            return DecryptionError(
                f"KMS {operation}: the data key of an encrypted item does not unwrap ({code}:"
                f" {text}): it was altered, or moved from another table or session; it is not"
                " returned"
            )
        hint = f"; {KMS_PERMISSION_HINT}" if code == "AccessDeniedException" else ""
        if code in ("UnrecognizedClientException", "InvalidSignatureException"):
            hint = (
                "; KMS does not know these credentials (for development on DynamoDB Local, use"
                " local_key=, or point AWS_ENDPOINT_URL_KMS at a local KMS)"
            )
        return KeyAccessError(f"KMS {operation} failed: {code}: {text}{hint}", code=code)
    if isinstance(exc, NoRegionError):
        return ConfigurationError("no AWS region for KMS: pass region_name=")
    place = f" ({where})" if where else ""
    return KeyAccessError(f"KMS {operation} failed{place}: {exc}")


def translate(
    exc: Exception,
    operation: str,
    params: Mapping[str, Any],
    *,
    where: str = "",
    service: str = "dynamodb",
) -> ChatHistoryError:
    """The chathist error for ``exc``, raised by ``operation`` with ``params`` (``where`` names
    the endpoint or region for messages) of ``service`` (``dynamodb`` or ``kms``)."""
    if service == "kms":
        return _translate_kms(exc, operation, where)
    table = table_of(operation, params)
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        text = str(error.get("Message", "")) or str(exc)
        if code == "ConditionalCheckFailedException":
            item = cast("Mapping[str, Any] | None", exc.response.get("Item"))
            return ConditionFailed(f"{operation} on {table!r}: {text}", item)
        if code == "TransactionCanceledException":
            reasons = cast(
                "list[Mapping[str, Any]]", list(exc.response.get("CancellationReasons") or [])
            )
            return TransactionCanceled(f"{operation} on {table!r}: {text}", reasons)
        if code == "ResourceNotFoundException":
            place = f" on {where}" if where else ""
            return TableNotFoundError(
                f"table {table!r} does not exist{place}; create it with"
                f" chathist.create_table({table!r}) or `chathist create-table {table}`"
            )
        lowered = text.lower()
        if code == "ValidationException" and "maximum allowed size" in lowered:
            return ItemTooLargeError(
                f"{operation} on {table!r}: an item would exceed DynamoDB's 400 KB limit"
            )
        if code == "ValidationException" and any(t in lowered for t in _KEY_SCHEMA_TEXTS):
            return TableSchemaError(
                f"table {table!r} does not have the key schema this request needs: {text}"
            )
        hint = ""
        if code == "UnrecognizedClientException" and where.startswith("http"):
            hint = " (DynamoDB Local accepts access keys of letters and digits only)"
        return StorageError(f"{operation} on {table!r} failed: {code}: {text}{hint}", code=code)
    if isinstance(exc, NoRegionError):
        return ConfigurationError(
            "no AWS region: pass region_name= (or --region), use a boto3_session with a region,"
            " or set AWS_DEFAULT_REGION"
        )
    if isinstance(exc, NoCredentialsError):
        hint = f" ({LOCAL_CREDENTIALS_HINT})" if where.startswith("http") else ""
        return StorageError(f"{operation} on {table!r} failed: {exc}{hint}")
    if isinstance(exc, BotoCoreError):
        unsent = isinstance(exc, BotoConnectionError)  # no connection: nothing was sent
        return StorageError(f"{operation} on {table!r} failed: {exc}", unsent=unsent)
    return StorageError(f"{operation} on {table!r} failed: {type(exc).__name__}: {exc}")
