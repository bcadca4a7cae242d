"""Comparing the target with the source: message lists, a session's state in the event table,
and the read-back of a stored session that a check folds."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from langchain_core.messages import BaseMessage, message_to_dict

from chathist.core.events import Event
from chathist.core.fold import fold
from chathist.core.steps import Steps
from chathist.dynamo.event_store import EventStore

__all__ = [
    "Migrated",
    "SessionState",
    "Stored",
    "compare_messages",
    "migrated_part",
    "probe_state",
    "read_session",
    "state_of",
]

Stored = tuple[list[Event], dict[str, list[Event]]]
"""A session's sequence events (oldest first) and the staged events of each of its commits."""


class SessionState(Enum):
    """Where a session's migration stands in the target partition."""

    NEW = "new"
    """Nothing of ours at the end of the sequence: write it (stages of an interrupted run of
    the same content are found and reused, as they carry the same writer id)."""
    DONE = "done"
    """The last event of the plan is there and ours (the final request is atomic)."""
    CONFLICT = "conflict"
    """The partition holds other events."""


def compare_messages(expected: Sequence[BaseMessage], found: Sequence[BaseMessage]) -> str | None:
    """None if both lists hold the same messages, else a short description of the first change."""
    if len(expected) != len(found):
        return f"{len(found)} messages instead of {len(expected)}"
    for index, (want, got) in enumerate(zip(expected, found, strict=True)):
        want_dict, got_dict = message_to_dict(want), message_to_dict(got)
        if want_dict != got_dict:
            if want_dict["type"] != got_dict["type"]:
                return f"message {index} is a {got.type} message, the source has a {want.type}"
            fields = sorted(
                name
                for name in set(want_dict["data"]) | set(got_dict["data"])
                if want_dict["data"].get(name) != got_dict["data"].get(name)
            )
            return f"message {index} ({want.type}) differs in {', '.join(fields)}"
    return None


def state_of(events: Sequence[Event], last_seq: int, writer: str) -> SessionState:
    """The state from the whole sequence of the target partition: done when the event numbered
    ``last_seq`` (a plan's last) is there and written by ``writer``."""
    if not events:
        return SessionState.NEW
    for event in events:
        if event.seq == last_seq:
            return SessionState.DONE if event.writer == writer else SessionState.CONFLICT
    return SessionState.CONFLICT


def probe_state(store: EventStore, session: str, last_seq: int, writer: str) -> Steps[SessionState]:
    """`state_of` from the newest event of the partition (one small read; a second one if the
    application appended after an earlier migration)."""
    newest = yield from store.newest(session)
    if newest is None:
        return SessionState.NEW
    seq, newest_writer, _ = newest
    if newest_writer == writer and seq == last_seq:
        return SessionState.DONE
    if seq > last_seq and (yield from store.writer_of(session, last_seq)) == writer:
        return SessionState.DONE  # migrated earlier; the application has appended since
    return SessionState.CONFLICT


def read_session(store: EventStore, session: str, upto: int | None = None) -> Steps[Stored]:
    """The sequence events of ``session`` (numbered up to ``upto``), oldest first, and the staged
    events of each commit among them: what chathist's fold reads. Only sequence keys are read,
    so a list-layout item sharing the partition (same-table migration) is never met."""
    below = None if upto is None else upto + 1
    cursor = store.sequence(session, newest_first=False, below=below)
    events: list[Event] = []
    while (page := (yield from cursor.next_page())) is not None:
        events.extend(store.event(raw) for raw in page)
    stages: dict[str, list[Event]] = {}
    for commit in events:
        if commit.kind != "commit" or commit.stage is None:
            continue
        staged: list[Event] = []
        cursor = store.staged(session, commit.stage)
        while (page := (yield from cursor.next_page())) is not None:
            staged.extend(store.event(raw) for raw in page)
        stages[commit.stage] = sorted(staged, key=lambda event: event.seq)
    return events, stages


@dataclass(frozen=True)
class Migrated:
    """What a session's partition holds of the bulk migration's writes."""

    messages: list[BaseMessage]
    """The messages of those writes, in sequence order: the legacy messages moved so far."""
    events: list[Event]
    """Their sequence events, oldest first."""
    cleared: bool
    """A clear lies above the first of them (or, if there are none, anywhere): the session was
    cleared, and its erased events no longer say what was moved."""


def _writes(events: Sequence[Event], mine: bool, prefix: str) -> list[list[Event]]:
    """The writes of ``events`` (each a contiguous run of the sequence under one writer id)
    whose writer starts with ``prefix`` (``mine``) or carries another id (not ``mine``)."""
    writes: list[list[Event]] = []
    for event in events:
        if event.writer is None or event.writer.startswith(prefix) != mine:
            continue
        last = writes[-1][-1] if writes else None
        if last is not None and last.writer == event.writer and last.seq == event.seq - 1:
            writes[-1].append(event)
        else:
            writes.append([event])
    return writes


def held_by_others(stored: Stored, prefix: str, tail: Sequence[BaseMessage]) -> int | None:
    """The index of the first message of ``tail`` that a writer other than the migration
    already stored in the partition, else None. A rollback writes a session's whole history,
    the application's messages included, back to the legacy item: those come back as the
    legacy list's tail, and moving them would store them twice.
    `CorruptHistoryError` if another writer's write does not fold."""
    events, stages = stored
    held = Counter(
        _key(message)
        for write in _writes(events, False, prefix)
        for message in fold(write, stages=stages)
    )
    for index, message in enumerate(tail):
        if held[_key(message)]:
            return index
    return None


def _key(message: BaseMessage) -> str:
    return json.dumps(message_to_dict(message), sort_keys=True, default=str)


def migrated_part(stored: Stored, prefix: str) -> Migrated:
    """The events of ``stored`` written by writers whose id starts with ``prefix`` (each write
    is a contiguous run of the sequence), folded write by write, not expiry-filtered: what
    earlier runs moved, whatever other writers appended between them.
    `CorruptHistoryError` if a write's events do not fold."""
    events, stages = stored
    writes = _writes(events, True, prefix)
    first = writes[0][0].seq if writes else -1
    cleared = any(event.kind == "clear" and event.seq > first for event in events)
    messages = [m for write in writes for m in fold(write, stages=stages)]
    return Migrated(messages, [e for write in writes for e in write], cleared)
