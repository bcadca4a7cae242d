"""chathist as a user installs it: a wheel built from the sdist, installed without dev extras into
a fresh venv, run from a project folder outside the checkout.

Every other test runs on the editable install, which finds modules the wheel may lack. One
module-scoped fixture builds and installs once, under pytest's temporary directory; nothing is
written to the checkout (the build runs on a copy of it).
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import subprocess
import sys
import tarfile
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from boto3.dynamodb.types import TypeSerializer
from langchain_core.messages import HumanMessage, messages_to_dict

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

ROOT = Path(__file__).resolve().parent.parent
NOT_SOURCE = {
    ".git",
    ".venv",
    "node_modules",
    "build",
    "dist",
    "results",
    "__pycache__",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    ".hypothesis",
}
"""Names of folders that a checkout holds but a release is not built from."""
DECOY_MIGRATIONS = '"""Another project\'s own migrations package (Django, Alembic...)."""\n'


def _not_source(folder: str, names: list[str]) -> list[str]:
    return [n for n in names if n in NOT_SOURCE or n.endswith(".egg-info")]


def _run(argv: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run ``argv``; its stdout, or a failure showing what it printed."""
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (
        f"{' '.join(argv)}\nexit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    return done.stdout


def _source_files(folder: Path) -> set[str]:
    """The files of ``folder`` that a release ships, relative to it."""
    files = (p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
    return {f.as_posix() for f in files if not NOT_SOURCE & set(f.parts) and f.suffix != ".pyc"}


@dataclass(frozen=True)
class Release:
    """What the fixture built and installed."""

    wheel: Path
    sdist: Path
    venv: Path
    project: Path
    """The working directory of every command: outside the checkout, with its own
    ``migrations`` package as a Django project has."""

    def run(self, program: str, *args: str) -> str:
        """``program`` (``chathist`` or ``python``) of the venv, run in `project`."""
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "CHATHIST_ENDPOINT_URL")
        }
        return _run([str(self.venv / "bin" / program), *args], cwd=self.project, env=env)


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Release:
    """Build the sdist and, from it, the wheel (``python -m build`` does both, in that order);
    install the wheel alone into a new venv (pip fetches its dependencies)."""
    base = tmp_path_factory.mktemp("packaging")
    source, dist, venv, project = (base / n for n in ("source", "dist", "venv", "project"))
    shutil.copytree(ROOT, source, ignore=_not_source)
    # --no-isolation: the dev extra holds the build requirements, so no build venvs are made.
    _run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(source)],
        cwd=base,
    )
    (wheel,) = dist.glob("chathist-*.whl")
    (sdist,) = dist.glob("chathist-*.tar.gz")
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=base)
    python = str(venv / "bin" / "python")
    _run([sys.executable, "-m", "pip", "--python", python, "install", "-q", str(wheel)], cwd=base)
    (project / "migrations").mkdir(parents=True)
    (project / "migrations" / "__init__.py").write_text(DECOY_MIGRATIONS, encoding="utf-8")
    return Release(wheel, sdist, venv, project)


def test_wheel_holds_every_module_and_nothing_outside_chathist(release: Release) -> None:
    with zipfile.ZipFile(release.wheel) as wheel:
        names = set(wheel.namelist())
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/RECORD"))
        record = wheel.read(f"{info}/RECORD").decode()
        top_level = wheel.read(f"{info}/top_level.txt").decode().split()
    expected = {f"chathist/{f}" for f in _source_files(ROOT / "chathist")}
    expected |= {f"chathist/migrations/{f}" for f in _source_files(ROOT / "migrations")}
    assert {"chathist/py.typed", "chathist/cli/main.py"} <= expected
    assert "chathist/migrations/0001_list_to_events.py" in expected
    assert {n for n in names if not n.startswith(f"{info}/")} == expected
    installed = {row[0].split("/")[0] for row in csv.reader(io.StringIO(record)) if row}
    assert installed == {"chathist", info}
    assert top_level == ["chathist"]


def test_sdist_holds_the_migrations_and_the_test_suite(release: Release) -> None:
    with tarfile.open(release.sdist) as sdist:
        names = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
    for folder in ("chathist", "migrations", "tests", "docs", "benchmarks"):
        missing = {f"{folder}/{f}" for f in _source_files(ROOT / folder)} - names
        assert not missing, f"the sdist lacks {sorted(missing)}"
    assert {"pyproject.toml", "README.md", "Makefile", "package.json"} <= names


def test_installed_command_line_runs_outside_the_checkout(release: Release) -> None:
    assert release.run("chathist", "--help").startswith("usage: chathist")
    assert release.run("python", "-m", "chathist", "--help").startswith("usage: chathist")
    assert "--source TABLE" in release.run("chathist", "migrate", "--help")
    where = release.run("python", "-c", "import chathist; print(chathist.__file__)")
    assert Path(where.strip()).is_relative_to(release.venv)
    # -I: without the project folder on sys.path, no `migrations` is importable at all.
    lookup = "import importlib.util as u; print(u.find_spec('migrations'))"
    assert release.run("python", "-I", "-c", lookup).strip() == "None"


def test_installed_command_line_migrates_on_dynamodb_local(
    release: Release,
    dynamodb_endpoint: str | None,
    dynamodb_region: str | None,
    request: pytest.FixtureRequest,
) -> None:
    """Run from a folder with its own ``migrations`` package, as in a Django project."""
    if dynamodb_endpoint is None:
        pytest.skip(
            "CHATHIST_TEST_ENDPOINT_URL=aws: the installed wheel's commands run against"
            " DynamoDB Local only (the packaging checks above still ran)"
        )
    boto3_client: DynamoDBClient = request.getfixturevalue("boto3_client")  # no AWS client
    list_table: str = request.getfixturevalue("list_table")  # nor table before the skip
    history = TypeSerializer().serialize(messages_to_dict([HumanMessage("hello from a wheel")]))
    boto3_client.put_item(TableName=list_table, Item={"SessionId": {"S": "s1"}, "History": history})
    connection = ["--endpoint-url", dynamodb_endpoint, "--region", str(dynamodb_region)]
    table = f"chathist-test-pkg-{uuid.uuid4().hex[:10]}"
    try:
        release.run("chathist", "create-table", table, *connection)
        migrate = ["migrate", "--source", list_table, "--target", table, *connection]
        release.run("python", "-m", "chathist", *migrate)
        assert "hello from a wheel" in release.run("chathist", "show", table, "s1", *connection)
        stats = release.run("chathist", "stats", table, *connection).splitlines()
        assert any(line.split()[:2] == ["layout:", "events"] for line in stats), stats
    finally:
        with contextlib.suppress(Exception):
            boto3_client.delete_table(TableName=table)


def test_the_version_literal_is_the_installed_version() -> None:
    """``__version__`` is a literal (reading the metadata costs ~20 ms at import): it must be
    the version the package is installed as."""
    import importlib.metadata

    import chathist

    assert chathist.__version__ == importlib.metadata.version("chathist")


def test_import_chathist_loads_no_client_library_until_the_history_is_used() -> None:
    """``import chathist`` is cheap; the history class loads botocore, PynamoDB and LangChain
    on first use, and the event layout never loads boto3 (the list layout's serializer)."""
    code = (
        "import sys, chathist\n"
        "heavy = ('boto3', 'botocore', 'pynamodb', 'langchain_core')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
        "chathist.DynamoDBChatMessageHistory\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.split("\n")[:2] == ["[]", "['botocore', 'langchain_core', 'pynamodb']"]


def test_the_encryption_extra_is_declared_and_encryption_needs_it(release: Release) -> None:
    with zipfile.ZipFile(release.wheel) as wheel:
        info = next(n.split("/")[0] for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = wheel.read(f"{info}/METADATA").decode()
    assert "Provides-Extra: encryption" in metadata
    assert any(
        line.startswith("Requires-Dist: cryptography") and "encryption" in line
        for line in metadata.splitlines()
    )
    probe = (
        "import chathist\n"
        "try:\n"
        "    chathist.DynamoDBChatMessageHistory(\n"
        "        'T-t', 's', endpoint_url='http://127.0.0.1:9', local_key=bytes(32))\n"
        "except chathist.ConfigurationError as error:\n"
        "    print('refused:', error)\n"
        "else:\n"
        "    print('accepted')\n"
    )
    found = release.run("python", "-c", probe)
    spec = "import importlib.util as u; print(u.find_spec('cryptography') is not None)"
    if release.run("python", "-c", spec).strip() == "True":  # another dependency brought it
        assert found.strip() == "accepted"
    else:
        assert found.startswith("refused:") and "chathist[encryption]" in found
