"""A LangGraph thread in the event layout's table: every checkpointer operation, as steps.

The saver's sync and async methods drive these same steps (`chathist.dynamo.client.Sender`,
`chathist.dynamo.aio.AsyncSender`), so the rules exist once. The layout is in
`chathist.core.thread_keys`; the rules:

- **A put writes only what changed**: a blob per channel in ``new_versions`` (an unchanged
  channel keeps pointing at the version an older put wrote), except a list of messages with ids,
  which is stored as the operations that turn its parent version into the new one
  (`chathist.core.message_ops`). The checkpoint item is written last, alone: it is the commit.
  A put that dies before it leaves items nothing points at, which no reader looks at.
- **A read trusts the checkpoint**: the newest checkpoint (or the one asked for) and its
  pending writes come from one query (they share a key prefix); the values of its channel
  versions from one BatchGetItem (blobs) and one query (message operations), unless this saver
  already holds them (`ValueCache`: what a version holds never changes).
- **TTL**: a thread's items all expire together, when its first checkpoint was written plus
  ``ttl``; every later item carries its parent checkpoint's expiry, so no item expires before a
  checkpoint that points at it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    DeltaChannelHistory,
    PendingWrite,
    get_checkpoint_metadata,
    writes_sort_key,
)
from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.types import _DeltaSnapshot

from chathist.core import message_ops
from chathist.core.steps import Steps, call
from chathist.core.thread_keys import (
    THREAD_PREFIX,
    blob_key,
    checkpoint_key,
    checkpoint_prefix,
    delta_fields,
    delta_key,
    delta_prefix,
    is_thread_key,
    thread_key,
    write_key,
)
from chathist.dynamo.paging import Cursor
from chathist.dynamo.thread_store import ThreadItem, ThreadStore
from chathist.dynamo.translate import ConditionFailed, TransactionCanceled
from chathist.errors import ConfigurationError, CorruptHistoryError

__all__ = ["LIST_PAGE", "CheckpointInfo", "ThreadLog", "ValueCache", "list_calls"]

K = TypeVar("K")
V = TypeVar("V")

CACHE_WEIGHT: Final = 65_536
"""How much a saver's cache holds: each channel value or checkpoint summary counts one, plus one
per message of a message list (least recently used go first). A thread of 10,000 messages keeps
its last few versions, never one list per turn."""
ABSENT: Final = object()
LIST_PAGE: Final = 100
"""Checkpoints one request of ``list()`` returns at most, when it can go on from the last one."""


def list_calls(
    config: RunnableConfig | None, before: RunnableConfig | None, limit: int | None
) -> Generator[tuple[RunnableConfig | None, int | None], Sequence[CheckpointTuple], None]:
    """The (``before``, ``limit``) of each `ThreadLog.list_checkpoints` call that together
    list what ``list(config, before=before, limit=limit)`` asks for; send each call's result
    to get the next. A namespace's checkpoints are listed ``LIST_PAGE`` at a time, each page
    going on before the last one, so a long history is never held whole; a listing of every
    namespace or thread is one call."""
    configurable = (config or {}).get("configurable", {})
    if (
        config is None
        or configurable.get("checkpoint_ns") is None
        or configurable.get("checkpoint_id")
    ):
        yield before, limit
        return
    left = limit
    while left is None or left > 0:
        size = LIST_PAGE if left is None else min(LIST_PAGE, left)
        found = yield before, size
        if len(found) < size:
            return
        before = found[-1].config
        if left is not None:
            left -= len(found)


@dataclass(frozen=True)
class CheckpointInfo:
    """What a put needs of its parent: channel versions, which channels are message operations,
    and the thread's expiry."""

    versions: dict[str, str]
    deltas: frozenset[str]
    expires_at: int | None
    stored: dict[str, str]
    """For each message-list channel: the newest version on this checkpoint's path that has a
    stored list (a delta channel's snapshot builds on the one before)."""


class _Lru:
    """A thread-safe LRU map whose entries weigh ``weight`` each, up to ``budget`` in all."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.entries: OrderedDict[Any, tuple[Any, int]] = OrderedDict()
        self.weight = 0
        self.lock = threading.Lock()

    def get_(self, key: Any) -> Any:
        with self.lock:
            found = self.entries.get(key)
            if found is None:
                return ABSENT
            self.entries.move_to_end(key)
            return found[0]

    def set_(self, key: Any, value: Any, weight: int = 1) -> None:
        with self.lock:
            old = self.entries.pop(key, None)
            if old is not None:
                self.weight -= old[1]
            self.entries[key] = (value, weight)
            self.weight += weight
            while self.weight > self.budget and len(self.entries) > 1:
                _, (_, dropped) = self.entries.popitem(last=False)
                self.weight -= dropped

    def drop_thread(self, partition: str) -> None:
        with self.lock:
            for key in [k for k in self.entries if k[0] == partition]:
                self.weight -= self.entries.pop(key)[1]


class ValueCache:
    """What this saver learnt of immutable things: the value of (thread, ns, channel, version)
    and the summary of (thread, ns, checkpoint id). Only string versions (LangGraph's own,
    with a random part) are cached: an int version can be reused after a thread is deleted.

    A message list is kept as a tuple of messages no caller holds: a put keeps copies of the
    messages it adds, a read hands out copies (`detached`), so a caller changing a message
    it got or gave never changes what a later read returns. Blobs are kept as bytes."""

    def __init__(self, budget: int = CACHE_WEIGHT) -> None:
        self.values = _Lru(budget)
        self.infos = _Lru(budget)

    @staticmethod
    def cacheable(version: object) -> bool:
        return isinstance(version, str)

    def keep(self, key: tuple[Any, ...], kind: str, value: Any) -> None:
        """Cache ``value`` (bytes of a blob, a tuple of private messages, or None) of kind
        ``b``, ``d`` (a message list), ``s`` (a DeltaChannel snapshot of one) or ``n`` (no
        value) under (partition, ns, channel, version)."""
        if self.cacheable(key[3]):
            weight = 1 + len(value) if kind in ("d", "s") else 1
            self.values.set_(key, (kind, value), weight)

    def drop(self, partition: str) -> None:
        self.values.drop_thread(partition)
        self.infos.drop_thread(partition)


def _handed_out(kind: str, messages: Sequence[Any]) -> Any:
    """A message list (``d``) or DeltaChannel snapshot (``s``) of cached ``messages`` as a read
    returns it: copies (`message_ops.detached`), so no two reads share a message."""
    value = [message_ops.detached(m) for m in messages]
    return _DeltaSnapshot(value) if kind == "s" else value


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: int) -> dict[str, str]:
    return {"N": str(value)}


def _config(thread_id: str, ns: str, checkpoint_id: str) -> RunnableConfig:
    return {
        "configurable": {
            "thread_id": thread_id,
            "checkpoint_ns": ns,
            "checkpoint_id": checkpoint_id,
        }
    }


def _thread_id(config: RunnableConfig) -> str:
    try:
        thread_id = config["configurable"]["thread_id"]
    except (KeyError, TypeError) as exc:
        raise ConfigurationError("the config names no configurable.thread_id") from exc
    if not isinstance(thread_id, str) or not thread_id:
        raise ConfigurationError(f"thread_id must be a non-empty str, got {thread_id!r}")
    return thread_id


@dataclass
class _Stored:
    """A checkpoint as read: its header, decoded payload and writes."""

    partition: str
    ns: str
    checkpoint_id: str
    parent_id: str | None
    checkpoint: dict[str, Any]
    metadata: dict[str, Any]
    deltas: frozenset[str]
    expires_at: int | None
    stored: dict[str, str]
    writes: list[tuple[str, str, Any, str, int]]
    """(task id, channel, value, task path, idx), in writes_sort_key order."""


class ThreadLog:
    """The checkpointer operations of one table, as steps."""

    def __init__(
        self,
        store: ThreadStore,
        serde: SerializerProtocol,
        *,
        ttl: int | None = None,
        cache: ValueCache | None = None,
    ) -> None:
        self.store = store
        self.serde = serde
        self.ttl = ttl
        self.cache = cache if cache is not None else ValueCache()

    # -- decoding -------------------------------------------------------------------------------

    def _load(self, item: ThreadItem) -> Any:
        if item.payload is None:
            raise CorruptHistoryError(
                f"thread item {self.store.sort_key(item.raw)!r} has no payload"
            )
        try:
            return self.serde.loads_typed(item.payload)
        except Exception as exc:
            raise CorruptHistoryError(
                f"thread item {self.store.sort_key(item.raw)!r} cannot be decoded: {exc}"
            ) from exc

    def _stored(self, partition: str, header: ThreadItem, subs: list[ThreadItem]) -> _Stored:
        body = self._load(header)
        writes: list[tuple[str, str, Any, str, int]] = []
        for sub in subs:
            if sub.kind != "w":
                continue
            task_id, path = sub.text("tid") or "", sub.text("path") or ""
            try:
                group = [(str(ch), int(index), value) for ch, index, value in self._load(sub)]
            except (TypeError, ValueError) as exc:
                raise CorruptHistoryError(
                    f"write item {self.store.sort_key(sub.raw)!r} holds no list of writes"
                ) from exc
            writes.extend((task_id, ch, value, path, index) for ch, index, value in group)
        writes.sort(key=lambda w: writes_sort_key(w[3], w[0], w[4]))
        dl = header.raw.get("dl", {}).get("SS", [])
        return _Stored(
            partition=partition,
            ns=header.text("ns") or "",
            checkpoint_id=header.text("cid") or "",
            parent_id=header.text("par"),
            checkpoint=body["checkpoint"],
            metadata=body["metadata"],
            deltas=frozenset(dl),
            stored={k: v["S"] for k, v in header.raw.get("sv", {}).get("M", {}).items()},
            expires_at=header.number(self.store.ttl_name),
            writes=writes,
        )

    def _group(self, partition: str, raws: list[dict[str, Any]]) -> list[_Stored]:
        """The committed checkpoints among ``raws`` (checkpoint-prefix items), newest first,
        each with its writes; writes and parts of no committed checkpoint are ignored."""
        now = time.time()
        items = self.store.assemble(raws)
        by_checkpoint: dict[str, list[ThreadItem]] = {}
        headers: list[tuple[str, ThreadItem]] = []
        for key, item in items.items():
            if item.kind == "cp":
                headers.append((key, item))
            elif item.kind == "w":
                owner = key.rsplit("#w#", 1)[0]
                by_checkpoint.setdefault(owner, []).append(item)
        found = []
        for key, header in sorted(headers, key=lambda h: h[0], reverse=True):
            if self.store.expired(header.raw, now):
                continue
            found.append(self._stored(partition, header, by_checkpoint.get(key, [])))
        return found

    # -- reading --------------------------------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> Steps[CheckpointTuple | None]:
        """The checkpoint ``config`` names (the newest of its namespace without an id)."""
        thread_id = _thread_id(config)
        ns = config["configurable"].get("checkpoint_ns", "") or ""
        checkpoint_id = config["configurable"].get("checkpoint_id")
        partition = thread_key(thread_id)
        stored = yield from self._read_checkpoint(partition, ns, checkpoint_id)
        if stored is None:
            return None
        values = yield from self._values(partition, ns, [stored])
        return self._tuple(thread_id, stored, values[0])

    def _read_checkpoint(
        self, partition: str, ns: str, checkpoint_id: str | None
    ) -> Steps[_Stored | None]:
        if checkpoint_id:
            key = checkpoint_key(ns, checkpoint_id)
            raws = yield from self.store.read_all(
                self.store.query(partition, low=key, high=key + "#~")
            )
            found = self._group(partition, raws)
            return found[0] if found else None
        # Newest first: the newest checkpoint's writes and parts sort after its header, so
        # they come before it; the first header met is the newest committed checkpoint.
        cursor = self.store.query(
            partition, prefix=checkpoint_prefix(ns), newest_first=True, page_size=4
        )
        raws = []
        now = time.time()
        while (page := (yield from cursor.next_page())) is not None:
            for raw in page:
                raws.append(raw)
                if raw.get("k", {}).get("S") == "cp" and not self.store.expired(raw, now):
                    found = self._group(partition, raws)
                    return found[0] if found else None
        return None

    def list_checkpoints(
        self,
        config: RunnableConfig | None,
        *,
        filter: Mapping[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Steps[list[CheckpointTuple]]:
        """The checkpoints matching the arguments, newest first (per namespace)."""
        before_id = (before or {}).get("configurable", {}).get("checkpoint_id") if before else None
        if config is None:
            raws = yield from self.store.read_all(self.store.scan_threads(THREAD_PREFIX))
            partitions: dict[str, list[dict[str, Any]]] = {}
            for raw in raws:
                key = self.store.sort_key(raw)
                if key.startswith("c#") or (
                    raw.get("k", {}).get("S") == "p" and raw["o"]["S"].startswith("c#")
                ):
                    partitions.setdefault(raw[self.store.hash_name]["S"], []).append(raw)
            groups = [(p, self._group(p, r)) for p, r in sorted(partitions.items())]
            wanted_id = None
        else:
            thread_id = _thread_id(config)
            partition = thread_key(thread_id)
            ns = config["configurable"].get("checkpoint_ns")
            wanted_id = config["configurable"].get("checkpoint_id")
            prefix = "c#" if ns is None else checkpoint_prefix(ns)
            # With a limit, pages of a few items a checkpoint (its header, a write or two).
            page_size = 4 * limit + 4 if limit else None
            if before_id and ns is not None:
                high = checkpoint_key(ns, before_id)
                cursor = self.store.query(
                    partition, low=prefix, high=high, newest_first=True, page_size=page_size
                )
            else:
                cursor = self.store.query(
                    partition, prefix=prefix, newest_first=True, page_size=page_size
                )
            stored_list: list[_Stored] = []
            pending: list[dict[str, Any]] = []
            matched = 0
            while not cursor.done and (limit is None or matched < limit):
                found, pending = yield from self._next_checkpoints(partition, cursor, pending)
                stored_list.extend(found)
                matched += sum(self._matches(s, wanted_id, before_id, filter) for s in found)
            groups = [(partition, stored_list)]
        result: list[CheckpointTuple] = []
        for partition, stored_list in groups:
            chosen: list[_Stored] = []
            for stored in stored_list:
                if not self._matches(stored, wanted_id, before_id, filter):
                    continue
                if limit is not None and len(result) + len(chosen) >= limit:
                    break
                chosen.append(stored)
            by_ns: dict[str, list[_Stored]] = {}
            for stored in chosen:
                by_ns.setdefault(stored.ns, []).append(stored)
            thread_id = partition[len(THREAD_PREFIX) :]
            values_of: dict[int, dict[str, Any]] = {}
            for ns_name, group in by_ns.items():
                values = yield from self._values(partition, ns_name, group, listing=True)
                for stored, value in zip(group, values, strict=True):
                    values_of[id(stored)] = value
            result.extend(self._tuple(thread_id, s, values_of[id(s)]) for s in chosen)
            if limit is not None and len(result) >= limit:
                break
        return result

    @staticmethod
    def _matches(
        stored: _Stored,
        wanted_id: str | None,
        before_id: str | None,
        filter: Mapping[str, Any] | None,
    ) -> bool:
        if wanted_id and stored.checkpoint_id != wanted_id:
            return False
        if before_id and stored.checkpoint_id >= before_id:
            return False
        return not filter or all(stored.metadata.get(k) == v for k, v in filter.items())

    def _next_checkpoints(
        self, partition: str, cursor: Cursor, pending: list[dict[str, Any]]
    ) -> Steps[tuple[list[_Stored], list[dict[str, Any]]]]:
        """The next page of a newest-first query of checkpoint items: the checkpoints whose
        header it completes (their writes and parts sort after them, so came before), and the
        items still waiting for their header."""
        page = yield from cursor.next_page()
        pending = [*pending, *(page or [])]
        found = self._group(partition, pending)
        if found:
            oldest = checkpoint_key(found[-1].ns, found[-1].checkpoint_id)
            pending = [r for r in pending if self.store.sort_key(r) < oldest]
        return found, pending

    def _tuple(self, thread_id: str, stored: _Stored, values: dict[str, Any]) -> CheckpointTuple:
        parent = _config(thread_id, stored.ns, stored.parent_id) if stored.parent_id else None
        return CheckpointTuple(
            config=_config(thread_id, stored.ns, stored.checkpoint_id),
            checkpoint={**stored.checkpoint, "channel_values": values},  # type: ignore[typeddict-item]
            metadata=stored.metadata,  # type: ignore[arg-type]
            parent_config=parent,
            pending_writes=[(tid, ch, value) for tid, ch, value, _, _ in stored.writes],
        )

    def _values(
        self, partition: str, ns: str, checkpoints: Sequence[_Stored], *, listing: bool = False
    ) -> Steps[list[dict[str, Any]]]:
        """The channel values of ``checkpoints`` (one namespace): from the cache, one
        BatchGetItem per 100 blobs, and one query of the namespace's message operations.

        Message lists are never the cache's objects. Read for a ``listing`` (``list()``),
        the lists of one call share the messages they have in common, decoded for that call
        alone: copying each checkpoint's list would make a thread's history cost the square
        of its length. Otherwise they are copies, and what was folded is cached."""
        results: list[dict[str, Any]] = [{} for _ in checkpoints]
        blob_wants: list[tuple[int, str, str]] = []
        delta_wants: list[tuple[int, str, str]] = []
        for i, stored in enumerate(checkpoints):
            versions: ChannelVersions = stored.checkpoint.get("channel_versions", {})
            for channel, version in versions.items():
                cached = self.cache.values.get_((partition, ns, channel, version))
                if cached is not ABSENT:
                    if cached[0] == "b":
                        results[i][channel] = self.serde.loads_typed(cached[1])
                    elif cached[0] in ("d", "s"):
                        results[i][channel] = _handed_out(cached[0], cached[1])
                    continue
                want = (i, channel, str(version))
                (delta_wants if channel in stored.deltas else blob_wants).append(want)
        if blob_wants:
            keys = [blob_key(ns, ch, v) for _, ch, v in blob_wants]
            found = yield from self.store.get_items(partition, keys)
            now = time.time()
            for (i, channel, _), key in zip(blob_wants, keys, strict=True):
                item = found.get(key)
                original = checkpoints[i].checkpoint["channel_versions"][channel]
                if item is None or self.store.expired(item.raw, now):
                    if item is None:
                        self.cache.keep((partition, ns, channel, original), "n", None)
                    continue  # a version with no value (an empty channel)
                assert item.payload is not None
                results[i][channel] = self._load(item)
                self.cache.keep((partition, ns, channel, original), "b", item.payload)
        if delta_wants:
            chains = yield from self._read_deltas(partition, ns)
            folded: dict[tuple[str, str], tuple[Any, ...]] = {}
            # Oldest first (LangGraph's versions count up), so each fold starts from its
            # parent's: a page of checkpoints costs one pass over the thread, not one each.
            for i, channel, version in sorted(delta_wants, key=lambda w: w[2]):
                value = self._fold(
                    chains, channel, version, folded, "" if listing else partition, ns
                )
                kind = (
                    "s" if (channel, version) in chains and chains[(channel, version)][2] else "d"
                )
                if listing:
                    results[i][channel] = (
                        _DeltaSnapshot(list(value)) if kind == "s" else list(value)
                    )
                    continue
                results[i][channel] = _handed_out(kind, value)
                original = checkpoints[i].checkpoint["channel_versions"][channel]
                self.cache.keep((partition, ns, channel, original), kind, value)
        return results

    def _read_deltas(
        self, partition: str, ns: str
    ) -> Steps[dict[tuple[str, str], tuple[str | None, list[Any], bool]]]:
        """Every stored message-list version of namespace ``ns``: (channel, version) ->
        (parent version, operations)."""
        raws = yield from self.store.read_all(self.store.query(partition, prefix=delta_prefix(ns)))
        chains: dict[tuple[str, str], tuple[str | None, list[Any], bool]] = {}
        for item in self.store.assemble(raws).values():
            if item.kind != "d":
                continue
            # Items written before the key alone named them carry ``ch`` and ``ver``.
            _, channel, version = delta_fields(self.store.sort_key(item.raw))
            chains[(item.text("ch") or channel, item.text("ver") or version)] = (
                item.text("pv"),
                self._load(item),
                "sn" in item.raw,
            )
        return chains

    def _fold(
        self,
        chains: Mapping[tuple[str, str], tuple[str | None, list[Any], bool]],
        channel: str,
        version: str,
        folded: dict[tuple[str, str], tuple[Any, ...]] | None = None,
        partition: str = "",
        ns: str = "",
    ) -> tuple[Any, ...]:
        """The messages of ``channel`` at ``version``: its operations and its ancestors',
        folded from the nearest ancestor already known (in ``folded``, or cached for
        ``partition`` and ``ns``), else from the nearest remove-all. Added to ``folded``."""
        folded = {} if folded is None else folded
        chain: list[list[Any]] = []
        base: tuple[Any, ...] = ()
        current: str | None = version
        while current is not None:
            known = folded.get((channel, current))
            if known is None and partition:
                cached = self.cache.values.get_((partition, ns, channel, current))
                if cached is not ABSENT and cached[0] in ("d", "s"):
                    known = cached[1]
            if known is not None:
                base = known
                break
            found = chains.get((channel, current))
            if found is None:
                raise CorruptHistoryError(
                    f"channel {channel!r}: version {current!r} of its messages is missing"
                    f" (needed for version {version!r})"
                )
            parent, ops, _ = found
            chain.append(ops)
            if message_ops.starts_over(ops):
                break
            current = parent
        try:
            value = tuple(message_ops.fold(reversed(chain), base))
        except ValueError as exc:
            raise CorruptHistoryError(f"channel {channel!r} version {version!r}: {exc}") from exc
        folded[(channel, version)] = value
        return value

    def _info(self, partition: str, ns: str, checkpoint_id: str) -> Steps[CheckpointInfo | None]:
        """The summary of a checkpoint (cached, else read)."""
        cached = self.cache.infos.get_((partition, ns, checkpoint_id))
        if cached is not ABSENT:
            return cached  # type: ignore[no-any-return]
        stored = yield from self._read_checkpoint(partition, ns, checkpoint_id)
        if stored is None:
            return None
        info = CheckpointInfo(
            {k: v for k, v in stored.checkpoint.get("channel_versions", {}).items()},
            stored.deltas,
            stored.expires_at,
            stored.stored,
        )
        self.cache.infos.set_((partition, ns, checkpoint_id), info)
        return info

    def _parent_messages(
        self, partition: str, ns: str, channel: str, version: Any
    ) -> Steps[tuple[Any, ...]]:
        """The private messages (`ValueCache`) of a stored version of a message list."""
        cached = self.cache.values.get_((partition, ns, channel, version))
        if cached is not ABSENT and cached[0] in ("d", "s"):
            return cached[1]  # type: ignore[no-any-return]
        chains = yield from self._read_deltas(partition, ns)
        return self._fold(chains, channel, str(version))

    # -- writing --------------------------------------------------------------------------------

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> Steps[RunnableConfig]:
        """Store ``checkpoint``: changed channels first, the checkpoint item (the commit) last."""
        thread_id = _thread_id(config)
        partition = thread_key(thread_id)
        ns = config["configurable"].get("checkpoint_ns", "") or ""
        parent_id = config["configurable"].get("checkpoint_id")
        body: dict[str, Any] = dict(checkpoint)
        values: dict[str, Any] = body.pop("channel_values", {})
        parent = (yield from self._info(partition, ns, parent_id)) if parent_id else None
        if parent is not None and parent.expires_at is not None:
            expires_at: int | None = parent.expires_at
        else:
            expires_at = int(time.time()) + self.ttl if self.ttl else None
        versions: ChannelVersions = checkpoint.get("channel_versions", {})
        deltas = {
            ch
            for ch in (parent.deltas if parent else ())
            if ch not in new_versions and ch in versions
        }
        stored = {ch: v for ch, v in (parent.stored if parent else {}).items() if ch in versions}
        items: list[dict[str, Any]] = []
        cache_after: list[tuple[tuple[Any, ...], tuple[str, Any]]] = []
        for channel, version in new_versions.items():
            if channel not in values:  # a version without a value (an empty channel)
                cache_after.append(((partition, ns, channel, version), ("n", None)))
                continue
            value = values[channel]
            # A DeltaChannel's snapshot of a message list is stored as operations on its
            # previous snapshot: it does not rewrite the list either.
            snap = isinstance(value, _DeltaSnapshot) and message_ops.is_message_list(value.value)
            inner = value.value if snap else value
            if message_ops.is_message_list(inner):
                base = stored.get(channel)
                before: tuple[Any, ...] = ()
                if parent is not None and base is not None:
                    before = yield from self._parent_messages(partition, ns, channel, base)
                    ops = message_ops.diff(before, inner)
                    pointer: str | None = base
                    if message_ops.starts_over(ops):
                        pointer = None
                else:  # no parent list to build on: from an empty list
                    ops, pointer = message_ops.diff(None, inner), None
                delta_attrs: dict[str, Any] = {}  # the key names the channel and version
                if pointer is not None:
                    delta_attrs["pv"] = _s(pointer)
                if snap:
                    delta_attrs["sn"] = {"BOOL": True}
                stored[channel] = str(version)
                items.extend(
                    self.store.items(
                        partition,
                        delta_key(ns, channel, str(version)),
                        "d",
                        self.serde.dumps_typed(ops),
                        delta_attrs,
                        expires_at,
                    )
                )
                deltas.add(channel)
                # What the cache keeps: the parent's private messages and copies of the new
                # ones, never the caller's objects (a caller may change them after the put).
                private = tuple(message_ops.fold([message_ops.detached_ops(ops)], before))
                cache_after.append(
                    ((partition, ns, channel, version), ("s" if snap else "d", private))
                )
            else:
                stored.pop(channel, None)
                payload = self.serde.dumps_typed(value)
                items.extend(
                    self.store.items(
                        partition, blob_key(ns, channel, str(version)), "b", payload, {}, expires_at
                    )
                )
                cache_after.append(((partition, ns, channel, version), ("b", payload)))
        stored_metadata = get_checkpoint_metadata(config, metadata)
        attrs: dict[str, Any] = {"cid": _s(checkpoint["id"]), "ns": _s(ns)}
        if parent_id:
            attrs["par"] = _s(parent_id)
        run_id = stored_metadata.get("run_id")
        if isinstance(run_id, str) and run_id:
            attrs["run"] = _s(run_id)
        if deltas:
            attrs["dl"] = {"SS": sorted(deltas)}
        if stored:
            attrs["sv"] = {"M": {ch: _s(v) for ch, v in stored.items()}}
        commit = self.store.items(
            partition,
            checkpoint_key(ns, checkpoint["id"]),
            "cp",
            self.serde.dumps_typed({"checkpoint": body, "metadata": stored_metadata}),
            attrs,
            expires_at,
        )
        items.extend(commit[:-1])
        if items:
            yield from self.store.write(partition, items)
        yield from self.store.put(commit[-1])  # the commit: now readers see the checkpoint
        for key, (kind, value) in cache_after:
            self.cache.keep(key, kind, value)
        self.cache.infos.set_(
            (partition, ns, checkpoint["id"]),
            CheckpointInfo(dict(versions), frozenset(deltas), expires_at, stored),  # type: ignore[arg-type]
        )
        return _config(thread_id, ns, checkpoint["id"])

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> Steps[None]:
        """Store the writes of a task on a checkpoint, all or none (in one transaction, when
        they fit one): a write already stored under the same (task, index) is kept, except the
        special ones (errors, interrupts), which replace theirs."""
        thread_id = _thread_id(config)
        partition = thread_key(thread_id)
        ns = config["configurable"].get("checkpoint_ns", "") or ""
        checkpoint_id = config["configurable"]["checkpoint_id"]
        expires_at = None
        if self.ttl:
            info = yield from self._info(partition, ns, checkpoint_id)
            # LangGraph may store a task's writes while the put of their checkpoint is still
            # under way: then they expire ttl from now, after the checkpoint, never before.
            expires_at = info.expires_at if info is not None else None
            if expires_at is None:
                expires_at = int(time.time()) + self.ttl
        regular: list[list[Any]] = []
        special: list[list[Any]] = []
        for idx, (channel, value) in enumerate(writes):
            index = WRITES_IDX_MAP.get(channel, idx)
            (regular if index >= 0 else special).append([channel, index, value])
        parts: list[dict[str, Any]] = []
        headers: list[tuple[dict[str, Any], bool]] = []
        for group, keep_first in ((regular, True), (special, False)):
            if not group:
                continue
            first = min(index for _, index, _ in group)
            attrs = {"tid": _s(task_id), "path": _s(task_path), "cid": _s(checkpoint_id)}
            items = self.store.items(
                partition,
                write_key(ns, checkpoint_id, task_id, first),
                "w",
                self.serde.dumps_typed(group),
                attrs,
                expires_at,
            )
            parts.extend(items[:-1])
            headers.append((items[-1], keep_first))
        if not headers:
            return
        if parts:
            yield from self.store.write(partition, parts)
        yield from self._commit_writes(headers)

    def _commit_writes(self, headers: list[tuple[dict[str, Any], bool]]) -> Steps[None]:
        """Put the write items: the regular writes' only where none is stored yet (a task's
        writes are stored once), the special writes' over what is stored; both at once."""
        table = self.store.table_name
        range_name = self.store.range_name

        def action(item: dict[str, Any], keep_first: bool) -> dict[str, Any]:
            put: dict[str, Any] = {"TableName": table, "Item": item}
            if keep_first:
                put["ConditionExpression"] = "attribute_not_exists(#r)"
                put["ExpressionAttributeNames"] = {"#r": range_name}
            return put

        if len(headers) == 1:
            with contextlib.suppress(ConditionFailed):  # stored before: the first one stays
                yield from call("PutItem", **action(*headers[0]))
            return
        try:
            yield from call(
                "TransactWriteItems",
                TransactItems=[{"Put": action(h, keep)} for h, keep in headers],
            )
        except TransactionCanceled as canceled:
            if "ConditionalCheckFailed" not in canceled.codes:
                raise
            # The regular writes were stored by an earlier call: the special ones still
            # replace theirs.
            yield from self._commit_writes([(h, False) for h, keep in headers if not keep])

    # -- maintenance ----------------------------------------------------------------------------

    def delete_thread(self, thread_id: str) -> Steps[None]:
        partition = thread_key(thread_id)
        self.cache.drop(partition)
        raws = yield from self.store.read_all(
            self.store.query(partition, prefix="", keys_only=True)
        )
        keys = [self.store.sort_key(r) for r in raws]
        yield from self.store.delete(partition, [k for k in keys if is_thread_key(k)])
        self.cache.drop(partition)

    def delete_for_runs(self, run_ids: Sequence[str]) -> Steps[None]:
        """Delete the checkpoints of runs ``run_ids`` and their writes (a scan of the table's
        threads: runs are not indexed). Values they wrote stay: a later checkpoint may use them."""
        wanted = set(run_ids)
        if not wanted:
            return
        raws = yield from self.store.read_all(self.store.scan_threads(THREAD_PREFIX))
        doomed: dict[str, list[str]] = {}
        prefixes: dict[str, list[str]] = {}
        for raw in raws:
            if raw.get("k", {}).get("S") == "cp" and raw.get("run", {}).get("S") in wanted:
                partition = raw[self.store.hash_name]["S"]
                prefixes.setdefault(partition, []).append(self.store.sort_key(raw))
        for raw in raws:
            partition = raw[self.store.hash_name]["S"]
            key = self.store.sort_key(raw)
            if any(key == p or key.startswith(p + "#") for p in prefixes.get(partition, [])):
                doomed.setdefault(partition, []).append(key)
        for partition, keys in doomed.items():
            self.cache.drop(partition)
            yield from self.store.delete(partition, keys)

    def copy_thread(self, source: str, target: str) -> Steps[None]:
        """Copy every item of thread ``source`` to thread ``target`` (same sort keys)."""
        source_key, target_key = thread_key(source), thread_key(target)
        raws = yield from self.store.read_all(self.store.query(source_key, prefix=""))
        copies = [
            dict(raw, **{self.store.hash_name: {"S": target_key}})
            for raw in raws
            if is_thread_key(self.store.sort_key(raw))
        ]
        # Checkpoints last: a copy cut short shows no checkpoint whose values are missing.
        copies.sort(key=lambda r: r.get("k", {}).get("S") == "cp")
        self.cache.drop(target_key)
        yield from self.store.write(target_key, copies)

    def prune(self, thread_ids: Sequence[str], strategy: str) -> Steps[None]:
        """``keep_latest``: keep each namespace's newest checkpoint, its writes and the values
        it points at (with the message operations its message lists fold from); ``delete``:
        delete the threads."""
        if strategy == "delete":
            for thread_id in thread_ids:
                yield from self.delete_thread(thread_id)
            return
        if strategy != "keep_latest":
            raise ConfigurationError(f"unknown prune strategy {strategy!r}")
        for thread_id in thread_ids:
            partition = thread_key(thread_id)
            raws = yield from self.store.read_all(self.store.query(partition, prefix=""))
            raws = [r for r in raws if is_thread_key(self.store.sort_key(r))]
            items = self.store.assemble(raws)
            checkpoints = self._group(
                partition, [r for r in raws if self.store.sort_key(r).startswith("c#")]
            )
            keep: set[str] = set()
            latest: dict[str, _Stored] = {}
            for stored in checkpoints:
                latest.setdefault(stored.ns, stored)
            chains_by_ns: dict[str, dict[tuple[str, str], tuple[str | None, list[Any], bool]]] = {}
            for ns, stored in latest.items():
                ckey = checkpoint_key(ns, stored.checkpoint_id)
                keep.update(k for k in items if k == ckey or k.startswith(ckey + "#"))
                for channel, version in stored.checkpoint.get("channel_versions", {}).items():
                    if channel not in stored.deltas:
                        keep.add(blob_key(ns, channel, str(version)))
                        continue
                    if ns not in chains_by_ns:
                        chains_by_ns[ns] = yield from self._read_deltas(partition, ns)
                    current: str | None = str(version)
                    while current is not None:
                        keep.add(delta_key(ns, channel, current))
                        found = chains_by_ns[ns].get((channel, current))
                        if found is None or message_ops.starts_over(found[1]):
                            break
                        current = found[0]
            doomed = []
            for raw in raws:
                key = self.store.sort_key(raw)
                owner = raw["o"]["S"] if raw.get("k", {}).get("S") == "p" else key
                if owner not in keep:
                    doomed.append(key)
            self.cache.drop(partition)
            yield from self.store.delete(partition, doomed)

    # -- DeltaChannel ---------------------------------------------------------------------------

    def delta_history(
        self, config: RunnableConfig, channels: Sequence[str]
    ) -> Steps[dict[str, DeltaChannelHistory]]:
        """For each channel, the writes on the parent chain of the checkpoint ``config`` names
        since the nearest ancestor holding a value (the seed), oldest first.

        Requests: one keys-only query of each channel's stored versions, the checkpoints from
        the target down to the oldest seed in pages of one query, one BatchGetItem of the
        seeds: never one request per ancestor."""
        if not channels:
            return {}
        thread_id = _thread_id(config)
        partition = thread_key(thread_id)
        ns = config["configurable"].get("checkpoint_ns", "") or ""
        target_id = config["configurable"].get("checkpoint_id") or ""
        stored_versions: dict[str, set[str]] = {}
        for channel in channels:
            prefix = blob_key(ns, channel, "")
            raws = yield from self.store.read_all(
                self.store.query(partition, prefix=prefix, keys_only=True)
            )
            stored_versions[channel] = {
                self.store.sort_key(r)[len(prefix) :]
                for r in raws
                if "#p" not in self.store.sort_key(r)[len(prefix) :]
            }
        high = checkpoint_key(ns, target_id) + "#~" if target_id else checkpoint_prefix(ns) + "~"
        cursor = self.store.query(
            partition, low=checkpoint_prefix(ns), high=high, newest_first=True, page_size=200
        )
        seen: dict[str, _Stored] = {}
        newest: list[str] = []
        pending: list[dict[str, Any]] = []
        collected: dict[str, list[PendingWrite]] = {c: [] for c in channels}
        seeds: dict[str, tuple[_Stored, str]] = {}
        remaining = set(channels)
        current: str | None = target_id
        first = True
        while current is not None and remaining:
            while current not in seen and not cursor.done:
                found, pending = yield from self._next_checkpoints(partition, cursor, pending)
                for stored in found:
                    seen.setdefault(stored.checkpoint_id, stored)
                    newest.append(stored.checkpoint_id)
                if current == "" and newest:
                    current = newest[0]
            if current == "" or current not in seen:
                break
            ancestor = seen[current]
            current = ancestor.parent_id
            if first:  # the target's own writes are pending for the next step: not history
                first = False
                continue
            versions = ancestor.checkpoint.get("channel_versions", {})
            for task_id, channel, value, _, _ in reversed(ancestor.writes):
                if channel in remaining:
                    collected[channel].append((task_id, channel, value))
            for ch in list(remaining):
                if ch in versions and (
                    str(versions[ch]) in stored_versions[ch] or ch in ancestor.deltas
                ):
                    seeds[ch] = (ancestor, str(versions[ch]))
                    remaining.discard(ch)
        seed_values: dict[str, Any] = {}
        if seeds:
            by_checkpoint: dict[str, _Stored] = {}
            for stored, _ in seeds.values():
                by_checkpoint[stored.checkpoint_id] = stored
            group = list(by_checkpoint.values())
            values = yield from self._values(partition, ns, group)
            for ch, (stored, _) in seeds.items():
                value = values[group.index(stored)]
                if ch in value:
                    seed_values[ch] = value[ch]
        result: dict[str, DeltaChannelHistory] = {}
        for ch in channels:
            entry: DeltaChannelHistory = {"writes": list(reversed(collected[ch]))}
            if ch in seed_values:
                entry["seed"] = seed_values[ch]
            result[ch] = entry
        return result
