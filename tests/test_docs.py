"""Every code example in README.md and docs/*.md runs against DynamoDB Local, so docs cannot rot.

Conventions for writers of docs:

- ```` ```python ```` blocks of one file run in order, in one namespace, which starts with
  ``url`` (the DynamoDB Local endpoint), and with ``CHATHIST_ENDPOINT_URL`` set to ``url`` in the
  environment, as in a shell that followed ``chathist local``: a block may define ``url`` from
  it, as the README's first one does. Use ``assert`` to show a result.
- ```` ```console ```` blocks: each ``$ chathist ...`` line runs as a subprocess with
  ``CHATHIST_ENDPOINT_URL`` set to ``url`` (after the Python blocks above it in the file); the
  lines under it are its expected stdout, where ``...`` matches anything within a line, a
  line that is only ``...`` matches any number of lines, and runs of spaces count as one.
  A command ending in ``2>&1`` has its stderr (progress lines, errors, warnings) compared too,
  merged with stdout in the order they were written; otherwise stderr is not compared. The
  command must exit 0, unless the last expected line is ``[exit N]``. A ``# comment`` after
  the command is not passed to it. Every ``$`` line of a console block must be a
  ``chathist`` command.
- A block that cannot run here (AWS only, a long-running server, ...) is preceded by the line
  ``<!-- no-run -->``. Other languages (``bash``, ``text``, ...) are never run, so a
  transcript of a ``$ chathist`` command must be a ``console`` block: it is checked.
- Tables created by a file are deleted after it, so files do not see each other's data.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from chathist.dynamo.tables import forget_key_schema

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)
NO_RUN = "<!-- no-run -->"
MERGE_STDERR = "2>&1"
EXIT_LINE = re.compile(r"\[exit (\d+)\]")


@dataclass(frozen=True)
class Block:
    """One fenced code block."""

    language: str
    code: str
    line: int
    runs: bool


def blocks_of(path: Path) -> list[Block]:
    """The fenced code blocks of ``path``, in order."""
    text = path.read_text(encoding="utf-8")
    found = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
        line = text.count("\n", 0, match.start()) + 2
        found.append(Block(match.group(1).lower(), match.group(2), line, before != NO_RUN))
    return found


def _squeeze(text: str) -> str:
    return " ".join(text.split())


def _line_matches(pattern: str, line: str) -> bool:
    """Runs of spaces count as one (column widths may change); ``...`` matches anything."""
    regex = ".*".join(re.escape(_squeeze(part)) for part in pattern.split("..."))
    return re.fullmatch(regex, _squeeze(line)) is not None


def output_matches(expected: list[str], actual: list[str]) -> bool:
    """``actual`` lines match ``expected`` (``...`` inside a line, or alone for many lines)."""
    if not expected:
        return not actual
    head, rest = expected[0], expected[1:]
    if head.strip() == "...":
        return any(output_matches(rest, actual[i:]) for i in range(len(actual) + 1))
    return bool(actual) and _line_matches(head, actual[0]) and output_matches(rest, actual[1:])


def console_commands(block: Block) -> list[tuple[str, list[str]]]:
    """(command, expected stdout lines) of each ``$`` line of a console block."""
    commands: list[tuple[str, list[str]]] = []
    for line in block.code.splitlines():
        if line.startswith("$ "):
            commands.append((line[2:].strip(), []))
        elif commands:
            commands[-1][1].append(line)
    for _, expected in commands:
        while expected and not expected[-1].strip():
            expected.pop()
    return commands


def expected_exit(expected: list[str]) -> tuple[list[str], int]:
    """The expected lines without a final ``[exit N]``, and N (0 if there is none)."""
    if expected:
        match = EXIT_LINE.fullmatch(expected[-1].strip())
        if match:
            return expected[:-1], int(match.group(1))
    return expected, 0


def run_console(block: Block, path: Path, url: str) -> None:
    # Unbuffered, so that stdout and stderr merged by 2>&1 keep the order they were written in.
    env = dict(os.environ, CHATHIST_ENDPOINT_URL=url, PYTHONUNBUFFERED="1")
    for command, expected_lines in console_commands(block):
        argv = shlex.split(command, comments=True)
        merge = argv[-1:] == [MERGE_STDERR]
        argv = argv[:-1] if merge else argv
        assert argv[0] == "chathist", (
            f"{path.name}:{block.line}: console blocks run only chathist commands (or mark the"
            f" block {NO_RUN}): {command}"
        )
        expected, code = expected_exit(expected_lines)
        result = subprocess.run(
            [sys.executable, "-m", "chathist.cli", *argv[1:]],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge else subprocess.PIPE,
            text=True,
            timeout=300,
            env=env,
            cwd=ROOT,
        )
        where = f"{path.name}:{block.line}: $ {command}"
        assert result.returncode == code, (
            f"{where}\nexit {result.returncode}, expected {code}\n{result.stdout}{result.stderr}"
        )
        actual = result.stdout.rstrip("\n").splitlines()
        assert output_matches(expected, actual), (
            f"{where}\nexpected:\n" + "\n".join(expected) + "\nactual:\n" + result.stdout
        )


def test_doc_files_exist() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in DOC_FILES}
    for wanted in ("README.md", "docs/design.md", "docs/api.md", "docs/migration.md"):
        assert wanted in names
    assert "docs/comparison.md" in names


def test_output_matching() -> None:
    assert output_matches(["a ... c"], ["a b b c"])
    assert not output_matches(["a ... c"], ["a b b d"])
    assert output_matches(["x", "...", "z"], ["x", "1", "2", "z"])
    assert output_matches(["..."], [])
    assert not output_matches(["x"], ["x", "y"])
    assert output_matches(["  sessions seen      3"], ["  sessions seen         3"])
    assert not output_matches(["sessions seen 3"], ["sessions seen 30"])


def test_console_conventions() -> None:
    block = Block("console", "$ chathist x 2>&1   # why\nout\n[exit 3]\n", 1, True)
    ((command, lines),) = console_commands(block)
    assert shlex.split(command, comments=True) == ["chathist", "x", MERGE_STDERR]
    assert expected_exit(lines) == (["out"], 3)
    assert expected_exit(["out"]) == (["out"], 0)


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_command_transcripts_are_console_blocks(path: Path) -> None:
    """A ``$ chathist`` transcript in a block of another language would never be checked
    against a real run, and would drift from the output (as migration-cli.md's did)."""
    for block in blocks_of(path):
        if block.language == "console":
            continue
        for line in block.code.splitlines():
            assert not line.startswith("$ chathist"), (
                f"{path.name}:{block.line}: a transcript of `{line[2:]}` in a"
                f" {block.language or 'plain'} block; make it a console block (it then runs)"
            )


REFERENCE = re.compile(r"\b((?:tests|benchmarks)/[\w/]+\.py)(?:::(\w+))?")


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_referenced_tests_and_benchmarks_exist(path: Path) -> None:
    """A claim that points at ``tests/x.py::test_y`` points at a test that exists."""
    text = path.read_text(encoding="utf-8")
    for match in REFERENCE.finditer(text):
        target = ROOT / match.group(1)
        assert target.is_file(), f"{path.name} names {match.group(1)}, which does not exist"
        name = match.group(2)
        if name:
            source = target.read_text(encoding="utf-8")
            assert re.search(rf"^def {name}\(", source, re.MULTILINE), (
                f"{path.name} names {match.group(0)}, which does not exist"
            )


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_code_blocks_run(
    path: Path,
    dynamodb_endpoint: str | None,
    boto3_client: DynamoDBClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if dynamodb_endpoint is None:
        pytest.skip("docs examples create fixed table names: run them on DynamoDB Local only")
    monkeypatch.setenv("CHATHIST_ENDPOINT_URL", dynamodb_endpoint)
    blocks = [b for b in blocks_of(path) if b.runs and b.language in ("python", "console")]
    if not blocks:
        pytest.skip(f"{path.name} has no runnable code blocks")
    before = set(boto3_client.list_tables()["TableNames"])
    namespace: dict[str, Any] = {"url": dynamodb_endpoint, "__name__": f"docs.{path.stem}"}
    try:
        for block in blocks:
            if block.language == "python":
                code = compile(block.code, f"{path.relative_to(ROOT)}:{block.line}", "exec")
                exec(code, namespace)
            else:
                run_console(block, path, dynamodb_endpoint)
    finally:
        for name in set(boto3_client.list_tables()["TableNames"]) - before:
            with contextlib.suppress(Exception):
                boto3_client.delete_table(TableName=name)
        _forget_cached_schemas()


def _forget_cached_schemas() -> None:
    """Tables of the same names may be created again with another schema by the next file."""
    forget_key_schema()
