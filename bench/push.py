"""Benchmark: a snapshot published -> received by every SSE client of the API.

A real ``dantaro api`` process (``bench/served_api.py``) serves a Redis prefix and Postgres schema of the
run's own; ``--clients`` clients in another process (``bench/sse_clients.py``) hold ``GET /events?topics=
market_status`` open. Once each has the current snapshot, this process publishes ``--events`` newer market
status snapshots (the publish step's compare-and-set, whose event the API hears), ``--interval`` seconds
apart. Latency: from just before the publish to the event's arrival at a client, on the machine's
monotonic clock; ``lost``: events a client never received.

    python bench/push.py [--clients 100] [--events 20] [--interval 0.25]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from served_api import dantaro_api, snapshot_frames, store_snapshots, use_bench_environment  # bench/, the script's folder
from tabulate import tabulate

from dantaro_assets.partitions import hourly_partitions
from dantaro_assets_tests.harness import exit_on_sigterm
from dantaro_replay.process import terminate_with_parent

CLIENTS = Path(__file__).resolve().parent / "sse_clients.py"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--interval", type=float, default=0.25, help="seconds between publishes")
    args = parser.parse_args()
    exit_on_sigterm()  # SIGTERM stops the API and drops the run's keys and schema through the blocks below
    load_before = os.getloadavg()[0]
    settings = use_bench_environment()
    start = pd.Timestamp.now(tz="UTC").floor("h")
    snapshots = store_snapshots(settings, ["KRW-BTC", "KRW-ETH"], start)
    published: dict[str, float] = {}
    with dantaro_api(settings) as url:
        arrivals_file = Path(tempfile.mkdtemp(prefix="dantaro_push_")) / "arrivals.json"
        clients = subprocess.Popen([sys.executable, str(CLIENTS), url, "market_status", "--clients", str(args.clients),
                                    "--events", str(args.events), "--out", str(arrivals_file)], stdout=subprocess.PIPE, text=True,
                                   preexec_fn=terminate_with_parent())
        assert clients.stdout.readline().strip() == "ready", "the SSE clients did not all connect"
        for n in range(1, args.events + 1):
            as_of = start + pd.Timedelta(seconds=n)
            frame = snapshot_frames(as_of, ["KRW-BTC"], settings.scorer)["market_status"]
            published[as_of.strftime("%Y-%m-%dT%H:%M:%SZ")] = time.monotonic()
            snapshots.publish("market_status", frame, run_id="bench", partition=hourly_partitions.get_partition_key_for_timestamp(as_of.timestamp()))
            time.sleep(args.interval)
        clients.communicate(timeout=180)
        arrivals = json.loads(arrivals_file.read_text())["arrivals"]
        shutil.rmtree(arrivals_file.parent)
    load_after = os.getloadavg()[0]

    latencies = np.array([1000 * (t - published[event]) for client in arrivals for event, t in client if event in published])
    lost = args.clients * args.events - len(latencies)
    figures = {"p50_ms": round(float(np.percentile(latencies, 50)), 1), "p99_ms": round(float(np.percentile(latencies, 99)), 1)}
    print(f"dantaro api (uvicorn, one process), {args.clients} SSE clients in another, {args.events} snapshots {args.interval:g} s apart; "
          f"load average {load_before:.1f} -> {load_after:.1f} on {os.cpu_count()} CPUs")
    print(tabulate([[args.clients, args.events, len(latencies), lost, figures["p50_ms"], f"{np.percentile(latencies, 90):.1f}",
                     figures["p99_ms"], f"{latencies.max():.1f}"]],
                   headers=["clients", "events", "received", "lost", "p50 ms", "p90 ms", "p99 ms", "max ms"], tablefmt="github"))
    print(f"command: {shlex.join([os.path.basename(sys.executable), *sys.argv])}")
    print(json.dumps({**figures, "clients": args.clients, "events": args.events, "lost": lost, "load_average": round(load_before, 1)}))


if __name__ == "__main__":
    main()
