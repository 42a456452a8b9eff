"""Market status: is the whole KRW market risk-on or risk-off at each tick, and why.

All ticks of a partition are computed at once from minute x market matrices; a tick reads its last closed
minute and the bars closed before its hour, so nothing after ``as_of`` is touched. Formulas, windows and
the score: docs/analyses.md, "Market status".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from dantaro_assets.lib import indicators
from dantaro_assets.lib.analysis_inputs import AnalysisInputs, AnalysisResult, Lookback, flags, latest_day
from dantaro_assets.lib.point_in_time import HOUR, MARKET, MINUTE, START

BTC = "KRW-BTC"
BTC_COLUMNS = ["btc_price", "btc_return_1h_pct", "btc_ema_20h", "btc_vs_ema_pct", "btc_ema_slope_pct_h",
               "btc_vol_1h_pct", "btc_vol_24h_pct", "btc_vol_annualised_pct"]
COLUMNS = ["as_of", "regime", "summary", "score", "score_breadth", "score_trend", "score_momentum", "score_calm",
           "markets", "markets_warning", "markets_caution", "breadth_1h", "breadth_day", "median_return_1h_pct", "dispersion_1h_pct",
           "turnover_krw_1h", "turnover_ratio_24h", *BTC_COLUMNS]
WEIGHTS = {"breadth": 0.35, "trend": 0.25, "momentum": 0.20, "calm": 0.20}


@dataclass(frozen=True)
class StatusParams:
    """Windows and scales of the score; defaults are the documented ones (docs/analyses.md)."""

    return_minutes: int = 60        # ret_1h window and the turnover window
    baseline_hours: int = 24        # whole hours the last hour's turnover and volatility are compared with
    ema_hours: int = 20             # BTC trend EMA on hourly closes
    slope_hours: int = 3            # EMA slope window
    trend_scale_pct: float = 1.0    # price 1 % above its EMA -> that half of the trend score ~ 88
    slope_scale_pct: float = 0.1    # EMA rising 0.1 %/h -> that half ~ 88
    momentum_scale_pct: float = 0.5  # median 1 h return of +0.5 % -> momentum ~ 88
    risk_on: float = 60.0
    risk_off: float = 40.0

    @property
    def lookback(self) -> Lookback:
        """1-minute candles: the whole hours before the tick's hour that the first tick's ret_1h reaches.
        Hourly bars: the previous day's close, the 24 h norms, and BTC's EMA(20), for which five days
        make the SMA seed's weight negligible ((19/21)^100 < 1e-4)."""
        return Lookback(minute_hours=-(-(self.return_minutes + 1) // 60), hourly_days=5)


LOOKBACK = StatusParams().lookback
_PARKINSON = 1.0 / np.sqrt(4.0 * np.log(2.0))


def _signed_score(value: np.ndarray | float, scale: float) -> np.ndarray:
    """Map a signed quantity to 0-100 with 50 at zero: 50 (1 + tanh(value / scale))."""
    return 50.0 * (1.0 + np.tanh(np.asarray(value, dtype=float) / scale))


def compute_market_status(inputs: AnalysisInputs, ticks: pd.DatetimeIndex, params: StatusParams = StatusParams()) -> AnalysisResult:
    """One market status row per tick (all ticks inside one hour).

    The universe is that of the latest ``upbit_markets`` day <= each tick (every market of it is counted; flagged ones
    are counted in ``markets_warning`` / ``markets_caution``, any of Upbit's five caution flags).
    Without a universe row yet, every market with candles counts.
    """
    if len(ticks) == 0:
        return AnalysisResult(_empty())
    hour = ticks[0].floor("h")
    if (ticks.floor("h") != hour).any():
        raise ValueError("market status ticks must lie inside one hour")
    history = inputs.history
    minutes = history.minutes
    grid = pd.date_range(history.minutes_start, ticks.max(), freq=MINUTE, inclusive="left")
    close = minutes.pivot(index=START, columns=MARKET, values="close").reindex(grid)
    value = minutes.pivot(index=START, columns=MARKET, values="value").reindex(grid).fillna(0.0)
    rows = ((ticks - MINUTE - history.minutes_start) // MINUTE).to_numpy()
    if rows.min() - params.return_minutes < 0:
        raise ValueError(f"the 1-minute series starts at {history.minutes_start}: too late for the 60-minute return of {ticks[0]}")
    markets = close.columns
    members, warnings, cautions = _universe(inputs.universe, ticks, markets)
    hours = history.hourly(ticks[0])  # the hours closed before the tick's hour are the same at every tick
    hours = hours[hours["complete"] & (hours[START] < hour)]

    prices = close.to_numpy()
    now = prices[rows]
    ret_1h = np.where(members, now / prices[rows - params.return_minutes] - 1.0, np.nan)
    previous_close = hours[hours[START] < hour.floor("D")].groupby(MARKET)["close"].last().reindex(markets).to_numpy()
    ret_day = np.where(members, now / previous_close - 1.0, np.nan)
    valid_1h = np.isfinite(ret_1h)

    cumulative = np.vstack([np.zeros(len(markets)), np.cumsum(value.to_numpy(), axis=0)])
    turnover_1h = np.where(members, cumulative[rows + 1] - cumulative[rows + 1 - params.return_minutes], 0.0).sum(axis=1)
    recent = hours[hours[START] >= hour - params.baseline_hours * HOUR]
    hourly_norm = recent.groupby(MARKET)["value"].sum().reindex(markets, fill_value=0.0).to_numpy() / params.baseline_hours
    baseline = np.where(members, hourly_norm, 0.0).sum(axis=1)

    with np.errstate(invalid="ignore", divide="ignore"):
        frame = pd.DataFrame({
            "as_of": ticks,
            "markets": valid_1h.sum(axis=1),
            "markets_warning": (warnings & valid_1h).sum(axis=1),
            "markets_caution": (cautions & valid_1h).sum(axis=1),
            "breadth_1h": np.where(valid_1h, ret_1h > 0, False).sum(axis=1) / valid_1h.sum(axis=1),
            "breadth_day": np.nansum(ret_day > 0, axis=1) / np.isfinite(ret_day).sum(axis=1),
            "median_return_1h_pct": 100.0 * _per_row(np.nanmedian, ret_1h, valid_1h),
            "dispersion_1h_pct": 100.0 * _per_row(np.nanstd, ret_1h, valid_1h),
            "turnover_krw_1h": turnover_1h,
            "turnover_ratio_24h": np.where(baseline > 0, turnover_1h / baseline, np.nan),
        })
    frame = frame.join(_btc(minutes, hours, grid, rows, ticks, params))
    frame = _score(frame, params)
    frame["summary"] = summaries(frame)
    return AnalysisResult(frame[COLUMNS])


def _per_row(statistic, values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``statistic`` over each row's valid values; NaN for a tick without any (numpy warns on an all-NaN row)."""
    out = np.full(len(values), np.nan)
    rows = valid.any(axis=1)
    out[rows] = statistic(values[rows], axis=1)
    return out


def _universe(universe: pd.DataFrame, ticks: pd.DatetimeIndex, markets: pd.Index) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(member, warning, any caution) matrices tick x market from the latest universe day <= each tick."""
    members = np.ones((len(ticks), len(markets)), bool)
    warnings = np.zeros((len(ticks), len(markets)), bool)
    cautions = np.zeros((len(ticks), len(markets)), bool)
    if universe.empty:
        return members, warnings, cautions
    day_of_tick = latest_day(universe["day"], ticks)
    for day in day_of_tick.dropna().unique():
        today = flags(universe[universe["day"] == day].set_index(MARKET))
        selected = (day_of_tick == day)
        members[selected] = markets.isin(today.index)
        warnings[selected] = today["warning"].reindex(markets, fill_value=False).to_numpy(bool)
        cautions[selected] = today["caution"].reindex(markets, fill_value=False).to_numpy(bool)
    return members, warnings, cautions


def _btc(minutes: pd.DataFrame, hours: pd.DataFrame, grid: pd.DatetimeIndex, rows: np.ndarray,
         ticks: pd.DatetimeIndex, params: StatusParams) -> pd.DataFrame:
    """BTC's hourly EMA trend and Parkinson volatility at every tick."""
    out = pd.DataFrame(np.nan, index=range(len(ticks)), columns=BTC_COLUMNS)
    btc = minutes[minutes[MARKET] == BTC].set_index(START).reindex(grid)
    bars = hours[hours[MARKET] == BTC].reset_index(drop=True)
    if btc["close"].isna().all():
        return out
    close, high, low = btc["close"].to_numpy(), btc["high"].to_numpy(), btc["low"].to_numpy()
    price = close[rows]
    out["btc_price"] = price
    out["btc_return_1h_pct"] = 100.0 * (price / close[rows - params.return_minutes] - 1.0)
    window = params.return_minutes
    highs = np.lib.stride_tricks.sliding_window_view(high, window)[rows + 1 - window]
    lows = np.lib.stride_tricks.sliding_window_view(low, window)[rows + 1 - window]
    out["btc_vol_1h_pct"] = 100.0 * _PARKINSON * np.log(np.nanmax(highs, axis=1) / np.nanmin(lows, axis=1))
    last_day = bars[bars[START] >= ticks[0].floor("h") - params.baseline_hours * HOUR]
    if len(last_day):
        sigma = _PARKINSON * np.log(last_day["high"] / last_day["low"])
        out["btc_vol_24h_pct"] = 100.0 * np.sqrt(np.mean(sigma ** 2))
        out["btc_vol_annualised_pct"] = out["btc_vol_24h_pct"] * np.sqrt(24 * 365)

    # EMA over closed hours is the same for every tick of the hour; the forming hour adds one step.
    ema_closed = indicators.ema(bars, params.ema_hours).to_numpy()
    if len(ema_closed) <= params.slope_hours or np.isnan(ema_closed[-1]):
        return out
    forming = ticks > ticks.floor("h")
    ema_now = np.where(forming, indicators.ema_step(ema_closed[-1], price, params.ema_hours), ema_closed[-1])
    out["btc_ema_20h"] = ema_now
    out["btc_vs_ema_pct"] = 100.0 * (price / ema_now - 1.0)
    out["btc_ema_slope_pct_h"] = 100.0 * (ema_now / ema_closed[-1 - params.slope_hours] - 1.0) / params.slope_hours
    return out


def _score(frame: pd.DataFrame, params: StatusParams) -> pd.DataFrame:
    """Sub-scores (0-100), their weighted composite and the regime rule."""
    frame["score_breadth"] = 100.0 * (0.5 * frame["breadth_1h"] + 0.5 * frame["breadth_day"])
    trend = 0.5 * _signed_score(frame["btc_vs_ema_pct"], params.trend_scale_pct) \
        + 0.5 * _signed_score(frame["btc_ema_slope_pct_h"], params.slope_scale_pct)
    frame["score_trend"] = trend
    frame["score_momentum"] = _signed_score(frame["median_return_1h_pct"], params.momentum_scale_pct)
    # Calm: 50 when the last hour is as volatile as the 24 h norm, ~12 at twice it, ~88 at half.
    surge = frame["btc_vol_1h_pct"] / frame["btc_vol_24h_pct"]
    with np.errstate(divide="ignore"):  # a flat hour (surge 0) is the calmest: -log2(0) = inf scores 100
        frame["score_calm"] = _signed_score(-np.log2(surge), 1.0)
    parts = frame[["score_breadth", "score_trend", "score_momentum", "score_calm"]].fillna(50.0)
    frame["score"] = (parts.to_numpy() @ np.array(list(WEIGHTS.values()))).round(2)
    frame["regime"] = np.where(frame["score"] >= params.risk_on, "risk_on",
                               np.where(frame["score"] < params.risk_off, "risk_off", "neutral"))
    return frame


def _figure(value: float, text: str) -> str | None:
    return None if value is None or not np.isfinite(value) else text


def summaries(frame: pd.DataFrame) -> list[str]:
    """One plain-language line per tick: the regime and the figures that drive the score, in words."""
    lines = []
    for row in frame.to_dict("records"):
        surge = row["btc_vol_1h_pct"] / row["btc_vol_24h_pct"] if row["btc_vol_24h_pct"] else float("nan")
        parts = [
            _figure(row["breadth_1h"], f"{100 * row['breadth_1h']:.0f}% of {row['markets']} markets up over the hour"),
            _figure(row["median_return_1h_pct"], f"median {row['median_return_1h_pct']:+.2f}% in 1 h"),
            _figure(row["btc_vs_ema_pct"], f"BTC {abs(row['btc_vs_ema_pct']):.2f}% {'above' if row['btc_vs_ema_pct'] >= 0 else 'below'} "
                                           f"its 20 h EMA, which is {'rising' if row['btc_ema_slope_pct_h'] >= 0 else 'falling'}"),
            _figure(surge, f"BTC's last hour {surge:.1f}x as volatile as the day"),
            _figure(row["turnover_ratio_24h"], f"turnover {row['turnover_ratio_24h']:.1f}x normal"),
        ]
        regime = row["regime"].replace("_", "-")
        lines.append(f"{regime} (score {row['score']:.0f}/100): " + ", ".join(p for p in parts if p))
    return lines


def _empty() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype="float64") for c in COLUMNS})
    return frame.astype({"as_of": "datetime64[ns, UTC]", "regime": object, "summary": object, "markets": "int64", "markets_warning": "int64",
                         "markets_caution": "int64"})
