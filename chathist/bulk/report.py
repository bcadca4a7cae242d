"""What a bulk run did: typed counters, the sessions with problems, and the interruption.

Workers add to the report from several threads at once, always through `Report.add` (a
`Counts` whose fields are the counters, so a misspelt counter is a type error) or
`Report.problem` (a `Problem` kind, a session and why).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any, Final

from chathist.core.events import FORMAT_VERSION
from chathist.core.sizes import write_units
from chathist.dynamo.capacity import Capacity

__all__ = [
    "MAX_LISTED",
    "Counts",
    "MigrationInterrupted",
    "Problem",
    "ProgressCallback",
    "Report",
]

MAX_LISTED: Final = 1000
"""Most sessions a report lists per problem kind (all are counted)."""


@dataclass(kw_only=True)
class Counts:
    """The counters of a run; one session's share is added with `Report.add`."""

    scanned_items: int = 0
    sessions: int = 0
    """Sessions seen in the source (every outcome)."""
    migrated: int = 0
    """Sessions written by this run (or, in a dry run, that would be)."""
    already: int = 0
    """Sessions found complete in the target (nothing written)."""
    expired: int = 0
    empty: int = 0
    conflicts: int = 0
    failures: int = 0
    too_large: int = 0
    verified: int = 0
    differences: int = 0
    deleted_sources: int = 0
    overwritten: int = 0
    """Rollback with ``overwrite``: sessions whose differing list item was replaced."""
    caught_up: int = 0
    """Migrated sessions whose legacy list grew since: the new tail was moved (catch-up)."""
    cleared: int = 0
    """Migrated sessions cleared in the event table since: their legacy list is not moved."""
    diverged: int = 0
    """Migrated sessions whose legacy list no longer starts with what was migrated."""
    messages: int = 0
    items_written: int = 0
    payload_bytes: int = 0
    source_bytes: int = 0
    estimated_wcu: float = 0.0


class Problem(str, Enum):
    """Why a session is listed in a report. The value names its counter and its key in
    `Report.problems` and in the JSON report. `CAUGHT_UP` and `CLEARED` are listed so that
    each session's outcome is reported, but are no problem (`Report.ok`)."""

    CONFLICT = "conflicts"
    FAILURE = "failures"
    TOO_LARGE = "too_large"
    DIFFERENCE = "differences"
    OVERWRITTEN = "overwritten"
    DIVERGED = "diverged"
    CAUGHT_UP = "caught_up"
    CLEARED = "cleared"

    @property
    def one(self) -> Counts:
        """One session counted under this problem."""
        counts = Counts()
        setattr(counts, self.value, 1)
        return counts


@dataclass
class Report(Counts):
    """A run's counters (`Counts`, added to by every worker thread) and the sessions with
    problems."""

    direction: str
    source: str
    target: str
    dry_run: bool = False
    verify: bool = False
    format_version: int = FORMAT_VERSION
    estimated_items: int | None = None
    """The scanned table's item count as DynamoDB last refreshed it (every few hours)."""
    estimated_sessions: int | None = None
    """Sessions expected (the list table's item count, when it holds nothing else)."""
    interrupted: bool = False
    """The run was stopped (Ctrl-C) before it saw every session."""
    capacity: Capacity = field(default_factory=Capacity)
    limiter_units: float = 0.0
    limiter_wait_seconds: float = 0.0
    started: float = field(default_factory=time.monotonic)
    elapsed: float = 0.0
    problems: dict[Problem, list[tuple[str, str]]] = field(default_factory=dict)
    """Sessions listed by kind (at most `MAX_LISTED` each)."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, counts: Counts) -> None:
        """Add ``counts`` to the counters, thread-safely."""
        with self._lock:
            for counter in fields(Counts):
                name = counter.name
                setattr(self, name, getattr(self, name) + getattr(counts, name))

    def problem(self, kind: Problem, session: str, detail: str) -> None:
        """Count ``session`` under ``kind`` and list it with ``detail``."""
        self.add(kind.one)
        with self._lock:
            listed = self.problems.setdefault(kind, [])
            if len(listed) < MAX_LISTED:
                listed.append((session, detail))

    def count(self, kind: Problem) -> int:
        """How many sessions were counted under ``kind``."""
        count: int = getattr(self, kind.value)
        return count

    @property
    def wcu_per_message(self) -> float | None:
        """Write units per message written (the service's prices: DynamoDB Local under-reports
        transactions), to compare with `source_item_wcu`."""
        return self.estimated_wcu / self.messages if self.messages else None

    @property
    def source_item_wcu(self) -> float | None:
        """Write units of the mean source item: what LangChain's list layout pays for each
        append to a session of that size (it rewrites the whole item)."""
        if not self.sessions or not self.source_bytes:
            return None
        return float(write_units(round(self.source_bytes / self.sessions)))

    @property
    def ok(self) -> bool:
        return not (
            self.conflicts or self.failures or self.too_large or self.differences or self.diverged
        )

    def as_dict(self) -> dict[str, Any]:
        """The report as plain JSON-able data."""
        data: dict[str, Any] = {
            "direction": self.direction,
            "source": self.source,
            "target": self.target,
            "dry_run": self.dry_run,
            "verify": self.verify,
            "format_version": self.format_version,
            "estimated_items": self.estimated_items,
            "estimated_sessions": self.estimated_sessions,
        }
        data.update((counter.name, getattr(self, counter.name)) for counter in fields(Counts))
        data.update(
            interrupted=self.interrupted,
            limiter_units=self.limiter_units,
            limiter_wait_seconds=self.limiter_wait_seconds,
            elapsed=self.elapsed,
            wcu_per_message=self.wcu_per_message,
            source_item_wcu=self.source_item_wcu,
            consumed_wcu=self.capacity.write_units,
            consumed_rcu=self.capacity.read_units,
            requests=self.capacity.requests,
            problems={
                kind.value: [list(p) for p in listed] for kind, listed in self.problems.items()
            },
        )
        return data


ProgressCallback = Callable[[Report], None]
"""Called by the workers after each session, with the report so far."""


class MigrationInterrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C once its workers finished their sessions; ``report`` counts what
    was done (running the same migration again resumes it)."""

    def __init__(self, report: Report) -> None:
        super().__init__("interrupted")
        self.report = report
