"""The parallel-scan run: one worker thread per scan segment, a shared report, write limiter
and stop flag, and a capacity meter per worker.

A worker reads its segment through the request path (`Sender.items` of a `SegmentCursor`) and
handles one session at a time. The first error of any worker stops the others (each finishes
the session it is on) and is raised; Ctrl-C does the same and raises `MigrationInterrupted`
with the report of what was done.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from chathist.bulk.config import MigrationConfig
from chathist.bulk.limiter import WriteLimiter
from chathist.bulk.report import Counts, MigrationInterrupted, Problem, ProgressCallback, Report
from chathist.core.steps import Steps
from chathist.dynamo.binding import Binding
from chathist.dynamo.capacity import Capacity, CapacityMeter
from chathist.dynamo.client import Sender
from chathist.dynamo.event_store import EventStore
from chathist.dynamo.paging import Cursor
from chathist.errors import ChatHistoryError, ConfigurationError, TableError

__all__ = ["Run", "SegmentCursor", "Worker"]

T = TypeVar("T")


class SegmentCursor(Cursor):
    """The pages of one scan segment, counted into the run's report, until the run stops."""

    def __init__(self, run: Run, params: dict[str, Any]) -> None:
        super().__init__("Scan", params)
        self.run = run

    def next_page(self) -> Steps[list[dict[str, Any]] | None]:
        if self.run.stop.is_set():
            return None
        before = self.scanned
        page = yield from super().next_page()
        self.run.report.add(Counts(scanned_items=self.scanned - before))
        return page


class Run:
    """One run: its settings, report, limiter and stop flag, shared by the worker threads."""

    def __init__(
        self, config: MigrationConfig, report: Report, on_progress: ProgressCallback | None
    ) -> None:
        if config.segments < 1:
            raise ConfigurationError("segments must be at least 1")
        self.config = config
        self.report = report
        self.on_progress = on_progress
        self.limiter = WriteLimiter(config.max_wcu) if config.max_wcu else None
        self.stop = threading.Event()
        self._meters: list[CapacityMeter] = []
        self._meters_lock = threading.Lock()

    def meter(self) -> CapacityMeter:
        """A new meter for one worker's requests, counted in the report."""
        meter = CapacityMeter()
        with self._meters_lock:
            self._meters.append(meter)
        return meter

    def capacity(self) -> Capacity:
        with self._meters_lock:
            meters = list(self._meters)
        total = Capacity()
        for meter in meters:
            total = total + meter.total
        return total

    def scan(
        self, sender: Sender, params: dict[str, Any], segment: int
    ) -> Iterator[dict[str, Any]]:
        """The items of segment ``segment`` of the Scan ``params``, until the run stops."""
        total = self.config.segments
        cursor = SegmentCursor(self, dict(params, Segment=segment, TotalSegments=total))
        for item in sender.items(cursor):
            if self.stop.is_set():
                return
            yield item

    def write(self, sender: Sender, estimate: float, steps: Steps[T]) -> T:
        """Run the write ``steps`` (estimated at ``estimate`` write units) through the limiter,
        which is then debited by what the sender's meter saw them consume."""
        if self.limiter is None:
            return sender.run(steps)
        self.limiter.acquire(estimate)
        before = sender.meter.total.write_units
        try:
            return sender.run(steps)
        finally:
            self.limiter.settle(estimate, sender.meter.total.write_units - before)

    def progress(self) -> None:
        """Tell the progress callback (after each session)."""
        if self.on_progress is not None:
            self.report.capacity = self.capacity()
            self.report.elapsed = time.monotonic() - self.report.started
            self.on_progress(self.report)

    def run_segments(self, work: Callable[[int], None]) -> None:
        """Run ``work(segment)`` for every segment in its own thread; propagate the first error,
        a KeyboardInterrupt as `MigrationInterrupted` (after the workers stopped)."""
        pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.config.segments, thread_name_prefix="chathist-migrate"
        )
        futures = [pool.submit(work, s) for s in range(self.config.segments)]
        try:
            try:
                for future in concurrent.futures.as_completed(futures):
                    future.result()
            except BaseException:
                self.stop.set()
                raise
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
                self.finish()
        except KeyboardInterrupt as exc:
            self.report.interrupted = True
            raise MigrationInterrupted(self.report) from exc

    def finish(self) -> None:
        """Put the totals into the report."""
        report = self.report
        report.capacity = self.capacity()
        report.elapsed = time.monotonic() - report.started
        if self.limiter is not None:
            report.limiter_units = self.limiter.consumed
            report.limiter_wait_seconds = self.limiter.waited


class Worker:
    """What one worker thread holds: the run, a sender for the source and the target table
    (sharing the worker's meter) and the event store of the event-layout side."""

    def __init__(self, run: Run, source: Binding, target: Binding, store: EventStore) -> None:
        self.run = run
        self.config = run.config
        self.report = run.report
        meter = run.meter()
        self.source = Sender(source, meter)
        self.target = Sender(target, meter)
        self.store = store

    def handle(self, session: str, work: Callable[[], None]) -> None:
        """Do one session's ``work`` and count the session. A table error stops the run; any
        other chathist error, or data that cannot be converted, is the session's failure."""
        try:
            work()
        except TableError:
            raise
        except (ChatHistoryError, ValueError, TypeError) as exc:
            self.report.problem(Problem.FAILURE, session, f"{type(exc).__name__}: {exc}")
        finally:
            self.report.add(Counts(sessions=1))
