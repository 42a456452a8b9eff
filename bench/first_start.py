"""First start as a new user sees it: ``dantaro dev --offline`` on a fresh state folder until every product is stored.

Starts ``dantaro dev --offline --markets N`` from the project folder with nothing set but a new
``DANTARO_STATE_DIR`` (embedded Postgres and Redis, the simulated replay market), and records:

  - when market status, recommendations and support levels are first materialised (seconds after
    the command started, from the materialisation's event-log timestamp), and what their first
    runs fetched of the open hour's minutes over REST (what the stream had not seen);
  - the history runs (lane, product, assets, range, start and end) and the REST requests they made:
    ``floor_s`` is those requests at Upbit's 10 a second, the time no order of runs can beat;
  - when the tick sizes (``upbit_instruments``) were first stored;
  - the runs that failed meanwhile and duplicate runs (two runs of one analysis, hour and tick);
  - the console: lines in all and in the first 5 minutes, and how many of them are Dagster's
    per-iteration daemon lines, DEBUG step events, warnings and traceback lines;
  - the stop: seconds from SIGTERM until ``dantaro dev`` exits, tracebacks printed, runs left
    queued or in flight, and processes of the state folder still alive after ``dantaro stop``.

    python bench/first_start.py [--markets 250] [--max-minutes 20] [--log console.log]

``uptime`` is printed at the start and the end (timings are only comparable at similar load).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import dagster as dg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: dantaro_assets_tests is not pip-installed

from dantaro_assets.markets.history import HISTORY_TAG, LANES, PRODUCT_TAG
from dantaro_assets.processes.dagster_dev import IN_FLIGHT, QUEUED
from dantaro_assets.processes.stop import processes_naming
from dantaro_assets_tests.harness import exit_on_sigterm, free_port
from dantaro_replay.process import terminate_with_parent

PROJECT_DIR = Path(__file__).resolve().parents[1]
PRODUCTS = ("market_status", "recommendations", "support_levels")
CONSOLE_PATTERNS = {
    "daemon iteration lines": re.compile(
        r"Priority sorting|runs are currently in progress|Checking run |Collected \d+ runs|Evaluating schedule|Checking for new runs"
    ),
    "DEBUG events": re.compile(r" - DEBUG - (?!.*(RUN_START|RUN_SUCCESS))"),
    "warnings": re.compile(r"Warning:|warnings.warn|RuntimeWarning"),
    "traceback lines": re.compile(r"^\s+File \"|^Traceback"),
}


class Console:
    """Every line the command prints, with the second it arrived."""

    def __init__(self, process: subprocess.Popen, started: float):
        self.lines: list[tuple[float, str]] = []
        self._started = started
        self._reader = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._reader.start()

    def _read(self, process: subprocess.Popen) -> None:
        for line in process.stdout:
            self.lines.append((time.monotonic() - self._started, line.rstrip("\n")))

    def join(self) -> None:
        self._reader.join(timeout=10)

    def count(self, pattern: re.Pattern | None = None, until: float | None = None) -> int:
        return sum(1 for t, line in self.lines if (until is None or t <= until) and (pattern is None or pattern.search(line)))


def _value(metadata: dict, key: str) -> int:
    entry = metadata.get(key)
    return int(getattr(entry, "value", entry) or 0)


def _materialisations(instance: dg.DagsterInstance, run_id: str) -> list[dg.AssetMaterialization]:
    events = instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
    return [event.asset_materialization for event in events if event.asset_materialization is not None]


def _requests(materialisation: dg.AssetMaterialization) -> int:
    """Upbit requests behind a materialisation: the candles' own count, one listing, a tick-size request per 50 markets."""
    name = materialisation.asset_key.to_user_string()
    if name == "upbit_markets":
        return 1
    if name == "upbit_instruments":
        return -(-_value(materialisation.metadata, "markets") // 50)
    return _value(materialisation.metadata, "requests")


def history_runs(instance: dg.DagsterInstance, started_wall: float) -> list[dict]:
    """Every history run: lane, product, assets, range, start and end (s after the command started), requests."""
    rows = []
    for run in sorted(instance.get_runs(dg.RunsFilter(tags={HISTORY_TAG: list(LANES)})), key=lambda r: r.tags.get("dagster/asset_partition_range_start", "")):
        record = instance.get_run_record_by_id(run.run_id)
        rows.append({
            "lane": run.tags[HISTORY_TAG], "product": run.tags.get(PRODUCT_TAG, ""), "status": run.status.value,
            "assets": "+".join(sorted(key.to_user_string() for key in run.asset_selection or ())),
            "range": f"{run.tags.get('dagster/asset_partition_range_start')}...{run.tags.get('dagster/asset_partition_range_end')}",
            "start": (record.start_time - started_wall) if record and record.start_time else None,
            "end": (record.end_time - started_wall) if record and record.end_time else None,
            # a range run's fetch is reported on each partition's materialisation: once per asset
            "requests": sum({m.asset_key: _requests(m) for m in _materialisations(instance, run.run_id)}.values()),
        })
    return sorted(rows, key=lambda row: row["start"] if row["start"] is not None else 1e9)


def first_run_minutes(instance: dg.DagsterInstance, product: str) -> str:
    """What the product's first stored run fetched of the open hour's minutes over REST (the stream had the rest)."""
    event = next(iter(instance.fetch_materializations(dg.AssetKey(product), limit=1, ascending=True).records), None)
    if event is None:
        return "-"
    for materialisation in _materialisations(instance, event.run_id):
        if materialisation.asset_key == dg.AssetKey("candles_1m"):
            return f"{_value(materialisation.metadata, 'markets_fetched')} markets over REST ({materialisation.metadata['source'].value})"
    return "-"


def duplicate_runs(instance: dg.DagsterInstance) -> int:
    """Runs of an analysis job beyond the first for one hour and tick (the start sensor's and a schedule's, say)."""
    seen: dict[tuple, int] = {}
    for product in PRODUCTS:
        for run in instance.get_runs(dg.RunsFilter(job_name=f"{product}_job")):
            if run.tags.get("dantaro/finalise"):
                continue
            key = (product, run.tags.get("dagster/partition"), run.tags.get("dantaro/tick"))
            seen[key] = seen.get(key, 0) + 1
    return sum(count - 1 for count in seen.values())


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def load_1min(uptime_line: str) -> float:
    return float(uptime_line.split("load average:")[-1].split(",")[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markets", type=int, default=250)
    parser.add_argument("--max-minutes", type=float, default=20.0)
    parser.add_argument("--log", type=Path, help="write the console here")
    args = parser.parse_args()
    exit_on_sigterm()

    state = Path(tempfile.mkdtemp(prefix="dantaro-first-start-"))
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DAGSTER_HOME", "UPBIT_BASE_URL")}
    env.update(DANTARO_STATE_DIR=str(state), PYTHONUNBUFFERED="1")
    port = free_port()
    command = ["dantaro", "dev", "--offline", "--markets", str(args.markets), "--port", str(port)]
    uptime_before = uptime()
    print(f"uptime at start: {uptime_before}", flush=True)
    started_wall, started = time.time(), time.monotonic()
    # SIGTERM here stops `dantaro dev` through the finally below; when this bench is killed, the kernel sends it SIGTERM
    dev = subprocess.Popen(command, cwd=PROJECT_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           preexec_fn=terminate_with_parent())
    console = Console(dev, started)
    home = state / "dagster_home"
    first: dict[str, float] = {}
    failed: list[str] = []
    try:
        while not (state / "dev.json").exists():  # written once dantaro dev has created the instance's storage
            assert dev.poll() is None, "dantaro dev exited"
            time.sleep(0.5)
        with dg.DagsterInstance.from_config(str(home)) as instance:
            watched = (*PRODUCTS, "upbit_instruments")
            while len(first) < len(watched) and time.monotonic() - started < args.max_minutes * 60 and dev.poll() is None:
                for asset in watched:
                    if asset not in first and (event := instance.get_latest_materialization_event(dg.AssetKey(asset))):
                        first[asset] = event.timestamp - started_wall
                        print(f"  {asset} first materialised at +{first[asset]:.0f} s", flush=True)
                time.sleep(1)
            failed = [f"{r.job_name} {r.tags.get('dagster/partition', '')}".strip()
                      for r in instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))]
            history = history_runs(instance, started_wall)
            minutes = {product: first_run_minutes(instance, product) for product in PRODUCTS}
            duplicates = duplicate_runs(instance)
            uptime_during = uptime()
            lines_before_stop = len(console.lines)
            stop_sent = time.monotonic()
            dev.send_signal(signal.SIGTERM)
            dev.wait(timeout=120)
            stop_seconds = time.monotonic() - stop_sent
            console.join()
            left_open = [f"{r.job_name} {r.status.value}" for r in instance.get_runs(dg.RunsFilter(statuses=[*QUEUED, *IN_FLIGHT]))]
    finally:
        if dev.poll() is None:
            dev.kill()
        stop = subprocess.run(["dantaro", "stop"], check=False, cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=120)
    time.sleep(1)
    leftover = [line for line in processes_naming(state) if "first_start.py" not in line]
    stop_output = [line for t, line in console.lines[lines_before_stop:]]
    if args.log:
        args.log.write_text("\n".join(f"{t:8.1f} {line}" for t, line in console.lines) + "\n")

    rest_requests = sum(row["requests"] for row in history)
    console_minutes = console.lines[-1][0] / 60 if console.lines else 0.0

    def at(asset: str) -> str:
        return f"+{first[asset]:.0f} s" if asset in first else f"not within {args.max_minutes:g} min"

    rows = [(f"{product} first materialised", f"{at(product)}; its first run fetched {minutes[product]} of the open hour")
            for product in PRODUCTS]
    rows += [
        ("upbit_instruments (tick sizes) first stored", at("upbit_instruments")),
        ("history: REST requests / floor at 10 a second", f"{rest_requests} / {rest_requests / 10:.1f} s"),
        *((f"  {row['lane']} run for {row['product']}: {row['assets']} {row['range']}",
           f"+{row['start'] or 0:.0f} s to +{row['end'] or 0:.0f} s, {row['requests']} requests, {row['status']}") for row in history),
        ("failed runs", f"{len(failed)}" + (f" ({', '.join(failed[:4])}{'...' if len(failed) > 4 else ''})" if failed else "")),
        ("duplicate analysis runs (same hour and tick)", str(duplicates)),
        ("console lines (all)", f"{len(console.lines)} in {console_minutes:.1f} min"),
        ("console lines, first 5 min", str(console.count(until=300))),
        *((f"  {name}", str(console.count(pattern))) for name, pattern in CONSOLE_PATTERNS.items()),
        ("SIGTERM -> exit", f"{stop_seconds:.1f} s (exit code {dev.returncode})"),
        ("traceback lines after SIGTERM", str(sum(1 for line in stop_output if CONSOLE_PATTERNS["traceback lines"].search(line)))),
        ("runs left queued/in flight", str(len(left_open)) + (f" ({', '.join(left_open)})" if left_open else "")),
        ("processes of the state folder after `dantaro stop`", str(len(leftover))),
    ]
    print(f"\n`{' '.join(command)}` from {PROJECT_DIR}, fresh DANTARO_STATE_DIR, embedded Postgres/Redis, {os.cpu_count()} cores")
    print(f"uptime at start: {uptime_before}\nuptime once every product was stored: {uptime_during}\n")
    print("| measure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    print(f"\n`dantaro stop`: {stop.stdout.strip()}")
    for line in leftover:
        print(f"  left: {line}")
    print(f"command: python bench/first_start.py --markets {args.markets} --max-minutes {args.max_minutes:g}")
    print(f"uptime at the end: {uptime()}")
    load = [load_1min(text) for text in (uptime_before, uptime_during)]
    print(json.dumps({
        **{f"{p}_s": round(first[p], 1) if p in first else None for p in PRODUCTS},
        "failed_runs": len(failed), "rest_requests": rest_requests, "floor_s": round(rest_requests / 10, 1),
        "console_lines_5min": console.count(until=300), "sigterm_exit_s": round(stop_seconds, 1),
        "instruments_s": round(first["upbit_instruments"], 1) if "upbit_instruments" in first else None,
        "duplicate_runs": duplicates, "runs_left_open": len(left_open), "processes_left": len(leftover),
        "load_1min_start": load[0], "load_1min_end": load[1], "markets": args.markets,
    }))
    shutil.rmtree(state, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
