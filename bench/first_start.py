"""First start as a new user sees it: ``dantaro dev --offline`` on a fresh state folder until every product is stored.

Starts ``dantaro dev --offline --markets N`` from the project folder with nothing set but a new
``DANTARO_STATE_DIR`` (embedded Postgres and Redis, the simulated replay market), and records:

  - when market status, recommendations and support levels are first materialised (seconds after
    the command started, from the materialisation's event-log timestamp);
  - the runs that failed meanwhile (a first start should have none);
  - the console: lines in all and in the first 5 minutes, and how many of them are Dagster's
    per-iteration daemon lines, DEBUG step events, warnings and traceback lines;
  - the stop: seconds from SIGTERM until ``dantaro dev`` exits, tracebacks printed, runs left
    queued or in flight, and processes of the state folder still alive after ``dantaro stop``.

    python bench/first_start.py [--markets 250] [--max-minutes 20] [--log console.log]

The machine's load average is printed with the figures (timings are only comparable at similar load).
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
    load_before = os.getloadavg()
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
            while len(first) < len(PRODUCTS) and time.monotonic() - started < args.max_minutes * 60 and dev.poll() is None:
                for product in PRODUCTS:
                    if product not in first and (event := instance.get_latest_materialization_event(dg.AssetKey(product))):
                        first[product] = event.timestamp - started_wall
                        print(f"  {product} first materialised at +{first[product]:.0f} s", flush=True)
                time.sleep(2)
            failed = [f"{r.job_name} {r.tags.get('dagster/partition', '')}".strip()
                      for r in instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))]
            load_during = os.getloadavg()
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

    minutes = console.lines[-1][0] / 60 if console.lines else 0.0
    rows = [(f"{product} first materialised", f"+{first[product]:.0f} s" if product in first else f"not within {args.max_minutes:g} min")
            for product in PRODUCTS]
    rows += [
        ("failed runs", f"{len(failed)}" + (f" ({', '.join(failed[:4])}{'...' if len(failed) > 4 else ''})" if failed else "")),
        ("console lines (all)", f"{len(console.lines)} in {minutes:.1f} min"),
        ("console lines, first 5 min", str(console.count(until=300))),
        *((f"  {name}", str(console.count(pattern))) for name, pattern in CONSOLE_PATTERNS.items()),
        ("SIGTERM -> exit", f"{stop_seconds:.1f} s (exit code {dev.returncode})"),
        ("traceback lines after SIGTERM", str(sum(1 for line in stop_output if CONSOLE_PATTERNS["traceback lines"].search(line)))),
        ("runs left queued/in flight", str(len(left_open)) + (f" ({', '.join(left_open)})" if left_open else "")),
        ("processes of the state folder after `dantaro stop`", str(len(leftover))),
    ]
    print(f"\n`{' '.join(command)}` from {PROJECT_DIR}, fresh DANTARO_STATE_DIR, embedded Postgres/Redis")
    print(f"load average (1/5/15 min) at start {load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}, "
          f"at the stop {load_during[0]:.2f}/{load_during[1]:.2f}/{load_during[2]:.2f}, {os.cpu_count()} cores\n")
    print("| measure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    print(f"\n`dantaro stop`: {stop.stdout.strip()}")
    for line in leftover:
        print(f"  left: {line}")
    print(f"command: python bench/first_start.py --markets {args.markets} --max-minutes {args.max_minutes:g}")
    print(json.dumps({
        **{f"{p}_first_s": round(first[p], 1) if p in first else None for p in PRODUCTS},
        "failed_runs": len(failed), "console_lines": len(console.lines), "console_lines_first_5_min": console.count(until=300),
        "stop_s": round(stop_seconds, 1), "runs_left_open": len(left_open), "processes_left": len(leftover),
        "load_1min_at_stop": round(load_during[0], 2), "markets": args.markets,
    }))
    shutil.rmtree(state, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
