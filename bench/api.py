"""Benchmark: the API under load, as a tester would load it: many clients at once, over keep-alive HTTP.

A real ``dantaro api`` process (``bench/served_api.py``) serves a Redis prefix and Postgres schema of the
run's own, holding one tick of each analysis as their runs store it (``--markets`` markets' support levels,
every schema column). A load generator in another process (``bench/http_load.py``) keeps ``--concurrency``
requests in flight: first ``--requests`` to the snapshot endpoints (market status, recommendations and
support levels in equal thirds, the markets in turn; each answer read once before, as a running API has
them), the figures the final line reports; then the
tester's mix, 2,000 requests with ``/worker/status`` and the scorecard among them. Every answer must be
a 200 (else it counts as an error), and the snapshots served must be the ones stored.

    python bench/api.py [--concurrency 20] [--requests 20000] [--markets 40]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
from served_api import dantaro_api, store_snapshots, use_bench_environment  # bench/, the script's folder
from tabulate import tabulate

from dantaro_assets_tests.harness import exit_on_sigterm
from dantaro_replay.process import terminate_with_parent

LOAD = Path(__file__).resolve().parent / "http_load.py"
TESTER_REQUESTS = 2_000


def run_load(url: str, paths: list[str], concurrency: int, requests: int) -> dict:
    """The load generator in a process of its own; its JSON result."""
    out = subprocess.run([sys.executable, str(LOAD), url, *paths, "--concurrency", str(concurrency), "--requests", str(requests)],
                         check=True, capture_output=True, text=True, preexec_fn=terminate_with_parent())
    return json.loads(out.stdout)


def endpoint(path: str) -> str:
    return "/support-levels/{market}" if path.startswith("/support-levels/") else path


def rows(result: dict, phase: str) -> tuple[list[list], np.ndarray]:
    """Table rows by endpoint and for the phase, and every latency of the phase (ms)."""
    by_endpoint: dict[str, list[float]] = {}
    for path, latencies in result["latencies_ms"].items():
        by_endpoint.setdefault(endpoint(path), []).extend(latencies)
    everything = np.concatenate([np.asarray(v) for v in by_endpoint.values()])
    table = [[phase, name, len(v), f"{np.percentile(v, 50):.2f}", f"{np.percentile(v, 99):.2f}", ""] for name, v in by_endpoint.items()]
    table.append([phase, "all", len(everything), f"{np.percentile(everything, 50):.2f}", f"{np.percentile(everything, 99):.2f}",
                  f"{len(everything) / result['seconds']:.0f}"])
    return table, everything


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--markets", type=int, default=40)
    args = parser.parse_args()
    exit_on_sigterm()  # SIGTERM stops the API and drops the run's keys and schema through the blocks below
    load_before = os.getloadavg()[0]
    settings = use_bench_environment()
    markets = ["KRW-BTC", "KRW-ETH", *(f"KRW-C{n:03d}" for n in range(args.markets - 2))]
    as_of = pd.Timestamp.now(tz="UTC").floor("min")
    stored = as_of.strftime("%Y-%m-%dT%H:%M:%SZ")
    store_snapshots(settings, markets, as_of)
    snapshot_paths = [path for market in markets for path in ("/market-status/latest", "/recommendations/latest", f"/support-levels/{market}")]
    tester_paths = [path for market in markets for path in ("/market-status/latest", "/recommendations/latest", f"/support-levels/{market}",
                                                           "/worker/status", "/recommendations/scorecard")]
    with dantaro_api(settings) as url:
        with httpx.Client(base_url=url, timeout=30) as client:  # every answer read once, as a running API has them
            wrong = [path for path in dict.fromkeys(snapshot_paths) if client.get(path).json()["as_of"] != stored]
        snapshots = run_load(url, snapshot_paths, args.concurrency, args.requests)
        tester = run_load(url, tester_paths, args.concurrency, TESTER_REQUESTS)
        wrong += [path for path in snapshot_paths[-3:] if httpx.get(url + path, timeout=30).json()["as_of"] != stored]
    load_after = os.getloadavg()[0]

    snapshot_rows, latencies = rows(snapshots, "snapshot endpoints")
    tester_rows, _ = rows(tester, "tester's mix")
    errors = snapshots["errors"] + len(wrong)
    print(f"dantaro api (uvicorn, one process) and the load generator in separate processes, {args.concurrency} requests in flight, "
          f"{args.markets} markets; load average {load_before:.1f} -> {load_after:.1f} on {os.cpu_count()} CPUs")
    print(tabulate(snapshot_rows + tester_rows, headers=["phase", "endpoint", "n", "p50 ms", "p99 ms", "requests/s"], tablefmt="github"))
    print(f"errors: {errors} in the snapshot phase, {tester['errors']} in the tester's mix; answers not the stored snapshot: {len(wrong)}")
    print(f"command: {shlex.join([os.path.basename(sys.executable), *sys.argv])}")
    print(json.dumps({
        "p50_ms": round(float(np.percentile(latencies, 50)), 2),
        "p99_ms": round(float(np.percentile(latencies, 99)), 2),
        "rps": round(len(latencies) / snapshots["seconds"]),
        "errors": errors,
        "concurrency": args.concurrency,
        "requests": len(latencies),
        "load_average": round(load_before, 1),
    }))


if __name__ == "__main__":
    main()
