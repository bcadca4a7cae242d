"""A message list as events: the operations that turn one version of a list into the next.

LangGraph's ``add_messages`` reducer changes a list of messages in four ways only: it appends
messages with new ids, replaces a message by id (in place), removes a message by id, and
removes all messages. So each new version of such a list is stored as the operations that turn
its parent version into it (`diff`), and a version is read back by replaying the operations of
its ancestors, oldest first (`fold`). Pure code: no I/O, no serializer.

An operation is a small list: ``["a", [messages]]`` (append), ``["r", message]`` (replace by
id), ``["d", id]`` (remove by id), ``["x"]`` (remove all). A change the four cannot express
(a reordering, a message inserted in the middle) is stored as ``["x"]`` followed by the whole
list: a snapshot, never a wrong state.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from types import UnionType
from typing import Any, Final, Literal, Union, get_args, get_origin

from langchain_core.messages import BaseMessage

_new = object.__new__
_set = object.__setattr__
_deep = copy.deepcopy
_IMMUTABLE: Final = (str, bytes, int, float, bool, tuple, frozenset)
_UNIONS: Final = (Union, UnionType)
_MUTABLE_FIELDS: dict[type[BaseMessage], tuple[str, ...]] = {}

__all__ = [
    "APPEND",
    "REMOVE",
    "REMOVE_ALL",
    "REPLACE",
    "detached",
    "detached_ops",
    "diff",
    "fold",
    "is_message_list",
    "same",
]

APPEND: Final = "a"
REPLACE: Final = "r"
REMOVE: Final = "d"
REMOVE_ALL: Final = "x"

Op = list[Any]


def is_message_list(value: object) -> bool:
    """Whether ``value`` is a list the operations can describe: messages with unique str ids."""
    if not isinstance(value, list):
        return False
    seen: set[str] = set()
    for message in value:
        if not isinstance(message, BaseMessage) or not isinstance(message.id, str):
            return False
        if message.id in seen:
            return False
        seen.add(message.id)
    return True


def snapshot(new: Sequence[BaseMessage]) -> list[Op]:
    """The operations that make ``new`` from anything."""
    return [[REMOVE_ALL], [APPEND, list(new)]] if new else [[REMOVE_ALL]]


def diff(parent: Sequence[BaseMessage] | None, new: Sequence[BaseMessage]) -> list[Op]:
    """The operations that turn ``parent`` (None: no parent version) into ``new``.

    Both must satisfy `is_message_list`. ``fold([..., diff(p, n)])`` of a chain folding to
    ``p`` is ``n`` (the property test checks it)."""
    if parent is None:
        return [[APPEND, list(new)]] if new else []
    new_ids = [m.id for m in new]
    new_set = set(new_ids)
    by_id = {m.id: m for m in parent}
    kept = [m.id for m in parent if m.id in new_set]
    if parent and not kept:
        return snapshot(new)
    if new_ids[: len(kept)] != kept:
        return snapshot(new)  # an order add_messages does not make
    ops: list[Op] = [[REMOVE, m.id] for m in parent if m.id not in new_set]
    ops.extend([REPLACE, m] for m in new[: len(kept)] if not same(m, by_id[m.id]))
    added = list(new[len(kept) :])
    if added:
        ops.append([APPEND, added])
    return ops


def fold(chain: Iterable[Sequence[Op]], base: Sequence[BaseMessage] = ()) -> list[BaseMessage]:
    """The list the operation lists of ``chain`` (oldest first) make from ``base`` (by default
    an empty list).

    A dict keeps insertion order: replacing a key keeps its place, a new key goes last, as
    ``add_messages`` does. An operation that cannot apply (a replace or remove of an id that is
    not there, an unknown kind) raises ValueError: stored events that are no history."""
    state: dict[str, BaseMessage] = {m.id: m for m in base}  # type: ignore[misc]
    for ops in chain:
        for op in ops:
            kind = op[0]
            if kind == APPEND:
                for message in op[1]:
                    state[message.id] = message
            elif kind == REPLACE:
                if op[1].id not in state:
                    raise ValueError(f"replace of message {op[1].id!r}, which is not there")
                state[op[1].id] = op[1]
            elif kind == REMOVE:
                if state.pop(op[1], None) is None:
                    raise ValueError(f"removal of message {op[1]!r}, which is not there")
            elif kind == REMOVE_ALL:
                state = {}
            else:
                raise ValueError(f"unknown message operation {kind!r}")
    return list(state.values())


def starts_over(ops: Sequence[Op]) -> bool:
    """Whether ``ops`` begin with remove-all: older versions cannot change the result."""
    return bool(ops) and ops[0][0] == REMOVE_ALL


def _may_hold_containers(cls: type[BaseMessage]) -> tuple[str, ...]:
    """The fields of message class ``cls`` whose values may be dicts or lists: every field
    but those annotated as text, numbers, booleans or literals (or None)."""
    found = _MUTABLE_FIELDS.get(cls)
    if found is None:
        plain = {str, int, float, bool, type(None)}
        names = []
        for name, info in cls.model_fields.items():
            annotation = info.annotation
            options = get_args(annotation) if get_origin(annotation) in _UNIONS else (annotation,)
            if not all(o in plain or get_origin(o) is Literal for o in options):
                names.append(name)
        found = _MUTABLE_FIELDS[cls] = tuple(names)
    return found


def detached(message: BaseMessage) -> BaseMessage:
    """A copy of ``message`` that shares nothing mutable with it (its fields' dicts and lists
    are copied, deeply when not empty): changing one never changes the other.

    Built directly (a copy of ``__dict__``, then of the fields that may hold containers, and
    the pydantic bookkeeping): a read hands out a copy of every message of the state, so this
    runs n times a read; ``copy.copy`` or ``model_copy(deep=True)`` cost several times more."""
    fields = message.__dict__.copy()
    for name in _may_hold_containers(type(message)):
        value = fields.get(name)
        if type(value) is dict:
            fields[name] = _deep(value) if value else {}
        elif type(value) is list:
            fields[name] = _deep(value) if value else []
        elif value is not None and not isinstance(value, _IMMUTABLE):
            fields[name] = _deep(value)
    clone = _new(type(message))
    _set(clone, "__dict__", fields)
    _set(clone, "__pydantic_fields_set__", set(message.__pydantic_fields_set__))
    extra = message.__pydantic_extra__
    _set(clone, "__pydantic_extra__", _deep(extra) if extra else None if extra is None else {})
    private = message.__pydantic_private__
    _set(clone, "__pydantic_private__", None if private is None else _deep(private))
    return clone


def same(a: BaseMessage, b: BaseMessage) -> bool:
    """``a == b``, quicker for the usual case: the same object, or a copy (`detached`) whose
    fields compare equal (strings shared with the original compare by identity)."""
    if a is b:
        return True
    if type(a) is type(b) and a.__dict__ == b.__dict__:
        return a.__pydantic_extra__ == b.__pydantic_extra__
    return a == b


def detached_ops(ops: Sequence[Op]) -> list[Op]:
    """``ops`` with every message they carry `detached` (ids and kinds as they are)."""
    out: list[Op] = []
    for op in ops:
        if op[0] == APPEND:
            out.append([APPEND, [detached(m) for m in op[1]]])
        elif op[0] == REPLACE:
            out.append([REPLACE, detached(op[1])])
        else:
            out.append(list(op))
    return out
