"""0001: LangChain's list layout -> chathist's event layout (format version 1).

What it changes. Every item of the source table that holds a list in the history attribute
(default ``History``) and no ``event`` attribute is one session in LangChain's list layout
(``DynamoDBChatMessageHistory`` of langchain-community). Its messages are written to the target
table as event items of format version 1 (``v = 1``): partition key = the source item's hash key
value, sort keys ``00000000000000000000``, ``...01``, ... (legacy message i -> event i, large
messages as parts below their header; sessions too large for one transaction are staged first and
appear at once through one commit event). Each event carries the source item's TTL attribute.
The target may be the source table itself if it has a composite key: the list items stay beside
the events (their sort key is not a sequence number) until ``--delete-source`` removes them.
Re-running is safe: the writes are conditional and keyed by a fingerprint of the content, so an
interrupted run resumes and a finished session is skipped; a partition holding other events is
reported as a conflict and left alone.

Catch-up. A re-run also moves what LangChain's class wrote to a session after it was migrated
(so a table can be migrated while the old application still writes, then cut over): if the
legacy list still starts with the messages of the earlier runs' events (writer ids starting
``mig1.``), only the new tail is appended, at the end of the sequence, under a writer id of its
legacy position and content, so a re-run or a run killed part-way never stores it twice. A
legacy list that no longer starts with what was migrated is reported as diverged and left
alone; a session cleared in the event table since is reported and nothing is moved (no cleared
message comes back). Its rollback is the rollback of the whole script (below).

How it is undone. ``chathist rollback --source EVENTS_TABLE --target LIST_TABLE`` (this module's
`rollback`) writes every event-layout session back as one list item that LangChain's class reads,
for sessions that fit DynamoDB's 400 KB item limit; larger sessions are reported and left as
events, never truncated. Without ``--delete-source`` neither direction deletes anything, so the
source table is itself the undo until it is dropped.

Run it as ``chathist migrate --source LIST_TABLE --target EVENTS_TABLE`` or as
``python -m chathist.migrations.0001_list_to_events migrate|rollback --source ... --target ...``.
"""

from __future__ import annotations

import sys
from typing import Final

from chathist.bulk import (
    MigrationConfig,
    ProgressCallback,
    Report,
    migrate_list_to_events,
    rollback_events_to_list,
)
from chathist.core.events import FORMAT_VERSION

VERSION: Final = 1
DESCRIPTION: Final = "LangChain list layout (one item per session) -> event layout, format v1"
TARGET_FORMAT_VERSION: Final = FORMAT_VERSION


def migrate(config: MigrationConfig, *, on_progress: ProgressCallback | None = None) -> Report:
    """Move every list-layout session of ``config.source`` into events in ``config.target``."""
    return migrate_list_to_events(config, on_progress=on_progress)


def rollback(config: MigrationConfig, *, on_progress: ProgressCallback | None = None) -> Report:
    """Write the event-layout sessions of ``config.source`` back as list items in
    ``config.target`` (those that fit one item)."""
    return rollback_events_to_list(config, on_progress=on_progress)


def main(argv: list[str] | None = None) -> int:
    """``python -m chathist.migrations.0001_list_to_events migrate|rollback OPTIONS``: the CLI
    command."""
    from chathist.cli.main import main as cli_main

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in ("migrate", "rollback"):
        print(
            "usage: python -m chathist.migrations.0001_list_to_events migrate|rollback"
            " --source TABLE --target TABLE [options]",
            file=sys.stderr,
        )
        return 2
    return cli_main([args[0], "--script", str(VERSION), *args[1:]])


if __name__ == "__main__":
    sys.exit(main())
