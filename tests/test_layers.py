"""The map of docs/design.md holds: every import of chathist points down the layers (or within
one), so the pure rules never reach the request path, the request path never reaches a session,
and nothing but the operations reaches the command line or the bulk migration."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "chathist"

LAYERS = [
    ("errors", {"chathist.errors"}),
    ("pure rules", {"chathist.core"}),
    ("request path", {"chathist.dynamo"}),
    (
        "sessions",
        {
            "chathist.options",
            "chathist.event_log",
            "chathist.list_log",
            "chathist.lazy_migration",
            "chathist.session",
        },
    ),
    ("faces", {"chathist.history", "chathist.langgraph", "chathist"}),
    (
        "operations",
        {
            "chathist.bulk",
            "chathist.cli",
            "chathist.migrations",
            "chathist.local",
            "chathist.demo",
            "chathist.__main__",
        },
    ),
]


def layer_of(module: str) -> int:
    for rank, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes if p != "chathist"):
            return rank
    if module == "chathist":
        return next(rank for rank, (name, _) in enumerate(LAYERS) if name == "faces")
    raise AssertionError(f"{module} is on no layer of the map")


def modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found.append((name, path))
    return found


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name == "chathist" or name.startswith("chathist.")}


@pytest.mark.parametrize(("module", "path"), modules(), ids=[m for m, _ in modules()])
def test_imports_point_down_the_layers(module: str, path: Path) -> None:
    own = layer_of(module)
    upward = []
    for name in sorted(imports(path)):
        target = name
        while target not in ("chathist",) and not _known(target):
            target = target.rsplit(".", 1)[0]
        if layer_of(target) > own:
            upward.append(name)
    assert upward == [], f"{module} ({LAYERS[own][0]}) imports from a higher layer: {upward}"


def _known(module: str) -> bool:
    try:
        layer_of(module)
    except AssertionError:
        return False
    return True
