"""`DynamoDBSaver`: a LangGraph checkpointer on chathist's event-layout table.

A thin face: it checks its arguments, and runs every operation of
`chathist.langgraph.thread_log.ThreadLog` as steps, through a `Sender` (sync methods) or an
`AsyncSender` (the ``a*`` methods, natively async with aiobotocore; without it, in an
executor). The layout, the costs and the limits are in docs/langgraph.md.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    DeltaChannelHistory,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from chathist.core.steps import Steps
from chathist.dynamo import aio
from chathist.dynamo.binding import Binding
from chathist.dynamo.capacity import Capacity, CapacityMeter
from chathist.dynamo.client import Sender
from chathist.dynamo.thread_store import RESERVED_NAMES, ThreadStore
from chathist.errors import ConfigurationError
from chathist.langgraph.thread_log import ThreadLog, ValueCache, list_calls
from chathist.options import MAX_TTL

if TYPE_CHECKING:
    import boto3

__all__ = ["DynamoDBSaver"]

T = TypeVar("T")


def _listing(
    config: RunnableConfig | None,
    filter: dict[str, Any] | None,
    before: RunnableConfig | None,
    limit: int | None,
) -> Callable[[ThreadLog], Steps[list[CheckpointTuple]]]:
    """One page of ``list()`` (`list_calls`), as an action of `DynamoDBSaver._run`."""
    return lambda log: log.list_checkpoints(config, filter=filter, before=before, limit=limit)


class DynamoDBSaver(BaseCheckpointSaver[str]):
    """LangGraph checkpoints in a chathist table (`chathist.create_table`), one partition per
    thread, beside chat sessions without colliding.

    A put writes the checkpoint item (the commit) after only the channels in ``new_versions``;
    a list of messages with ids (``add_messages``, ``MessagesState``) is stored as the
    operations that made its new version (append, replace by id, remove, remove all), so a turn
    costs the same at turn 10 and turn 10,000. Payloads of any size are split over items.

    ``endpoint_url``, ``region_name``, ``boto3_session``: where and as whom, as for
    `chathist.DynamoDBChatMessageHistory` (``$CHATHIST_ENDPOINT_URL`` when no endpoint is
    given). ``primary_key_name``, ``sort_key_name``, ``ttl_key_name``: the table's names.
    ``ttl``: seconds after a thread's first checkpoint when all its items expire (every item of
    the thread carries the same expiry, so nothing expires before what points at it); expired
    items are never returned. ``serde``: LangGraph's serializer (an ``EncryptedSerializer``
    works). ``capacity_meter``: a `CapacityMeter` to add the consumed capacity to.
    """

    def __init__(
        self,
        table_name: str,
        *,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        boto3_session: boto3.Session | None = None,
        primary_key_name: str = "SessionId",
        sort_key_name: str = "SK",
        ttl_key_name: str = "expireAt",
        ttl: int | None = None,
        consistent_read: bool = True,
        serde: SerializerProtocol | None = None,
        capacity_meter: CapacityMeter | None = None,
    ) -> None:
        super().__init__(serde=serde)
        self.binding = Binding.resolve(table_name, endpoint_url, region_name, boto3_session)
        names = [primary_key_name, sort_key_name, ttl_key_name]
        for name in names:
            if not isinstance(name, str) or not name:
                raise ConfigurationError(f"attribute names must be non-empty str, got {name!r}")
        if len(set(names)) < 3 or set(names) & RESERVED_NAMES:
            raise ConfigurationError(
                f"primary_key_name, sort_key_name and ttl_key_name must differ and not be one of"
                f" {sorted(RESERVED_NAMES)}"
            )
        if ttl is not None and (
            isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 < ttl <= MAX_TTL
        ):
            raise ConfigurationError(f"ttl must be a positive int of seconds, got {ttl!r}")
        if capacity_meter is not None and not isinstance(capacity_meter, CapacityMeter):
            raise ConfigurationError(
                f"capacity_meter must be a chathist.CapacityMeter, got {capacity_meter!r}"
            )
        self.meter = capacity_meter if capacity_meter is not None else CapacityMeter()
        self.ttl = ttl
        self._store = ThreadStore(
            table_name,
            hash_name=primary_key_name,
            range_name=sort_key_name,
            ttl_name=ttl_key_name,
            consistent_read=bool(consistent_read),
        )
        self._cache = ValueCache()
        self._sender = Sender(self.binding, self.meter)
        _ = self._sender.client  # made now (no request is sent), so bad settings fail here

    # -- running steps --------------------------------------------------------------------------

    def _log(self) -> ThreadLog:
        # Built per call: ``serde`` may be replaced on a clone (``with_allowlist``).
        return ThreadLog(self._store, self.serde, ttl=self.ttl, cache=self._cache)

    def _run(self, action: Callable[[ThreadLog], Steps[T]]) -> T:
        return self._sender.run(action(self._log()))

    async def _arun(self, action: Callable[[ThreadLog], Steps[T]]) -> T:
        if not aio.AVAILABLE:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(None, self._run, action)
        return await aio.AsyncSender(self.binding, self.meter).run(action(self._log()))

    @property
    def consumed_capacity(self) -> Capacity:
        """Read units, write units and requests used so far (the meter's running totals)."""
        return self.meter.total

    def reset_consumed_capacity(self) -> Capacity:
        """Zero the running totals; return what they were."""
        return self.meter.reset()

    # -- BaseCheckpointSaver ----------------------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self._run(lambda log: log.get_tuple(config))

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await self._arun(lambda log: log.get_tuple(config))

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        calls = list_calls(config, before, limit)
        page_before, page_limit = next(calls)
        while True:
            found = self._run(_listing(config, filter, page_before, page_limit))
            yield from found
            try:
                page_before, page_limit = calls.send(found)
            except StopIteration:
                return

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        calls = list_calls(config, before, limit)
        page_before, page_limit = next(calls)
        while True:
            found = await self._arun(_listing(config, filter, page_before, page_limit))
            for item in found:
                yield item
            try:
                page_before, page_limit = calls.send(found)
            except StopIteration:
                return

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return self._run(lambda log: log.put(config, checkpoint, metadata, new_versions))

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await self._arun(lambda log: log.put(config, checkpoint, metadata, new_versions))

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        self._run(lambda log: log.put_writes(config, writes, task_id, task_path))

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await self._arun(lambda log: log.put_writes(config, writes, task_id, task_path))

    def delete_thread(self, thread_id: str) -> None:
        self._run(lambda log: log.delete_thread(thread_id))

    async def adelete_thread(self, thread_id: str) -> None:
        await self._arun(lambda log: log.delete_thread(thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        self._run(lambda log: log.delete_for_runs(run_ids))

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await self._arun(lambda log: log.delete_for_runs(run_ids))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self._run(lambda log: log.copy_thread(source_thread_id, target_thread_id))

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await self._arun(lambda log: log.copy_thread(source_thread_id, target_thread_id))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        self._run(lambda log: log.prune(thread_ids, strategy))

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await self._arun(lambda log: log.prune(thread_ids, strategy))

    def get_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        return self._run(lambda log: log.delta_history(config, channels))

    async def aget_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        return await self._arun(lambda log: log.delta_history(config, channels))

    def get_next_version(self, current: str | None, channel: None) -> str:
        """LangGraph's string versions: a zero-padded counter and a random part (so a version
        is never reused, and this saver may cache what a version holds)."""
        if current is None:
            counter = 0
        elif isinstance(current, (int, float)):
            counter = int(current)
        else:
            counter = int(str(current).split(".")[0])
        return f"{counter + 1:032}.{random.random():016}"
