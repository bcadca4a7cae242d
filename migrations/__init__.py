"""Versioned migration scripts, run by ``chathist migrate --script N`` / ``chathist rollback``.

This folder installs as the package ``chathist.migrations`` (see pyproject.toml).

Each script is a module ``NNNN_<name>.py`` in this package, listed in `SCRIPTS` under its number,
with a docstring saying what it changes and how it is undone, and:

- ``VERSION`` (int, its number) and ``DESCRIPTION`` (one line);
- ``migrate(config, *, on_progress=None) -> Report`` and ``rollback(config, *, on_progress=None)
  -> Report`` taking a `chathist.bulk.MigrationConfig`.

A future change of the event item format (events carry ``v``, `chathist.core.events.FORMAT_VERSION`)
adds the next script here, and the reader refuses items newer than it understands.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Final

__all__ = ["SCRIPTS", "load"]

SCRIPTS: Final[dict[int, str]] = {
    1: "chathist.migrations.0001_list_to_events",
}
"""Script number -> module name, in the order they apply."""


def load(version: int) -> ModuleType:
    """The script numbered ``version``; `KeyError` naming the known ones if there is none."""
    try:
        name = SCRIPTS[version]
    except KeyError:
        known = ", ".join(f"{v:04d}" for v in sorted(SCRIPTS))
        raise KeyError(f"no migration script {version:04d} (known: {known})") from None
    module = importlib.import_module(name)
    for attribute in ("VERSION", "DESCRIPTION", "migrate", "rollback"):
        if not hasattr(module, attribute):
            raise TypeError(f"migration script {name} does not define {attribute}")
    if version != module.VERSION:
        raise TypeError(f"migration script {name} says it is version {module.VERSION}")
    return module

