"""`DynamoDBChatMessageHistory`: LangChain's chat history interface, a thin face over a session.

The class checks its arguments into `chathist.options.HistoryOptions`, opens the session's
storage on first use (`chathist.session.open_session`: the event log, the list layout or a lazy
migration) and runs each LangChain call as steps through its `chathist.dynamo.client.Sender`.
It holds no storage rules of its own.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import BaseMessage

from chathist.core.codec import DEFAULT_COMPRESS_THRESHOLD
from chathist.core.steps import Steps
from chathist.dynamo.capacity import Capacity, CapacityMeter
from chathist.dynamo.client import Sender
from chathist.errors import OutcomeUnknownError, UnsupportedValueError
from chathist.options import HistoryOptions, Layout, validate_session_id
from chathist.session import SessionLog, list_layout_warning, open_session

if TYPE_CHECKING:
    import boto3

__all__ = ["DynamoDBChatMessageHistory", "Layout", "validate_session_id"]

T = TypeVar("T")


def _message_list(messages: object) -> list[BaseMessage]:
    """``add_messages``' argument as a list; `UnsupportedValueError` if it is not a sequence
    (one message would otherwise be iterated as its fields, and a string as its characters)."""
    if type(messages) is list or type(messages) is tuple:
        return list(messages)  # (the common case, before the slower checks)
    if isinstance(messages, BaseMessage):
        raise UnsupportedValueError(
            "add_messages takes a sequence of messages, got a single"
            f" {type(messages).__name__}; use add_message"
        )
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Iterable):
        raise UnsupportedValueError(
            f"add_messages takes a sequence of messages, got {type(messages).__name__}"
        )
    return list(messages)


class DynamoDBChatMessageHistory(BaseChatMessageHistory):
    """Chat message history in DynamoDB, one item per event; a drop-in for LangChain's class.

    ``layout`` (keyword-only) picks the storage format:

    - ``"events"``: chathist's event layout, one item per event (no size limit).
    - ``"list"``: LangChain's list layout, one item per session holding the list of messages,
      read and written exactly as ``langchain_community`` does (see `chathist.list_log`), but with
      atomic appends, numbers read back as int/float, and `ItemTooLargeError` at 400 KB.
    - ``"auto"`` (default): the list layout when ``key`` is given or the table has only a hash
      key (then a warning, once per table and process, names the migration command); the event
      layout on a table with a sort key. Decided on first use (the key schema is looked up once
      per process); the constructor does no I/O.

    The positional arguments are those of ``langchain_community``'s
    ``DynamoDBChatMessageHistory``. In the list layout they mean what they mean there
    (``history_size`` keeps only the latest N messages in the item; ``coerce_float_to_decimal``
    must be True to store floats). In the event layout they mean:

    - ``table_name``: a table with a string hash key ``primary_key_name`` and a string range key
      ``sort_key_name`` (see `create_table`).
    - ``session_id``: the partition key value; every event of the session is stored under it.
    - ``endpoint_url``, ``boto3_session``: where and as whom to connect (``region_name`` too).
    - ``primary_key_name``: the name of the table's hash key (default ``SessionId``).
    - ``key``: addresses a single item, which the event layout does not use: refused with
      ``layout="events"``, selects the list layout otherwise.
    - ``kms_key_id``: client-side encryption (event layout only; needs ``chathist[encryption]``).
      Every message payload (and each part of a large one) is sealed with AES-256-GCM under a
      data key from AWS KMS (``GenerateDataKey`` under this key id, ARN or alias; one per
      session, process and hour) before it is sent, bound to its table, session and sort key.
      Reads open sealed items with ``kms:Decrypt`` whatever key sealed them, and plaintext items
      as they are; an item that does not authenticate raises `DecryptionError`, a KMS refusal
      `KeyAccessError`. See docs/security.md. The list layout refuses it.
    - ``ttl``: every item written expires ``ttl`` seconds after it was written (attribute
      ``ttl_key_name``); expired items are never returned, even before DynamoDB deletes them.
      Tombstones of ``clear()`` never expire, so cleared messages cannot come back.
    - ``history_size``: ``messages`` returns only the latest N messages, reading about N items.
      All messages stay stored (``clear()`` removes them). None or 0 (in both layouts, as in
      LangChain's class): every message.
    - ``history_messages_key``: the attribute holding each event's (uncompressed) payload.
    - ``coerce_float_to_decimal``: accepted for compatibility; floats are always stored exactly,
      as JSON, and read back as floats, so there is nothing to coerce.

    Keyword-only options: ``sort_key_name``, ``region_name``, ``consistent_read`` (default True:
    a writer reads its own writes), ``compress_threshold`` (bytes; None never compresses),
    ``local_key`` (a raw 256-bit key, for development and tests: client-side encryption as with
    ``kms_key_id``, the data keys wrapped under this key instead of by KMS),
    ``max_append_attempts`` and ``append_timeout`` (seconds): an append that has lost this many
    races for the next sequence number, or for this long, raises `ConcurrencyError` having
    written nothing visible; ``capacity_meter``: a `CapacityMeter` to add this history's
    consumed capacity to (share one between histories for application-wide totals).
    The names ``primary_key_name``, ``sort_key_name``, ``history_messages_key`` and
    ``ttl_key_name`` must differ from each other and from chathist's own attribute names
    (`chathist.models.INTERNAL_NAMES`: event, v, w, codec, blob, parts, msg, count, stage, at, px,
    enc).

    Lazy migration from the list layout (event layout only): ``legacy_table_name`` (default: this
    table) and ``legacy_key`` (default ``{primary_key_name: session_id}``) locate the session's
    list-layout item, ``legacy_messages_key`` its list attribute (default
    ``history_messages_key``). Until the first write, ``messages`` are the legacy messages
    followed by the events (a clear among the events hides the legacy ones). The first
    ``add_messages``/``clear`` moves the legacy messages into events in the same transaction that
    removes the legacy item, or, with ``delete_legacy=False``, marks it migrated (chathist then
    ignores it; LangChain's class still reads it). Concurrent writers neither lose nor duplicate
    messages; see `chathist.lazy_migration` for the design.
    """

    def __init__(
        self,
        table_name: str,
        session_id: str,
        endpoint_url: str | None = None,
        primary_key_name: str = "SessionId",
        key: dict[str, str] | None = None,
        boto3_session: boto3.Session | None = None,
        kms_key_id: str | None = None,
        ttl: int | None = None,
        ttl_key_name: str = "expireAt",
        history_size: int | None = None,
        history_messages_key: str | None = "History",
        *,
        coerce_float_to_decimal: bool = False,
        sort_key_name: str = "SK",
        region_name: str | None = None,
        consistent_read: bool = True,
        compress_threshold: int | None = DEFAULT_COMPRESS_THRESHOLD,
        max_append_attempts: int = 1000,
        append_timeout: float = 30.0,
        capacity_meter: CapacityMeter | None = None,
        layout: Layout = "auto",
        legacy_table_name: str | None = None,
        legacy_key: dict[str, Any] | None = None,
        legacy_messages_key: str | None = None,
        delete_legacy: bool = True,
        local_key: bytes | None = None,
    ) -> None:
        self._options = HistoryOptions.build(
            table_name=table_name,
            session_id=session_id,
            endpoint_url=endpoint_url,
            primary_key_name=primary_key_name,
            key=key,
            boto3_session=boto3_session,
            kms_key_id=kms_key_id,
            ttl=ttl,
            ttl_key_name=ttl_key_name,
            history_size=history_size,
            history_messages_key=history_messages_key,
            coerce_float_to_decimal=coerce_float_to_decimal,
            sort_key_name=sort_key_name,
            region_name=region_name,
            consistent_read=consistent_read,
            compress_threshold=compress_threshold,
            max_append_attempts=max_append_attempts,
            append_timeout=append_timeout,
            capacity_meter=capacity_meter,
            layout=layout,
            legacy_table_name=legacy_table_name,
            legacy_key=legacy_key,
            legacy_messages_key=legacy_messages_key,
            delete_legacy=delete_legacy,
            local_key=local_key,
        )
        self._sender = Sender(self._options.binding, self._options.meter)
        _ = self._sender.client  # made now (no request is sent), so bad settings fail here
        self._log: SessionLog | None = None
        self._open_lock = threading.Lock()
        self._write_lock = threading.RLock()
        """Threads sharing this object write one at a time: they would otherwise race each
        other for the same next sequence number, costing requests and not order."""
        if key is not None and layout == "auto":
            warning = list_layout_warning(self._options.binding, "a key dict addresses one item")
            if warning is not None:
                warnings.warn(warning, UserWarning, stacklevel=2)

    # -- LangChain's interface ------------------------------------------------------------------

    @property
    def messages(self) -> list[BaseMessage]:
        """The session's messages (the latest ``history_size`` of them), oldest first."""
        return self._run(lambda log: log.read())

    @messages.setter
    def messages(self, value: list[BaseMessage]) -> None:
        raise NotImplementedError("assign no messages; use add_messages() or clear()")

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Append ``messages`` atomically and contiguously: all or none, in this order."""
        batch = _message_list(messages)
        with self._write_lock:
            self._run(lambda log: log.append(batch))

    def clear(self) -> None:
        """Clear the session. In the event layout: a tombstone first (readers see nothing from
        then on), then every item below it is erased; if erasing is interrupted, readers still
        see an empty history, and the next ``clear()`` finishes it."""
        with self._write_lock:
            self._run(lambda log: log.clear())

    def repair(self, older_than: float | None = None) -> int:
        """Delete what interrupted writes left behind: the staged events of writes that never
        committed, staged more than ``older_than`` seconds ago (default and minimum: an hour;
        a writer re-stages anything older than half of it before its commit, so no younger
        stage can still be committed). Returns how many items it deleted. Readers never see
        such leftovers; this only frees their storage (``clear()`` does it too). Event layout
        only."""
        return self._run(lambda log: log.repair(older_than))

    def settle(self, error: OutcomeUnknownError) -> bool:
        """Settle an append that raised `OutcomeUnknownError`: resend that very write (a resend
        is never stored twice). True: it is stored, once. False: it is not, and never will be
        (another writer holds its number); send the messages again. Event layout only."""
        with self._write_lock:
            return self._run(lambda log: log.settle(error))

    # -- asyncio --------------------------------------------------------------------------------

    async def aget_messages(self) -> list[BaseMessage]:
        """`messages`, natively async (aiobotocore); without the ``async`` extra, in an
        executor."""
        return await self._arun(lambda log: log.read(), lambda: self.messages)

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        """`add_messages`, natively async (aiobotocore); without the extra, in an executor."""
        batch = _message_list(messages)
        await self._arun(lambda log: log.append(batch), lambda: self.add_messages(batch))

    async def aclear(self) -> None:
        """`clear`, natively async (aiobotocore); without the extra, in an executor."""
        await self._arun(lambda log: log.clear(), self.clear)

    async def arepair(self, older_than: float | None = None) -> int:
        """`repair`, natively async (aiobotocore); without the extra, in an executor."""
        return await self._arun(lambda log: log.repair(older_than), lambda: self.repair(older_than))

    async def asettle(self, error: OutcomeUnknownError) -> bool:
        """`settle`, natively async (aiobotocore); without the extra, in an executor."""
        return await self._arun(lambda log: log.settle(error), lambda: self.settle(error))

    async def _arun(self, action: Callable[[SessionLog], Steps[T]], fallback: Callable[[], T]) -> T:
        """`_run` in the running loop: the same steps, sent by the async sender."""
        import asyncio  # here: a sync program need not load asyncio and aiobotocore

        from chathist.dynamo import aio

        if not aio.AVAILABLE:
            return await asyncio.get_running_loop().run_in_executor(None, fallback)
        sender = aio.AsyncSender(self._options.binding, self._options.meter)
        log = self._log
        if log is None:
            opened, warning = await sender.run(open_session(self._options))
            self._log = log = opened
            if warning is not None:
                warnings.warn(warning, UserWarning, stacklevel=3)
        return await sender.run(action(log))

    # -- chathist's additions -------------------------------------------------------------------

    @property
    def table_name(self) -> str:
        return self._options.binding.table_name

    @property
    def session_id(self) -> str:
        return self._options.session_id

    @property
    def history_size(self) -> int | None:
        """The window of ``messages`` (None: every message)."""
        return self._options.history_size

    @property
    def ttl(self) -> int | None:
        return self._options.ttl

    @property
    def client(self) -> Any:
        """The botocore DynamoDB client this history sends through (shared by every history on
        the same endpoint, region and boto3 session): a seam for botocore event hooks."""
        return self._sender.client

    @property
    def consumed_capacity(self) -> Capacity:
        """Running totals of read units, write units and requests this history has used (with a
        shared ``capacity_meter``: every history that shares it)."""
        return self._options.meter.total

    def reset_consumed_capacity(self) -> Capacity:
        """Zero the running totals; return what they were (atomically)."""
        return self._options.meter.reset()

    def _run(self, action: Callable[[SessionLog], Steps[T]]) -> T:
        """Open the session's storage (once), then run ``action`` on it."""
        log = self._log
        if log is None:
            with self._open_lock:
                log = self._log
                if log is None:
                    log, warning = self._sender.run(open_session(self._options))
                    self._log = log
                    if warning is not None:
                        warnings.warn(warning, UserWarning, stacklevel=3)
        return self._sender.run(action(log))

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(table_name={self.table_name!r}, session_id={self.session_id!r})"
