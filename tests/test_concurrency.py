"""Load and concurrency on DynamoDB Local: many writers (threads and processes) on one session,
readers during the writes, many sessions at once, one history shared by threads.

After each run: every message is present exactly once, each writer's messages are in its order,
each append's messages are adjacent, no item is left over, and every history a reader saw while
the writes went on was a prefix of the final one. Sizes are CI-sized; ``--soak`` runs larger ones.
"""

from __future__ import annotations

import itertools
import multiprocessing
import random
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from chathist import DynamoDBChatMessageHistory
from tests.helpers import partition_items
from tests.reliability import (
    LOAD_APPEND_ATTEMPTS,
    RaceCounter,
    as_messages,
    install,
    note,
    process_writer,
    record,
    writer_messages,
)

SECTION = "concurrency"


@pytest.fixture(scope="session", autouse=True)
def _reliability_report(request: pytest.FixtureRequest) -> None:
    install(request)


@dataclass(frozen=True)
class Load:
    threads: int
    processes: int
    readers: int
    per_writer: int


CI_LOAD = Load(threads=16, processes=4, readers=3, per_writer=20)
SOAK_LOAD = Load(threads=16, processes=4, readers=4, per_writer=150)


def _history(
    table: str, endpoint: str | None, region: str | None, session: str, **options: Any
) -> Any:
    return DynamoDBChatMessageHistory(
        table,
        session,
        endpoint_url=endpoint,
        region_name=region,
        max_append_attempts=LOAD_APPEND_ATTEMPTS,
        **options,
    )


def _contents(history: DynamoDBChatMessageHistory) -> list[str]:
    return [str(m.content) for m in history.messages]


def check_final(
    test: str,
    final: list[str],
    appends: dict[str, list[list[str]]],
) -> None:
    """Record and assert: each expected message once, writers' order kept, appends adjacent."""
    expected = [c for batches in appends.values() for batch in batches for c in batch]
    seen = Counter(final)
    lost = sum(1 for c in expected if seen[c] == 0)
    duplicated = sum(n - 1 for n in seen.values() if n > 1)
    unexpected = [c for c in seen if c not in set(expected)]
    position = {c: i for i, c in enumerate(final)}
    out_of_order = 0
    split = 0
    for batches in appends.values():
        placed = [position[c] for batch in batches for c in batch if c in position]
        out_of_order += sum(1 for a, b in itertools.pairwise(placed) if a > b)
        for batch in batches:
            at = [position.get(c) for c in batch]
            if None not in at and at != list(range(at[0], at[0] + len(at))):  # type: ignore[operator]
                split += 1
    record(SECTION, test, "messages appended", len(expected))
    record(SECTION, test, "lost", lost)
    record(SECTION, test, "duplicated", duplicated)
    record(SECTION, test, "out of order", out_of_order)
    record(SECTION, test, "appends split apart", split)
    assert (lost, duplicated, unexpected, out_of_order, split) == (0, 0, [], 0, 0)
    assert len(final) == len(expected)


def check_reads(test: str, observed: list[list[str]], final: list[str]) -> None:
    """Every history a reader saw must be a prefix of the final one."""
    bad = [seen for seen in observed if final[: len(seen)] != seen]
    record(SECTION, test, "reads checked for prefix consistency", len(observed))
    record(SECTION, test, "non-prefix reads", len(bad))
    assert not bad, f"{len(bad)} reads were not a prefix of the final history, e.g. {bad[0]}"


def count_items(boto3_client: Any, table: str, session: str) -> int:
    """Items stored under ``session`` (every kind of event)."""
    return len(partition_items(boto3_client, table, session))


class Readers:
    """Threads that read a session over and over until stopped, keeping what they saw."""

    def __init__(self, histories: list[DynamoDBChatMessageHistory]) -> None:
        self.stop = threading.Event()
        self.observed: list[list[str]] = []
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(h,)) for h in histories]

    def _run(self, history: DynamoDBChatMessageHistory) -> None:
        try:
            while not self.stop.is_set():
                seen = _contents(history)
                with self._lock:
                    self.observed.append(seen)
                self.stop.wait(0.02)
        except BaseException as exc:
            self.errors.append(exc)

    def __enter__(self) -> Readers:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join()


def _run_threads(targets: list[Any]) -> list[BaseException]:
    errors: list[BaseException] = []

    def guarded(target: Any) -> None:
        try:
            target()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(t,)) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


@pytest.fixture
def processes() -> Iterator[list[multiprocessing.process.BaseProcess]]:
    """Spawned processes of a test, killed at the end if still running."""
    started: list[multiprocessing.process.BaseProcess] = []
    yield started
    for process in started:
        if process.is_alive():
            process.kill()
        process.join(5)


def _one_session_under_load(
    load: Load,
    test: str,
    table_name: str,
    endpoint: str | None,
    region: str | None,
    boto3_client: Any,
    processes: list[multiprocessing.process.BaseProcess],
    **options: Any,
) -> None:
    session = f"load-{uuid.uuid4().hex[:8]}"
    context = multiprocessing.get_context("spawn")
    ready: Any = context.Queue()
    results: Any = context.Queue()
    go = context.Event()
    appends: dict[str, list[list[str]]] = {}

    for p in range(load.processes):
        writer = f"p{p}"
        appends[writer] = writer_messages(writer, load.per_writer)
        process = context.Process(
            target=process_writer,
            args=(
                table_name,
                endpoint,
                region,
                session,
                writer,
                load.per_writer,
                ready,
                go,
                results,
                options,
            ),
        )
        process.start()
        processes.append(process)

    writers: list[Any] = []
    for t in range(load.threads):
        writer = f"t{t}"
        appends[writer] = writer_messages(writer, load.per_writer)
        history = _history(table_name, endpoint, region, session, **options)

        def write(history: DynamoDBChatMessageHistory = history, writer: str = writer) -> None:
            go.wait()
            for contents in appends[writer]:
                history.add_messages(as_messages(contents))

        writers.append(write)

    for _ in range(load.processes):
        ready.get(timeout=120)  # every process has imported chathist and checked the table
    readers = [
        _history(table_name, endpoint, region, session, **options) for _ in range(load.readers)
    ]
    client = readers[0].client  # the threads' shared client
    with RaceCounter(client) as races, Readers(readers) as reading:
        go.set()
        errors = _run_threads(writers)
        outcomes = [results.get(timeout=300) for _ in range(load.processes)]
    for process in processes:
        process.join(60)
    assert not errors, errors
    assert not reading.errors, reading.errors
    failed = [o for o in outcomes if o[1] is not None]
    assert not failed, failed

    final = _contents(_history(table_name, endpoint, region, session, **options))
    record(SECTION, test, "writer threads", load.threads)
    record(SECTION, test, "writer processes", load.processes)
    record(SECTION, test, "reader threads", load.readers)
    record(SECTION, test, "sessions", 1)
    record(SECTION, test, "append races lost and retried", races.lost + sum(o[2] for o in outcomes))
    streak = max([races.longest_streak, *(o[3] for o in outcomes)])
    record(SECTION, test, "longest losing streak of one append", streak)
    if options.get("layout") == "list":
        note(SECTION, test, "Each append is one atomic list_append update: no race to lose.")
    else:
        note(
            SECTION,
            test,
            f"Writers ran with max_append_attempts={LOAD_APPEND_ATTEMPTS} (the default) and the"
            " default 30 s append_timeout; past either an append raises ConcurrencyError"
            " (nothing written).",
        )
    check_final(test, final, appends)
    check_reads(test, reading.observed, final)
    stored = count_items(boto3_client, table_name, session)
    # one item, or one a call (the messages of a call share it)
    wanted = 1 if options.get("layout") == "list" else sum(map(len, appends.values()))
    record(SECTION, test, "items left over", stored - wanted)
    assert stored == wanted  # no orphan, no half write


def test_threads_and_processes_append_to_one_session(
    table_name: str,
    dynamodb_endpoint: str | None,
    dynamodb_region: str | None,
    boto3_client: Any,
    processes: list[multiprocessing.process.BaseProcess],
) -> None:
    """16 writer threads and 4 writer processes on one session, 3 readers reading meanwhile."""
    _one_session_under_load(
        CI_LOAD,
        "one session, threads + processes + readers",
        table_name,
        dynamodb_endpoint,
        dynamodb_region,
        boto3_client,
        processes,
    )


@pytest.mark.soak
def test_soak_threads_and_processes_append_to_one_session(
    table_name: str,
    dynamodb_endpoint: str | None,
    dynamodb_region: str | None,
    boto3_client: Any,
    processes: list[multiprocessing.process.BaseProcess],
) -> None:
    """The same, with many more messages per writer."""
    _one_session_under_load(
        SOAK_LOAD,
        "soak: one session, threads + processes + readers",
        table_name,
        dynamodb_endpoint,
        dynamodb_region,
        boto3_client,
        processes,
    )


def _many_sessions(
    test: str,
    sessions: int,
    threads: int,
    per_pair: int,
    table_name: str,
    endpoint: str | None,
    region: str | None,
) -> None:
    names = [f"many-{i}-{uuid.uuid4().hex[:6]}" for i in range(sessions)]
    appends: dict[str, dict[str, list[list[str]]]] = {s: {} for s in names}
    targets = []
    for t in range(threads):
        order = names[:]
        random.Random(t).shuffle(order)
        for session in order:
            appends[session][f"t{t}"] = writer_messages(f"{session}/t{t}", per_pair)

        def write(t: int = t, order: list[str] = order) -> None:
            histories = {s: _history(table_name, endpoint, region, s) for s in order}
            for step in range(per_pair):
                for session in order:
                    batches = appends[session][f"t{t}"]
                    if step < len(batches):
                        histories[session].add_messages(as_messages(batches[step]))

        targets.append(write)
    errors = _run_threads(targets)
    assert not errors, errors
    record(SECTION, test, "writer threads", threads)
    record(SECTION, test, "sessions", sessions)
    for session in names:
        check_final(
            test, _contents(_history(table_name, endpoint, region, session)), appends[session]
        )


def test_many_sessions_in_parallel(
    table_name: str, dynamodb_endpoint: str | None, dynamodb_region: str | None
) -> None:
    """6 threads each write to all of 16 sessions in their own order: no session gets another's
    messages, none loses or repeats one."""
    _many_sessions(
        "many sessions, threads across sessions",
        16,
        6,
        3,
        table_name,
        dynamodb_endpoint,
        dynamodb_region,
    )


@pytest.mark.soak
def test_soak_many_sessions_in_parallel(
    table_name: str, dynamodb_endpoint: str | None, dynamodb_region: str | None
) -> None:
    _many_sessions(
        "soak: many sessions, threads across sessions",
        64,
        12,
        10,
        table_name,
        dynamodb_endpoint,
        dynamodb_region,
    )


def test_one_history_shared_by_threads(
    table_name: str, dynamodb_endpoint: str | None, dynamodb_region: str | None
) -> None:
    """8 threads append through one history instance while another thread reads through it."""
    test = "one history instance shared by threads"
    history = _history(table_name, dynamodb_endpoint, dynamodb_region, "shared")
    appends = {f"s{t}": writer_messages(f"s{t}", 15) for t in range(8)}

    def write(writer: str) -> None:
        for contents in appends[writer]:
            history.add_messages(as_messages(contents))

    with Readers([history]) as reading:
        errors = _run_threads([lambda w=w: write(w) for w in appends])
    assert not errors, errors
    assert not reading.errors, reading.errors
    final = _contents(history)
    record(SECTION, test, "writer threads", len(appends))
    record(SECTION, test, "reader threads", 1)
    record(SECTION, test, "sessions", 1)
    check_final(test, final, appends)
    check_reads(test, reading.observed, final)
    note(SECTION, test, "The instance serialises its own appends; no race is lost.")


def test_readers_during_clear_see_all_or_nothing(
    table_name: str, dynamodb_endpoint: str | None, dynamodb_region: str | None
) -> None:
    """Readers running while a session is cleared and refilled see either the old history or a
    prefix of the new one, never a mix and never a gap."""
    test = "clear while readers read"
    session = "clearing"
    history = _history(table_name, dynamodb_endpoint, dynamodb_region, session)
    old = [f"old:{i}" for i in range(60)]
    for start in range(0, len(old), 20):
        history.add_messages(as_messages(old[start : start + 20]))
    new = [f"new:{i}" for i in range(10)]
    readers = [_history(table_name, dynamodb_endpoint, dynamodb_region, session) for _ in range(2)]
    with Readers(readers) as reading:
        history.clear()
        for content in new:
            history.add_messages(as_messages([content]))
    assert not reading.errors, reading.errors
    bad = [s for s in reading.observed if s != old and new[: len(s)] != s]
    record(SECTION, test, "reader threads", 2)
    record(SECTION, test, "reads checked for prefix consistency", len(reading.observed))
    record(SECTION, test, "non-prefix reads", len(bad))
    # neither the history before the clear nor one after it: a history that never existed
    record(SECTION, test, "reads of a history that never existed", len(bad))
    assert not bad, bad[:3]
    assert _contents(history) == new


def test_list_layout_threads_and_processes_append_to_one_session(
    list_table: str,
    dynamodb_endpoint: str | None,
    dynamodb_region: str | None,
    boto3_client: Any,
    processes: list[multiprocessing.process.BaseProcess],
) -> None:
    """The same load on the list layout (one item per session, atomic list_append)."""
    _one_session_under_load(
        CI_LOAD,
        "list layout: one session, threads + processes + readers",
        list_table,
        dynamodb_endpoint,
        dynamodb_region,
        boto3_client,
        processes,
        layout="list",
    )


def test_coroutines_and_threads_on_the_same_sessions(
    table_name: str, dynamodb_endpoint: str | None, dynamodb_region: str | None
) -> None:
    """200 coroutines of one event loop (native async) and 4 sync threads append to the same 50
    sessions, while the coroutines also read: nothing lost or duplicated, each writer's order
    kept, every read a prefix of the final history."""
    import asyncio

    from chathist.dynamo import aio

    if not aio.AVAILABLE:
        pytest.skip("needs the async extra (aiobotocore)")
    test = "200 coroutines + 4 threads on 50 sessions"
    sessions = [f"mixed-{i}" for i in range(50)]
    per_writer = 6
    appends: dict[str, dict[str, list[list[str]]]] = {s: {} for s in sessions}
    observed: dict[str, list[list[str]]] = {s: [] for s in sessions}

    def history(session: str) -> DynamoDBChatMessageHistory:
        # 200 coroutines share one loop: on a loaded 2-core machine one attempt can take
        # longer than the default 30 s budget, which would then stop after one lost race.
        return _history(table_name, dynamodb_endpoint, dynamodb_region, session, append_timeout=300)

    async def coroutine_writer(number: int) -> None:
        session = sessions[number % len(sessions)]
        name = f"c{number}"
        batches = appends[session][name] = writer_messages(name, per_writer)
        for batch in batches:
            await history(session).aadd_messages(as_messages(batch))
            seen = [str(m.content) for m in await history(session).aget_messages()]
            observed[session].append(seen)

    def thread_writer(number: int) -> None:
        name = f"t{number}"
        for session in sessions:
            batches = appends[session][name] = writer_messages(f"{name}-{session}", 2)
            for batch in batches:
                history(session).add_messages(as_messages(batch))

    async def main() -> None:
        await asyncio.gather(*(coroutine_writer(i) for i in range(200)))

    threads = [threading.Thread(target=thread_writer, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    asyncio.run(main())
    for thread in threads:
        thread.join()
    for session in sessions:
        final = _contents(history(session))
        check_final(test, final, appends[session])
        check_reads(test, observed[session], final)
    record(SECTION, test, "writers", 204)
