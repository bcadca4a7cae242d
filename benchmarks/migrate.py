"""Scenario 7: ``chathist.bulk.migrate_list_to_events`` throughput (sessions/s, messages/s).

A LangChain list-layout table is filled through LangChain's own class (one ``add_messages`` per
session), then migrated into a fresh event table per repeat, with the migration's defaults
(scan segments; no verification). Capacity is chathist's report plus the benchmark hook on the
target table's client (which re-prices transactions the service's way).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import chathist
from benchmarks.contenders import Contender, LangChain, create_hash_only_table
from benchmarks.meter import HookMeter
from benchmarks.workload import Sizes, make_messages, spread
from chathist.dynamo.binding import Binding
from chathist.dynamo.client import client_for


def migration_throughput(
    contenders: Sequence[Contender],
    sizes: Sizes,
    endpoint: str,
    region: str,
    log: Callable[[str], None],
) -> dict[str, Any]:
    from chathist.bulk import MigrationConfig, migrate_list_to_events

    prefix = f"bench-mig-{uuid.uuid4().hex[:6]}"
    source = f"{prefix}-source"
    create_hash_only_table(endpoint, region, source)
    filler = LangChain("langchain", "LangChain", endpoint, region, table=source)
    messages = make_messages(sizes.migrate_messages, seed=9)
    for number in range(sizes.migrate_sessions):
        filler.open(f"session-{number:05d}").add(messages)
    log(f"  7 source: {sizes.migrate_sessions} sessions x {sizes.migrate_messages} messages")
    runs: list[dict[str, Any]] = []
    segments = 0
    for turn in range(max(1, min(sizes.repeats, 3))):
        target = f"{prefix}-target-{turn}"
        chathist.create_table(target, endpoint_url=endpoint, region_name=region)
        meter = HookMeter()
        # the migration sends through the one client of the target's binding
        meter.attach(client_for(Binding.resolve(target, endpoint, region)), ask_for_capacity=False)
        config = MigrationConfig(
            source=source, target=target, endpoint_url=endpoint, region_name=region
        )
        segments = config.segments
        start = time.perf_counter()
        report = migrate_list_to_events(config)
        wall = time.perf_counter() - start
        data = report.as_dict()
        hooked = meter.total
        runs.append(
            {
                "wall_s": wall,
                "sessions": data["migrated"],
                "messages": data["messages"],
                "items_written": data["items_written"],
                "sessions_per_s": data["migrated"] / wall,
                "messages_per_s": data["messages"] / wall,
                "wcu_reported": data["consumed_wcu"],
                "wcu": data["consumed_wcu"] + hooked.tx_repriced,
                "rcu": data["consumed_rcu"],
                "requests": data["requests"],
                "ok": report.ok,
                "problems": data["problems"],
            }
        )
        log(f"  7 migrated {data['migrated']} sessions in {wall:.2f} s (ok={report.ok})")
    sessions_per_s = spread([r["sessions_per_s"] for r in runs])
    messages_per_s = spread([r["messages_per_s"] for r in runs])
    last = runs[-1]
    markdown = "\n".join(
        [
            f"**7. Migration: {sizes.migrate_sessions} LangChain list-layout sessions of"
            f" {sizes.migrate_messages} messages → event layout (migrate_list_to_events,"
            f" {segments} scan segments,"
            f" {len(runs)} run(s))**",
            "",
            "| sessions/s | messages/s | items written | WCU (reported by DynamoDB Local) |"
            " RCU | requests | clean |",
            "|---|---|---|---|---|---|---|",
            f"| {sessions_per_s['median']:.0f} (IQR {sessions_per_s['iqr']:.0f})"
            f" | {messages_per_s['median']:.0f} (IQR {messages_per_s['iqr']:.0f})"
            f" | {last['items_written']} | {last['wcu']:.0f} ({last['wcu_reported']:.0f})"
            f" | {last['rcu']:.0f} | {last['requests']} | {all(r['ok'] for r in runs)} |",
        ]
    )
    return {
        "available": True,
        "segments": segments,
        "sessions": sizes.migrate_sessions,
        "messages_per_session": sizes.migrate_messages,
        "sessions_per_s": sessions_per_s,
        "messages_per_s": messages_per_s,
        "runs": runs,
        "markdown": markdown,
    }
