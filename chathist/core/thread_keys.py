"""Where a LangGraph thread's items live in an event-layout table. Pure code.

A thread is one partition, ``lg#<thread_id>``, of a table made by `chathist.create_table`. Its
sort keys all start with a letter, so no read of a chat session can meet them, even a session
named ``lg#...``: a session's reads ask only for 20-digit sequence numbers and ``!`` stages.

====================================  ==========================================================
sort key                              item
====================================  ==========================================================
``c#<ns>#<checkpoint id>``            a checkpoint: the commit; readers trust nothing else
``c#<ns>#<checkpoint id>#w#<t>#<i>``  write ``i`` of task ``t`` pending on that checkpoint
``b#<ns>#<channel>#<version>``        a channel's value at a version (a blob)
``d#<ns>#<channel>#<version>``        a message list's version, as operations on its parent's
``<any of these>#p<n>``               part ``n`` of a payload too large for one item
====================================  ==========================================================

A namespace, channel, version, task id or checkpoint id is escaped (`escape`) so that ``#``
only ever separates fields: one namespace's prefix is never another's.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "PART_WIDTH",
    "SORT_PREFIXES",
    "THREAD_PREFIX",
    "blob_key",
    "checkpoint_key",
    "checkpoint_prefix",
    "chunks",
    "delta_fields",
    "delta_key",
    "delta_prefix",
    "escape",
    "is_thread_key",
    "part_key",
    "parts_prefix",
    "thread_key",
    "unescape",
    "write_key",
]

THREAD_PREFIX: Final = "lg#"
"""Start of a thread's partition key."""
PART_WIDTH: Final = 6
"""Digits of a part number (a payload of up to a million parts)."""


SORT_PREFIXES: Final = ("b#", "c#", "d#")
"""The first characters of every sort key of a thread's items (parts included)."""


def is_thread_key(key: str) -> bool:
    """Whether sort key ``key`` is a thread item's (a chat session's items share no prefix)."""
    return key.startswith(SORT_PREFIXES)


def escape(field: str) -> str:
    """``field`` with ``%`` and ``#`` escaped, so ``#`` can separate fields."""
    return field.replace("%", "%25").replace("#", "%23")


def thread_key(thread_id: str) -> str:
    """The partition key of thread ``thread_id``."""
    return THREAD_PREFIX + thread_id


def checkpoint_prefix(ns: str) -> str:
    """The start of every checkpoint sort key of namespace ``ns``."""
    return f"c#{escape(ns)}#"


def checkpoint_key(ns: str, checkpoint_id: str) -> str:
    return checkpoint_prefix(ns) + escape(checkpoint_id)


def write_key(ns: str, checkpoint_id: str, task_id: str, idx: int) -> str:
    return f"{checkpoint_key(ns, checkpoint_id)}#w#{escape(task_id)}#{idx}"


def blob_key(ns: str, channel: str, version: str) -> str:
    return f"b#{escape(ns)}#{escape(channel)}#{escape(version)}"


def delta_prefix(ns: str) -> str:
    """The start of every message-list version's sort key in namespace ``ns``."""
    return f"d#{escape(ns)}#"


def delta_key(ns: str, channel: str, version: str) -> str:
    return f"{delta_prefix(ns)}{escape(channel)}#{escape(version)}"


def unescape(field: str) -> str:
    """The field `escape` made ``field`` from."""
    return field.replace("%23", "#").replace("%25", "%")


def delta_fields(key: str) -> tuple[str, str, str]:
    """The namespace, channel and version of a message-list version's sort key (`delta_key`):
    its item need not repeat them."""
    kind, ns, channel, version = key.split("#")
    if kind != "d":
        raise ValueError(f"{key!r} is no message-list version's key")
    return unescape(ns), unescape(channel), unescape(version)


def parts_prefix(key: str) -> str:
    """The start of the sort keys of ``key``'s parts (they sort right after it)."""
    return f"{key}#p"


def part_key(key: str, index: int) -> str:
    return f"{parts_prefix(key)}{index:0{PART_WIDTH}d}"


def chunks(data: bytes, size: int) -> list[bytes]:
    """``data`` cut into slices of at most ``size`` bytes (at least one slice)."""
    if size <= 0:
        raise ValueError("a chunk holds at least one byte")
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]
