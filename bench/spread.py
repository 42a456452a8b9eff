"""Evidence for DANTARO_MAX_SPREAD_BPS: how wide are KRW order books, and what would a limit leave out?

1. Recorded Upbit 1-minute candles (KRW-BTC/ETH/XRP/SOL): the effective spread estimated from close, high and
   low (Abdi & Ranaldo 2017, per UTC day, then the mean), in bps: no order book was ever recorded.
2. Upbit's KRW price grid (lib/tick_grid.py): one tick in bps of the price at points of each band, the floor
   under any book's spread (a 1 KRW tick is 67 bps of a 150 KRW coin).
3. The replay's simulated books (modelled, dantaro_replay/payloads.py): spreads over the markets passing
   DANTARO_MIN_TURNOVER_KRW, and the share a limit would leave out.

Run: python bench/spread.py [--data-dir ../shared/data/upbit] [--markets 250] [--clock 2025-10-09T10:05:20Z]
Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dantaro_assets.lib.tick_grid import krw_tick_size
from dantaro_assets.lib.upbit import UpbitClient
from dantaro_assets.settings import load_settings
from dantaro_replay.process import start_replay_server

LIMITS = (20.0, 30.0, 50.0, 75.0, 100.0)
GRID_PRICES = (1.5, 5.0, 15.0, 50.0, 150.0, 500.0, 1_500.0, 5_000.0, 15_000.0, 150_000.0, 1_500_000.0, 150_000_000.0)


def recorded_spreads(data_dir: Path) -> dict[str, float]:
    """Abdi-Ranaldo: S^2 = 4 E[(c_t - eta_t)(c_t - eta_t+1)], eta the mid-range of log high and low, per day."""
    minutes = pd.read_parquet(data_dir / "candles_1m.parquet").sort_values(["market", "candle_start_utc"])
    out = {}
    for market, rows in minutes.groupby("market"):
        close, mid = np.log(rows["close"].to_numpy()), (np.log(rows["high"].to_numpy()) + np.log(rows["low"].to_numpy())) / 2
        products = pd.Series(4 * (close[:-1] - mid[:-1]) * (close[:-1] - mid[1:]), index=rows["candle_start_utc"].to_numpy()[:-1])
        daily = products.groupby(products.index.floor("D")).mean()
        out[market] = round(float(np.sqrt(daily.clip(lower=0)).mean() * 1e4), 2)
    return out


def simulated_books(markets: int, clock: str, min_turnover: float) -> pd.DataFrame:
    server = start_replay_server("--simulated", str(markets), "--seed", "7", "--clock", clock, "--rate-limit", "0")
    try:
        client = UpbitClient(base_url=server.url)
        codes = list(client.markets()["market"])
        books, _ = client.orderbook(codes)
        tickers = httpx.get(f"{server.url}/v1/ticker", params={"markets": ",".join(codes)}, timeout=60).json()
        client.close()
    finally:
        server.stop()
    turnover = pd.Series({t["market"]: t["acc_trade_price_24h"] for t in tickers}, name="turnover_24h")
    books = books.set_index("market").join(turnover)
    return books[books["turnover_24h"] >= min_turnover]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "upbit")
    parser.add_argument("--markets", type=int, default=250)
    parser.add_argument("--clock", default="2025-10-09T10:05:20Z")
    args = parser.parse_args()
    settings = load_settings()

    recorded = recorded_spreads(args.data_dir)
    print("| recorded market | effective spread (Abdi-Ranaldo), bps |\n|---|---|")
    for market, bps in recorded.items():
        print(f"| {market} | {bps} |")
    ticks = {price: round(float(krw_tick_size([price])[0] / price * 1e4), 2) for price in GRID_PRICES}
    print("\n| price (KRW) | one tick, bps |\n|---|---|")
    for price, bps in ticks.items():
        print(f"| {price:,g} | {bps} |")
    books = simulated_books(args.markets, args.clock, settings.min_turnover_krw)
    spreads = books["spread_bps"]
    one_tick = pd.Series(krw_tick_size(books["best_bid"].to_numpy()) / books["best_bid"].to_numpy() * 1e4, index=books.index)
    quantiles = {f"p{int(q * 100)}": round(float(spreads.quantile(q)), 2) for q in (0.1, 0.5, 0.75, 0.9)}
    excluded = {f"{limit:g}": round(float((spreads > limit).mean()), 3) for limit in LIMITS}
    tick_bound = {f"{limit:g}": round(float((one_tick > limit).mean()), 3) for limit in LIMITS}
    print(f"\nsimulated books, {len(books)} of {args.markets} markets with >= {settings.min_turnover_krw:g} KRW in 24 h: spread bps {quantiles}")
    print("\n| limit, bps | share of those markets left out | share whose one-tick spread alone is over the limit |\n|---|---|---|")
    for limit in LIMITS:
        print(f"| {limit:g} | {excluded[f'{limit:g}']:.1%} | {tick_bound[f'{limit:g}']:.1%} |")
    print(json.dumps({"recorded_spread_bps": recorded, "one_tick_bps": {f"{k:g}": v for k, v in ticks.items()},
                      "simulated_markets": len(books), "simulated_spread_bps": quantiles, "left_out_by_limit": excluded,
                      "one_tick_over_limit": tick_bound, "command": "python bench/spread.py " + " ".join(sys.argv[1:])}))


if __name__ == "__main__":
    main()
