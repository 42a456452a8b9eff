"""Candles for analysis tests: the recorded real Upbit files, and a seeded synthetic market with gaps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

CANDLE_COLUMNS = ["market", "candle_start", "open", "high", "low", "close", "volume", "value"]


def real_candles(data_dir: Path, interval: str) -> pd.DataFrame:
    """A recorded file (interval '1m', '1h' or '1d') in the storage contract's columns.

    The 1m and 1h files carry no KRW turnover: it is derived as close x volume (a stand-in, said so).
    """
    frame = pd.read_parquet(data_dir / f"candles_{interval}.parquet").rename(columns={"candle_start_utc": "candle_start"})
    if "value" not in frame:
        frame["value"] = frame["close"] * frame["volume"]
    return frame[CANDLE_COLUMNS].sort_values(["market", "candle_start"]).reset_index(drop=True)


def synthetic_minutes(markets: int, start: str, end: str, seed: int = 7, gap_share: float = 0.05) -> pd.DataFrame:
    """1-minute candles of ``markets`` random-walk markets over [start, end) with ``gap_share`` minutes missing."""
    rng = np.random.default_rng(seed)
    minutes = pd.date_range(start, end, freq="1min", inclusive="left", tz="UTC")
    names = [f"KRW-C{i:03d}" for i in range(markets)]
    base = 10.0 ** rng.uniform(1, 8, markets)
    btc = rng.normal(0, 0.0008, len(minutes))
    moves = 0.6 * btc[:, None] + rng.normal(0, 0.001, (len(minutes), markets))
    close = base * np.exp(np.cumsum(moves, axis=0))
    open_ = np.vstack([base, close[:-1]])
    spread = np.abs(rng.normal(0, 0.0007, close.shape))
    high = np.maximum(open_, close) * (1 + spread)
    low = np.minimum(open_, close) * (1 - spread)
    volume = rng.gamma(1.5, 100.0 / base, close.shape) * 1e6
    frame = pd.DataFrame({
        "market": np.tile(names, len(minutes)),
        "candle_start": np.repeat(minutes, markets),
        "open": open_.ravel(), "high": high.ravel(), "low": low.ravel(), "close": close.ravel(),
        "volume": volume.ravel(),
    })
    frame["value"] = frame["close"] * frame["volume"]
    kept = rng.random(len(frame)) >= gap_share
    return frame[kept].sort_values(["market", "candle_start"]).reset_index(drop=True)

