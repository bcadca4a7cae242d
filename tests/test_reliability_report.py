"""docs/reliability.md is written on request only (`make reliability`), never by a plain run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.reliability import MODULES, PLUGIN_NAME, REPORT_OPTION, install

ROOT = Path(__file__).resolve().parent.parent


def test_a_plain_run_registers_no_report_writer(request: pytest.FixtureRequest) -> None:
    if request.config.getoption(REPORT_OPTION):
        pytest.skip(f"this run was started with {REPORT_OPTION}")
    install(request)
    assert request.config.pluginmanager.get_plugin(PLUGIN_NAME) is None


def test_make_reliability_runs_every_reliability_module_with_the_option() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8").replace("\\\n", " ")
    recipe = re.search(r"^reliability:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert recipe, "the Makefile has no reliability target"
    assert REPORT_OPTION in recipe.group(1)
    listed = re.search(r"^RELIABILITY_TESTS\s*:?=(.*)$", makefile, re.MULTILINE)
    assert listed, "the Makefile does not list the reliability tests"
    assert sorted(listed.group(1).split()) == sorted(f"tests/{m}" for m in MODULES)
    assert re.search(r"^\.PHONY:.*\breliability\b", makefile, re.MULTILINE)
