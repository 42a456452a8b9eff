"""A small deterministic market for the recommendation tests: correlated random walks with gaps and flags."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from dantaro_assets.lib import point_in_time as pit
from dantaro_assets.lib.analysis_inputs import CAUTION_FLAGS, AnalysisInputs
from dantaro_assets.lib.postgres import PostgresResource
from dantaro_assets.lib.postgres_io import PostgresDataFrameIOManager
from dantaro_assets.lib.redis_store import RedisResource
from dantaro_assets.recommendations.analysis import LOOKBACK
from dantaro_assets.recommendations.calibration import CELL_COLUMNS, Calibration
from dantaro_assets.resources import build_snapshot_store, run_settings
from dantaro_assets.settings import Settings

END = pd.Timestamp("2025-09-15", tz="UTC")


@dataclass(frozen=True)
class Market:
    candles_1m: pd.DataFrame
    candles_1h: pd.DataFrame
    candles_1d: pd.DataFrame
    upbit_markets: pd.DataFrame


def build_market(n_markets: int = 12, days: int = 4, seed: int = 7) -> Market:
    """Minute candles (5 % of minutes without trades), their hourly/daily roll-ups and a daily universe.

    KRW-M000 carries the ``warning`` flag, KRW-M001 ``caution_price_fluctuations``, and KRW-M002
    trades a thousandth of the others' turnover (below any sensible minimum).
    """
    rng = np.random.default_rng(seed)
    minutes = pd.date_range(END - pd.Timedelta(days=days), END, freq="1min", inclusive="left")
    common = rng.normal(0, 0.0008, len(minutes))
    frames = []
    for i in range(n_markets):
        close = 1000.0 * (i + 1) * np.exp(np.cumsum(0.6 * common + rng.normal(0, 0.001 * (1 + i % 3), len(minutes))))
        opens = np.concatenate([[close[0]], close[:-1]])
        volume = rng.lognormal(3, 1, len(minutes)) * (0.001 if i == 2 else 1.0)
        frame = pd.DataFrame({
            "market": f"KRW-M{i:03d}", "candle_start": minutes, "open": opens,
            "high": np.maximum(opens, close) * (1 + rng.uniform(0, 0.001, len(minutes))),
            "low": np.minimum(opens, close) * (1 - rng.uniform(0, 0.001, len(minutes))),
            "close": close, "volume": volume, "value": volume * close,
        })
        frames.append(frame[rng.uniform(size=len(minutes)) > 0.05])
    candles_1m = pd.concat(frames, ignore_index=True)
    days_index = pd.date_range(END - pd.Timedelta(days=days), END, freq="D", inclusive="left")
    universe = pd.DataFrame([(d, f"KRW-M{i:03d}") for d in days_index for i in range(n_markets)], columns=["day", "market"])
    universe["korean_name"] = universe["market"]
    universe["english_name"] = universe["market"]
    universe["warning"] = universe["market"] == "KRW-M000"
    for flag in CAUTION_FLAGS:
        universe[flag] = (universe["market"] == "KRW-M001") & (flag == "caution_price_fluctuations")
    return Market(candles_1m, pit.resample_bars(candles_1m, pit.HOUR), pit.resample_bars(candles_1m, pit.DAY), universe)


@pytest.fixture(scope="session")
def market() -> Market:
    return build_market()


def inputs_of(market: Market, ticks: pd.DatetimeIndex, candles_1m: pd.DataFrame | None = None, candles_1h: pd.DataFrame | None = None,
              candles_1d: pd.DataFrame | None = None, upbit_markets: pd.DataFrame | None = None,
              instruments: pd.DataFrame | None = None) -> AnalysisInputs:
    """The recommendations' inputs of ``ticks`` from the market, any frame replaced by the one given."""
    return AnalysisInputs.assemble(
        LOOKBACK, ticks,
        candles_1m=market.candles_1m if candles_1m is None else candles_1m,
        candles_1h=market.candles_1h if candles_1h is None else candles_1h,
        candles_1d=market.candles_1d if candles_1d is None else candles_1d,
        upbit_markets=market.upbit_markets if upbit_markets is None else upbit_markets,
        upbit_instruments=instruments,
    )


def flat_calibration(reach_atr: float = 6.0, target: int = 6, stop: int = 3, neither: int = 1, horizon: int = 24) -> Calibration:
    """A table with one cell per horizon (``target`` / ``stop`` / ``neither`` plans of 10) and a reach of ``reach_atr``
    at every quantile: the tests' control over what the shipped table would decide."""
    cells = pd.DataFrame([{"level": 0, "horizon": horizon, "target_bin": -1, "stop_bin": -1, "regime": "", "scorer": "",
                           "n": target + stop + neither, "target": target, "stop": stop, "neither": neither,
                           "neither_return_atr": 0.0}], columns=CELL_COLUMNS)
    return Calibration(cells, (2.0,), (1.0,), 20.0, {horizon: {"quantile": [0.05, 0.95], "mfe_atr": [reach_atr, reach_atr]}})


FAVOURABLE = flat_calibration()  # 60 % of plans reach the target first: every placeable plan is worth taking


def io_resources_over(postgres: PostgresResource, redis: RedisResource, settings: Settings) -> dict:
    """The resources an analysis's materialisation takes, over ``postgres`` and under ``settings``."""
    return {"io_manager": PostgresDataFrameIOManager(postgres=postgres), "postgres": postgres, "redis": redis,
            "snapshots": build_snapshot_store(settings, redis, postgres), "run_settings": run_settings(settings)}
