"""Bulk migration between LangChain's list layout and chathist's event layout.

`migrate_list_to_events` scans a list-style table (one item per session holding a ``History``
list) in parallel segments and writes each session as events; `rollback_events_to_list` does the
reverse for sessions that fit one item. Both are idempotent and resumable:

- ``verify`` reads each migrated session back (consistent reads, chathist's fold) and compares
  it with its source message for message; ``delete_source`` deletes a source only after that
  check passed, and only if it is unchanged (a conditional delete).
- ``max_wcu`` caps the write rate with a token bucket debited by the write units DynamoDB
  reports for each request.
- ``overwrite`` (rollback only) replaces a target list item that holds other messages (a session
  changed after it was migrated), on condition that the item is still the one read.
- A KeyboardInterrupt (Ctrl-C) lets the workers finish the sessions they are on, then raises
  `MigrationInterrupted`, whose ``report`` counts what was done; a re-run resumes.
- Every request goes through the request path (`chathist.dynamo.client.Sender`, one per worker
  thread and table, each worker with its own capacity meter), so every DynamoDB error arrives as
  one of `chathist.errors`.

The modules, one concern each: `config` (what to move), `report` (typed counters, problems),
`limiter` (the write rate), `schemas` (the tables' key schemas), `segments` (the parallel scan),
`compare` (target against source), `to_events` and `to_list` (the two directions).
"""

from chathist.bulk.compare import SessionState, compare_messages
from chathist.bulk.config import MigrationConfig
from chathist.bulk.limiter import WriteLimiter
from chathist.bulk.report import Counts, MigrationInterrupted, Problem, ProgressCallback, Report
from chathist.bulk.to_events import migrate_list_to_events, plan_session
from chathist.bulk.to_list import rollback_events_to_list

__all__ = [
    "Counts",
    "MigrationConfig",
    "MigrationInterrupted",
    "Problem",
    "ProgressCallback",
    "Report",
    "SessionState",
    "WriteLimiter",
    "compare_messages",
    "migrate_list_to_events",
    "plan_session",
    "rollback_events_to_list",
]
