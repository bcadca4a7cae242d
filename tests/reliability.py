"""Figures of the reliability tests, and the report they generate: ``docs/reliability.md``.

The reliability test modules (`MODULES`) record what they did (writers, messages, faults injected,
bad inputs tried, messages lost or duplicated...) with `record`. Each of them has a session-scoped
autouse fixture that calls `install`. In a run started with ``--reliability-report`` (``make
reliability``) that registers `ReportPlugin` once, and at the end of the run the plugin writes
``docs/reliability.md`` from the recorded figures, but only when every test of those modules ran
and passed (soak tests skipped without ``--soak`` and known bugs marked ``xfail`` are listed as
such). A run without the option, such as ``make test``, never writes the file: tests do not
rewrite tracked files.

It also holds `process_writer`, the writer the concurrency test runs in spawned processes (a
spawned process imports its target by module name, and this module is light to import).
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import threading
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

MODULES = (
    "test_concurrency.py",
    "test_faults.py",
    "test_bad_input.py",
    "test_isolation.py",
    "test_catch_up.py",
)
"""The test modules whose figures make up the report."""
LOAD_APPEND_ATTEMPTS = 1000
"""``max_append_attempts`` of the writers under load: chathist's default (with its default 30 s
``append_timeout``). With 20 writers appending to one session without pause, one append measured
up to 84 lost races in a row on DynamoDB Local; the load tests count that streak and report it."""
REPORT_PATH = Path(__file__).resolve().parent.parent / "docs" / "reliability.md"
REPORT_OPTION = "--reliability-report"
"""The pytest option (tests/conftest.py) without which no run writes `REPORT_PATH`."""
PLUGIN_NAME = "chathist-reliability"

SECTIONS = {
    "concurrency": "Load and concurrency",
    "faults": "Faults injected at the botocore layer and on the wire",
    "bad_input": "Bad input",
    "isolation": "Isolation and logging",
    "catch_up": "Bulk migration catch-up (LangChain's class writing after the migration)",
}


@dataclass
class _Figures:
    """Counters per (section, test, figure), plus notes; thread-safe."""

    counts: dict[tuple[str, str, str], int] = field(default_factory=lambda: defaultdict(int))
    notes: dict[tuple[str, str], list[str]] = field(default_factory=lambda: defaultdict(list))
    owners: dict[tuple[str, str], set[str]] = field(default_factory=lambda: defaultdict(set))
    """The pytest node ids that recorded each (section, test) row."""
    lock: threading.Lock = field(default_factory=threading.Lock)


FIGURES = _Figures()


def record(section: str, test: str, figure: str, amount: int = 1) -> None:
    """Add ``amount`` to one figure of one test (``section`` is a key of `SECTIONS`)."""
    if section not in SECTIONS:
        raise KeyError(section)
    with FIGURES.lock:
        FIGURES.counts[(section, test, figure)] += amount
        FIGURES.owners[(section, test)].add(_current_test())


def _current_test() -> str:
    """The node id of the running test (pytest sets it in the environment, for every thread)."""
    return os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0]


def note(section: str, test: str, text: str) -> None:
    """Attach an observation (a sentence) to a test's row of the report."""
    with FIGURES.lock:
        FIGURES.owners[(section, test)].add(_current_test())
        if text not in FIGURES.notes[(section, test)]:
            FIGURES.notes[(section, test)].append(text)


def figure(section: str, test: str, name: str) -> int:
    """The current value of one figure (0 if never recorded)."""
    with FIGURES.lock:
        return FIGURES.counts.get((section, test, name), 0)


# -- the plugin ------------------------------------------------------------------------------------


class ReportPlugin:
    """Collects the outcomes of the reliability tests; writes the report if they all passed."""

    def __init__(self, items: list[pytest.Item]) -> None:
        self.nodeids = [item.nodeid for item in items if _is_ours(item)]
        self.outcome: dict[str, str] = {}
        self.reasons: dict[str, str] = {}
        self.written = False

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.nodeid not in self.nodeids:
            return
        if hasattr(report, "wasxfail"):
            self.outcome[report.nodeid] = "xfailed" if report.skipped else "xpassed"
            self.reasons[report.nodeid] = str(report.wasxfail).removeprefix("reason: ")
        elif report.failed:
            self.outcome[report.nodeid] = "failed"
        elif report.skipped:
            reason = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else ""
            self.outcome[report.nodeid] = "soak-skipped" if "soak" in reason else "skipped"
        elif report.when == "call" and self.outcome.get(report.nodeid) is None:
            self.outcome[report.nodeid] = "passed"

    def complete(self) -> bool:
        """True if all four modules ran and every test in them passed (or is a known xfail)."""
        modules = {nodeid.split("::")[0].rsplit("/", 1)[-1] for nodeid in self.nodeids}
        if modules != set(MODULES):
            return False
        allowed = {"passed", "soak-skipped", "xfailed"}
        return all(self.outcome.get(n) in allowed for n in self.nodeids)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if not self.complete():
            return
        soak = bool(session.config.getoption("--soak", default=False))
        REPORT_PATH.parent.mkdir(parents=True, exist_ok=True)
        REPORT_PATH.write_text(render(self.outcome, self.reasons, soak=soak), encoding="utf-8")
        self.written = True

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        """Say whether the report asked for was written (after `pytest_sessionfinish`)."""
        if self.written:
            terminalreporter.write_line(f"{REPORT_PATH} written")
        else:
            terminalreporter.write_line(
                f"{REPORT_PATH} NOT written: run every test of {', '.join(MODULES)}"
                " and let them pass",
                yellow=True,
            )


def _is_ours(item: pytest.Item) -> bool:
    return item.path.name in MODULES


_install_lock = threading.Lock()


def install(request: pytest.FixtureRequest) -> None:
    """Register `ReportPlugin` for this run if it was started with `REPORT_OPTION` (once,
    whichever reliability module runs first)."""
    if not request.config.getoption(REPORT_OPTION):
        return
    manager = request.config.pluginmanager
    with _install_lock:
        if manager.get_plugin(PLUGIN_NAME) is None:
            manager.register(ReportPlugin(list(request.session.items)), PLUGIN_NAME)


# -- the report ------------------------------------------------------------------------------------


_passed: set[str] = set()
"""Node ids of the tests that passed in this run; only their figures are reported."""


def _counted(section: str, test: str) -> bool:
    return FIGURES.owners[(section, test)] <= _passed


def _rows(section: str) -> Iterator[tuple[str, dict[str, int]]]:
    tests: dict[str, dict[str, int]] = defaultdict(dict)
    for (sec, test, name), value in sorted(FIGURES.counts.items()):
        if sec == section and _counted(sec, test):
            tests[test][name] = value
    yield from tests.items()


def _total(section: str, name: str) -> int:
    return sum(
        v
        for (sec, test, n), v in FIGURES.counts.items()
        if sec == section and n == name and _counted(sec, test)
    )


def render(outcome: dict[str, str], reasons: dict[str, str], *, soak: bool) -> str:
    """The Markdown report of the figures recorded in this run."""
    import chathist

    tally: dict[str, int] = defaultdict(int)
    for result in outcome.values():
        tally[result] += 1
    _passed.clear()
    _passed.update(n for n, r in outcome.items() if r == "passed")
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Reliability figures",
        "",
        "<!-- GENERATED by `make reliability` (tests/reliability.py) at the end of a passing"
        f" pytest run of {', '.join('tests/' + m for m in MODULES)}. Do not edit by hand. -->",
        "",
        f"Generated {now} by a test run against DynamoDB Local"
        f" (chathist {chathist.__version__}, Python {platform.python_version()},"
        f" {'with' if soak else 'without'} `--soak`). Outcomes: "
        + ", ".join(f"{n} {k}" for k, n in sorted(tally.items()))
        + ". The file is written only when every reliability test of the run passed;"
        " every figure below was counted while the tests ran, by tests that passed.",
        "",
        "## Totals",
        "",
        "| figure | value |",
        "|---|---|",
    ]
    totals = [
        ("concurrency", "writer threads"),
        ("concurrency", "writer processes"),
        ("concurrency", "reader threads"),
        ("concurrency", "sessions"),
        ("concurrency", "messages appended"),
        ("concurrency", "reads checked for prefix consistency"),
        ("concurrency", "append races lost and retried"),
        ("faults", "faults injected"),
        ("bad_input", "bad inputs tried"),
        ("isolation", "sessions"),
        ("isolation", "log records checked"),
        ("catch_up", "sessions checked"),
        ("catch_up", "runs killed part-way"),
    ]
    for section, name in totals:
        lines.append(f"| {name} ({SECTIONS[section].lower()}) | {_total(section, name)} |")
    lost = sum(_total(s, "lost") for s in SECTIONS)
    duplicated = sum(_total(s, "duplicated") for s in SECTIONS)
    out_of_order = sum(_total(s, "out of order") for s in SECTIONS)
    lines += [
        f"| **messages lost** | **{lost}** |",
        f"| **messages duplicated** | **{duplicated}** |",
        f"| **messages out of writer order** | **{out_of_order}** |",
        f"| **reads that were not a prefix of the final history** |"
        f" **{_total('concurrency', 'non-prefix reads')}** |",
        f"| **reads of a history that never existed** |"
        f" **{_total('concurrency', 'reads of a history that never existed')}** |",
        f"| **sessions a refused or accepted input left unreadable or unwritable** |"
        f" **{_total('bad_input', 'poisoned sessions')}** |",
        f"| **message content left after a completed clear** |"
        f" **{_total('faults', 'content left after a completed clear')}** |",
        f"| **appends that raised on a lossy network** |"
        f" **{_total('faults', 'appends that raised')}** |",
        f"| **refused inputs that wrote anything** | **{_total('bad_input', 'writes')}** |",
        f"| **messages seen by another session** | **{_total('isolation', 'leaks')}** |",
        f"| **diverged sessions a catch-up wrote to** |"
        f" **{_total('catch_up', 'diverged sessions written to')}** |",
        f"| **cleared messages a catch-up brought back** |"
        f" **{_total('catch_up', 'cleared messages brought back')}** |",
        f"| **secrets in log records at INFO or above** |"
        f" **{_total('isolation', 'secrets at INFO+')}** |",
        "",
    ]
    kinds: dict[str, int] = defaultdict(int)
    for (sec, test, name), value in FIGURES.counts.items():
        injected = name.endswith(" injected") and name != "faults injected"
        if sec == "faults" and injected and _counted(sec, test):
            kinds[name.removesuffix(" injected")] += value
    lines += ["## Faults injected, by kind", "", "| kind | injected |", "|---|---|"]
    lines += [f"| {kind} | {n} |" for kind, n in sorted(kinds.items())]
    lines.append("")
    for section, title in SECTIONS.items():
        lines += [f"## {title}", ""]
        for test, figures in _rows(section):
            detail = ", ".join(f"{name} = {value}" for name, value in figures.items())
            lines.append(f"- `{test}`: {detail}.")
            for text in FIGURES.notes.get((section, test), []):
                lines.append(f"  {text}")
        lines.append("")
    known = sorted(n for n, r in outcome.items() if r == "xfailed")
    if known:
        lines += ["## Known bugs (the test met exactly the known symptom and was marked xfail)", ""]
        lines += [f"- `{n}`: {reasons.get(n, '')}" for n in known]
        lines.append("")
    skipped = sorted(n for n, r in outcome.items() if r == "soak-skipped")
    if skipped:
        lines += ["## Soak tests not run (pass `--soak`)", ""]
        lines += [f"- `{n}`" for n in skipped]
        lines.append("")
    return "\n".join(lines)


# -- a writer for spawned processes ----------------------------------------------------------------


def writer_messages(writer: str, count: int) -> list[list[str]]:
    """The appends one writer makes: its ``count`` contents, mostly single, some pairs."""
    appends: list[list[str]] = []
    index = 0
    while index < count:
        size = 2 if index % 3 == 1 and index + 1 < count else 1
        appends.append([f"{writer}:{i}" for i in range(index, index + size)])
        index += size
    return appends


def as_messages(contents: list[str]) -> list[Any]:
    """One append's messages: human and AI turns alternating."""
    from langchain_core.messages import AIMessage, HumanMessage

    return [HumanMessage(c) if n % 2 == 0 else AIMessage(c) for n, c in enumerate(contents)]


def process_writer(
    table: str,
    endpoint: str | None,
    region: str | None,
    session: str,
    writer: str,
    count: int,
    ready: Any,
    go: Any,
    results: Any,
    options: dict[str, Any] | None = None,
) -> None:
    """Append ``writer``'s messages to ``session`` once ``go`` is set; put a summary on
    ``results``: (writer, error or None, races lost, longest losing streak)."""
    try:
        from chathist import DynamoDBChatMessageHistory

        history = DynamoDBChatMessageHistory(
            table,
            session,
            endpoint_url=endpoint,
            region_name=region,
            max_append_attempts=LOAD_APPEND_ATTEMPTS,
            **(options or {}),
        )
        history.messages  # noqa: B018 - checks the table before the start signal
        with RaceCounter(history.client) as races:
            ready.put(writer)
            go.wait()
            for contents in writer_messages(writer, count):
                history.add_messages(as_messages(contents))
        results.put((writer, None, races.lost, races.longest_streak))
    except BaseException as exc:  # reported to the parent, which fails the test
        results.put((writer, f"{type(exc).__name__}: {exc}", 0, 0))
        ready.put(writer)


class RaceCounter:
    """Counts the conditional writes DynamoDB refused on one botocore client (races lost).

    Use as a context manager; the hooks are removed on exit."""

    OPERATIONS = ("PutItem", "TransactWriteItems")
    REFUSED = ("ConditionalCheckFailedException", "TransactionCanceledException")

    def __init__(self, client: Any) -> None:
        self._events = client.meta.events
        self._lock = threading.Lock()
        self._lost = 0
        self._streak = threading.local()
        self._longest = 0

    def _after_call(self, http_response: Any, parsed: dict[str, Any], **_: Any) -> None:
        streak = getattr(self._streak, "value", 0)
        if parsed.get("Error", {}).get("Code") in self.REFUSED:
            streak += 1
            with self._lock:
                self._lost += 1
                self._longest = max(self._longest, streak)
        else:
            streak = 0
        self._streak.value = streak

    @property
    def lost(self) -> int:
        """Conditional writes refused so far."""
        with self._lock:
            return self._lost

    @property
    def longest_streak(self) -> int:
        """The most refusals in a row one thread met (one append losing race after race)."""
        with self._lock:
            return self._longest

    def __enter__(self) -> RaceCounter:
        for operation in self.OPERATIONS:
            self._events.register(f"after-call.dynamodb.{operation}", self._after_call)
        return self

    def __exit__(self, *exc: object) -> None:
        for operation in self.OPERATIONS:
            self._events.unregister(f"after-call.dynamodb.{operation}", self._after_call)
