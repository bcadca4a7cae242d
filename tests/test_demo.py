"""``make demo`` (``python -m chathist.demo``) run as a subprocess: its claims hold."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from chathist.demo import ITEM_LIMIT, list_layout_failure, reply_text

ROOT = Path(__file__).resolve().parent.parent


def test_list_layout_failure_is_the_message_that_crosses_the_limit() -> None:
    assert list_layout_failure([100, 200], limit=300) is None
    assert list_layout_failure([100, 200, 1], limit=300) == 3
    assert list_layout_failure([ITEM_LIMIT + 1]) == 1


def test_replies_are_deterministic_and_sized() -> None:
    assert reply_text(7) == reply_text(7) != reply_text(8)
    assert len(reply_text(7, size=5000)) == 5000


def test_demo_grows_past_400_kb_and_reports_the_list_layout_failure() -> None:
    env = dict(os.environ, CHATHIST_DEMO_TARGET_BYTES="450000")
    result = subprocess.run(
        [sys.executable, "-m", "chathist.demo"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=ROOT,
    )
    out = result.stdout
    assert result.returncode == 0, result.stderr + out
    assert "Warning" not in result.stderr  # deprecation warnings are silenced

    stored = re.search(r"chathist: (\d+) messages, ([\d,]+) bytes stored.*all (\d+) read back", out)
    assert stored, out
    messages, size, read_back = int(stored[1]), int(stored[2].replace(",", "")), int(stored[3])
    assert size >= 450_000 > ITEM_LIMIT
    assert read_back == messages

    wcu = [float(w) for w in re.findall(r"turns: +[\d.]+ ms median, ([\d.]+) WCU", out)]
    assert len(wcu) == 2 and wcu[0] == wcu[1] > 0  # the same cost at the start and the end

    failed = re.search(r"would have failed at message (\d+)", out)
    assert failed, out
    assert 1 < int(failed[1]) < messages

    assert "Where to look next" in out
    for name in re.findall(r"^  ((?:README|docs/)\S*\.md)", out, re.MULTILINE):
        assert (ROOT / name).is_file(), name
