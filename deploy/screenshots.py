"""Headless-Chromium screenshots of the Dagster UI and of the traders' live page (not run in CI).

Starts `dagster dev` against the offline replay server (simulated markets), materialises the history
and one run of each analysis job, then captures the pages a user opens first, writes what the API
answers at that moment (api_examples.json, docs/api.md's example responses) and captures the API's
live page over those snapshots and candles (live-page.png, docs/images/live-page.png):

    python deploy/screenshots.py [--out screenshots] [--markets 40] [--live-page-only]

Needs chromium (`apt-get install -y chromium`; fonts-nanum for Korean glyphs) and Playwright (test extra);
uses DATABASE_URL/REDIS_URL when set, else the embedded servers, with schema and Redis prefix dantaro_screens.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: dantaro_assets_tests is not pip-installed

os.environ.setdefault("DANTARO_SCHEMA", "dantaro_screens")
os.environ.setdefault("DANTARO_REDIS_PREFIX", "dantaro_screens")
os.environ["WORKER_ENABLED"] = "false"

import dagster as dg

from dantaro_assets.api.app import create_app
from dantaro_assets.api.worker_status import worker_status
from dantaro_assets.partitions import daily_partitions
from dantaro_assets.resources import process_storage, snapshot_store
from dantaro_assets.settings import Settings, load_settings
from dantaro_assets_tests.fixtures.servers import serve_http
from dantaro_assets_tests.harness import DagsterDev, exit_on_sigterm, launch_chromium, prepare_history
from dantaro_replay.process import start_replay_server

# Hourly candles of days before prepare_history's two: a market needs 50 hourly bars to be recommended.
EARLIER_DAYS = 3
PAGES = {
    "asset_graph.png": "/asset-groups",
    "lineage_recommendations.png": "/assets/recommendations?view=lineage&lineageScope=upstream&lineageDepth=3",
    "group_analysis.png": "/locations/dantaro_assets.definitions/asset-groups/analysis",
    "market_status.png": "/assets/market_status",
    "market_status_checks.png": "/assets/market_status?view=checks",
    "runs.png": "/runs",
}


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    raise SystemExit("no chromium found: apt-get update && apt-get install -y chromium")


def capture(browser: str, url: str, target: Path) -> None:
    """One page, after letting the single-page app render for 20 s of virtual time."""
    subprocess.run(
        [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1600,1000",
         "--virtual-time-budget=20000", f"--screenshot={target}", url],
        check=True, capture_output=True, timeout=120,
    )


def write_api_examples(home: Path, target: Path) -> None:
    """/worker/status and the snapshot endpoints' answers, trimmed to a few rows each."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        status = worker_status(instance, time.monotonic(), last_jobs=3, settings=load_settings())
    reader = snapshot_store(load_settings())
    examples = {"GET /worker/status?limit=3": status}
    for path, (asset, market) in {
        "GET /market-status/latest": ("market_status", None),
        "GET /recommendations/latest": ("recommendations", None),
        "GET /support-levels/KRW-BTC": ("support_levels", "KRW-BTC"),
    }.items():
        snapshot = reader.latest(asset, market)
        examples[path] = snapshot and {**snapshot, "rows": snapshot["rows"][:2]}
    target.write_text(json.dumps(examples, indent=2))
    print(target, flush=True)


def capture_live_page(home: Path, settings: Settings, target: Path) -> None:
    """The traders' page (GET /) over this run's snapshots and candles, once the first pick's chart is drawn."""
    from playwright.sync_api import sync_playwright

    with dg.DagsterInstance.from_config(str(home)) as instance, \
            serve_http(create_app(lambda: instance, snapshot_store(settings), settings=settings)) as api, sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page(viewport={"width": 1440, "height": 960}, locale="ko-KR", timezone_id="Asia/Seoul", color_scheme="dark")
        page.goto(str(api.base_url))
        page.wait_for_selector('#plan [data-field="stop"]', timeout=60_000)
        page.wait_for_timeout(1500)  # the chart's last frame
        page.screenshot(path=str(target))
        browser.close()  # before the API stops: the page's open event stream would hold its shutdown
    print(target, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("screenshots"))
    parser.add_argument("--markets", type=int, default=40)
    parser.add_argument("--live-page-only", action="store_true", help="capture only the traders' page, not the Dagster UI")
    args = parser.parse_args()
    exit_on_sigterm()  # SIGTERM stops `dagster dev` and the replay through the blocks below; a SIGKILL too (watchdog, kernel)
    browser = chromium()
    settings = load_settings()
    os.environ["DATABASE_URL"], os.environ["REDIS_URL"] = process_storage(settings).urls()
    replay = start_replay_server("--simulated", str(args.markets))
    os.environ["UPBIT_BASE_URL"] = replay.url
    try:
        with tempfile.TemporaryDirectory(prefix="dantaro-screens-") as home, DagsterDev(Path(home), settings=settings) as dev:
            hour = prepare_history(dev)
            for days_back in range(2, 2 + EARLIER_DAYS):
                day = daily_partitions.get_partition_key_for_timestamp(time.time() - days_back * 86400)
                print("daily_candles_job", day, dev.wait(dev.launch("daily_candles_job", day)), flush=True)
            for job in ("market_status_job", "support_levels_job", "recommendations_job"):
                print(job, dev.wait(dev.launch(job, hour)), flush=True)
            args.out.mkdir(parents=True, exist_ok=True)
            capture_live_page(Path(home), settings, args.out / "live-page.png")
            if not args.live_page_only:
                time.sleep(35)  # one freshness daemon evaluation (every 30 s) so the UI shows the freshness state
                for name, path in PAGES.items():
                    capture(browser, dev.url + path, args.out / name)
                    print(args.out / name, flush=True)
                write_api_examples(Path(home), args.out / "api_examples.json")
    finally:
        replay.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
