"""Evidence of quality: which scorer ranks best, do the picks beat the market they come from, do support levels hold?

Backfills the analyses tick by tick over (1) the recorded real Upbit candles in ../shared/data/upbit
and (2) the deterministic simulated market of dantaro_replay/simulated.py, calling the pure
analysis functions directly (no Dagster, no database: the same code the assets run, minus the I/O),
then measures what happened next in the 1-minute candles. Every scorer of
dantaro_assets.recommendations.scorers ranks the same universe at the same ticks, and each is
measured the same way (alphalens-style; returns net of Upbit's 0.05 % fee each way, entry at the open
of the minute at as_of):

- rank IC per horizon (1 h, 4 h, 24 h): Spearman of score vs forward return over the whole eligible
  universe, per tick; its mean, t-stat (mean / sd * sqrt(ticks), as alphalens prints it: overlapping
  horizons make it optimistic, the bootstrap interval is the honest one) and interval;
- top-minus-bottom spread: mean return of the top third of the universe by score minus the bottom
  third (at least one market each), per tick;
- the picks (top N): excess return vs the equal-weight universe and vs random picks of the same size
  from the same universe (200 draws per tick), pick turnover (share of a tick's picks that were not
  picked at the previous tick), target-before-stop rate within 24 h (same minute = stop) against the
  break-even rate its reward:risk implies (1 / (1 + R), fees aside) and the mean net payoff of a
  decided race, maximum favourable / adverse excursion over 24 h (MFE/MAE, net of fees);
- placeable picks: the smallest reward:risk (target - entry) / (entry - stop) among the picks, how
  many fall below ``DANTARO_MIN_REWARD_RISK``, and how many entry/target/stop prices are off Upbit's
  KRW tick grid (dantaro_assets.lib.tick_grid; each price against the coarser of the pick's
  ``tick_size`` and the documented tick at that price, the recommendations schema's rule).

Plans (issue 18): over every stored row of the backfill, the level rows breaking an invariant as stored or as
the API serves them (support_levels/schemas.py ``level_breaches``: ``zone_overlaps``, ``supports_above_price``,
``resistances_below_price``, ``crossed_levels``), the picks whose summary states a figure its field does not
(``summary_mismatches``, stored or served), targets beyond the horizon's reach, picks with an expected return
<= 0, the median target distance; and the calibration table held out from its fit (the plans of the served
scorer's list before the expected-return filter, from the table's ``until`` on): per bin of predicted chance
the prediction, the realised target-first rate and n (``calibration``), the Brier score against the fit
period's constant rate (``brier_score``, ``brier_baseline``). All count keys are 0 by construction.

Confidence intervals are 95 % moving-block bootstrap intervals over the per-tick series, blocks as
long as the horizon, because ticks closer than the horizon share most of their forward window.

Support levels: a support zone [low, high] reported at a tick with the price above it is *touched*
when a later 1-minute low reaches the zone top within 24 h. After the touch it *holds* if a high
reaches zone top + 1 ATR (hourly ATR14 of the level) before a 1-minute close below zone bottom - 0.5
ATR (*break*; break also when both happen in the touch minute, or in one later minute). Neither within
the 24 h: unresolved, left out. Hold rate = holds / (holds + breaks). Placebo levels: the same
distance below the price, the same zone width and ATR (in % of price), placed at a random other tick
of the same market (5 draws per level), judged by the same rule. Intervals: bootstrap over UTC days.

The recorded data's markets are those of its 1-minute file (a market with hourly candles but no
minutes cannot be graded and is reported as dropped); with a handful of markets the pick is the top 1,
and no warning/caution flags were recorded. Its 1 m and 1 h files carry no KRW turnover: value =
volume x (open+high+low+close)/4 (the replay server's derivation); hours from the first recorded
minute on and all days are rolled up from the recorded minutes.

Run: python bench/quality.py [--data-dir ../shared/data/upbit] [--step-minutes 60] [--skip-simulated]
     [--sim-markets 100] [--sim-days 7] [--seed 7]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from dantaro_assets.api.for_people import for_people
from dantaro_assets.lib import point_in_time as pit
from dantaro_assets.lib import tick_grid
from dantaro_assets.lib.analysis_inputs import CAUTION_FLAGS, AnalysisInputs, ticks_at
from dantaro_assets.recommendations import analysis, trade_plan
from dantaro_assets.recommendations.calibration import Calibration, load_calibration
from dantaro_assets.recommendations.outcomes import (
    BOOTSTRAP,
    HIT_WINDOW,
    HORIZONS,
    MinuteGrid,
    block_bootstrap,
    first_hit,
    forward_returns,
    minute_grid,
    net_return,
    rank_ic,
)
from dantaro_assets.recommendations.schemas import summaries_mismatches
from dantaro_assets.recommendations.scorers import SCORERS
from dantaro_assets.settings import load_settings
from dantaro_assets.support_levels.schemas import level_breaches
from dantaro_replay.simulated import SimulatedMarket

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "upbit"
RANDOM_DRAWS = 200
RELIABILITY_BINS = 4
PLACEBO_DRAWS = 5
QUANTILES = 3  # top-minus-bottom spread: thirds of the universe
HOLD_ATR, BREAK_ATR = 1.0, 0.5
WINDOW = 24 * 60


@dataclass
class Dataset:
    name: str
    candles_1m: pd.DataFrame
    candles_1h: pd.DataFrame
    candles_1d: pd.DataFrame
    markets: pd.DataFrame
    first_tick: pd.Timestamp
    last_tick: pd.Timestamp  # the last tick with 24 h of minutes after it
    top_n: int
    dropped: dict[str, str] = field(default_factory=dict)  # market -> why it is not evaluated


def _daily_universe(markets: list[str], days: pd.DatetimeIndex) -> pd.DataFrame:
    """Every market listed every day without flags (none were recorded for this period)."""
    frame = pd.DataFrame([(d, m) for d in days for m in markets], columns=["day", "market"])
    return frame.assign(warning=False, **{flag: False for flag in CAUTION_FLAGS})


def _short(markets: list[str]) -> str:
    return ", ".join(m.removeprefix("KRW-") for m in markets)


def load_recorded(data_dir: Path) -> Dataset:
    """The recorded candles with turnover derived; hours from the 1 m span and all days rolled up from minutes/hours.

    The markets are those with 1-minute candles; any other market of the hourly/daily files is reported as dropped.
    """
    m1 = pd.read_parquet(data_dir / "candles_1m.parquet").rename(columns={"candle_start_utc": "candle_start"})
    h1 = pd.read_parquet(data_dir / "candles_1h.parquet").rename(columns={"candle_start_utc": "candle_start"})
    others = set(h1["market"])
    if (data_dir / "candles_1d.parquet").exists():
        others |= set(pd.read_parquet(data_dir / "candles_1d.parquet", columns=["market"])["market"])
    with_minutes = sorted(m1["market"].unique())
    dropped = {m: "no 1-minute candles to grade picks against" for m in sorted(others - set(with_minutes))}
    h1 = h1[h1["market"].isin(with_minutes)]
    for frame in (m1, h1):
        frame["value"] = frame["volume"] * frame[["open", "high", "low", "close"]].mean(axis=1)
    minutes_from = m1["candle_start"].min()
    minutes_to = m1["candle_start"].max() + pit.MINUTE
    hourly = pd.concat([h1[h1["candle_start"] < minutes_from], pit.resample_bars(m1, pit.HOUR)], ignore_index=True)
    hourly = hourly.sort_values(["market", "candle_start"], ignore_index=True)
    daily = pit.resample_bars(hourly, pit.DAY)
    days = pd.date_range(minutes_from.floor("D"), minutes_to.ceil("D"), freq="D")
    return Dataset(
        name=f"recorded ({len(with_minutes)} markets: {_short(with_minutes)}; minutes {minutes_from:%Y-%m-%d} to {minutes_to:%Y-%m-%d})",
        candles_1m=m1[["market", "candle_start", *pit.OHLCV]],
        candles_1h=hourly,
        candles_1d=daily,
        markets=_daily_universe(with_minutes, days),
        first_tick=minutes_from + pd.Timedelta(days=1),
        last_tick=minutes_to - pd.Timedelta(days=1),
        top_n=1,
        dropped=dropped,
    )


def _sim_frame(sim: SimulatedMarket, market: str, unit: int, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    count = int((end - start) / pd.Timedelta(minutes=unit))
    now = end.timestamp() + 86_400  # the whole range is in the past: no forming candle
    c = sim.candles(market, unit, end.timestamp(), count, now)
    keep = c.start >= start.timestamp()
    return pd.DataFrame({
        "market": market, "candle_start": pd.to_datetime(c.start[keep], unit="s", utc=True),
        "open": c.open[keep], "high": c.high[keep], "low": c.low[keep], "close": c.close[keep],
        "volume": c.volume[keep], "value": c.value[keep],
    })


def load_simulated(n_markets: int, days: int, seed: int, top_n: int) -> Dataset:
    """``days`` of simulated minutes from 2025-09-01 (hours and days from 40 days earlier), with the weekly flags."""
    sim = SimulatedMarket(n_markets=n_markets, seed=seed)
    start = pd.Timestamp("2025-09-01", tz="UTC")
    end = start + pd.Timedelta(days=days)
    history = start - pd.Timedelta(days=40)
    names = [spec.info.market for spec in sim.specs]
    m1 = pd.concat([_sim_frame(sim, m, 1, start, end) for m in names], ignore_index=True)
    h1 = pd.concat([_sim_frame(sim, m, 60, history, end) for m in names], ignore_index=True)
    d1 = pd.concat([_sim_frame(sim, m, 1440, history, end) for m in names], ignore_index=True)
    day_index = pd.date_range(start, end, freq="D", inclusive="left")
    rows = []
    for day in day_index:
        for info in sim.markets(day.timestamp() + 3600):
            rows.append({"day": day, "market": info.market, "warning": info.warning,
                         **dict(zip(CAUTION_FLAGS, info.caution))})  # the replay's flags in Upbit's order, as parsed
    return Dataset(
        name=f"simulated ({n_markets} markets, {days} days)",
        candles_1m=m1, candles_1h=h1, candles_1d=d1, markets=pd.DataFrame(rows),
        first_tick=start + pd.Timedelta(days=1), last_tick=end - pd.Timedelta(days=1), top_n=top_n,
    )


def day_inputs(data: Dataset, ticks: pd.Series) -> AnalysisInputs:
    """The recommendations' inputs of one day's ticks, assembled as an asset assembles a partition's."""
    return AnalysisInputs.assemble(analysis.LOOKBACK, pd.DatetimeIndex(ticks), candles_1m=data.candles_1m, candles_1h=data.candles_1h,
                                   candles_1d=data.candles_1d, upbit_markets=data.markets)


class Backfill(NamedTuple):
    """A backfill's output: every scorer's picks, every eligible market's scores, the support levels, every
    placeable plan (before the expected-return filter; with its ATR, every scorer's score and the regime)."""

    picks: pd.DataFrame
    scored: pd.DataFrame
    levels: pd.DataFrame
    plans: pd.DataFrame
    seconds_per_tick: float
    ticks: int
    mean_eligible: float
    placeable_by_reach: dict[float, int]  # plans placeable had the target's reach been each of ``reaches`` ATR


def backfill(data: Dataset, step_minutes: int, min_turnover: float, min_reward_risk: float,
             calibration: Calibration | None = None, reaches: tuple[float, ...] = ()) -> Backfill:
    """Every tick of the dataset through ``recommend_at`` (the shipped calibration table unless one is given); with
    ``reaches``, how many plans each reach (ATR) would have left placeable, on the same levels."""
    ticks = pd.date_range(data.first_tick, data.last_tick, freq=f"{step_minutes}min")
    params = analysis.RecommendationParams(min_turnover, min_reward_risk, tuple(SCORERS), top_n=data.top_n,
                                           **({"calibration": calibration} if calibration is not None else {}))
    picks, scored, levels, plans = [], [], [], []
    score_columns = [f"score_{name}" for name in SCORERS]
    by_reach = dict.fromkeys(reaches, 0)

    started = time.perf_counter()
    for _day, day_ticks in pd.Series(ticks, index=ticks).groupby(ticks.floor("D")):
        inputs = day_inputs(data, day_ticks)
        for as_of in day_ticks:
            regime = analysis.regime_at(inputs, as_of, params.status)
            tick = analysis.recommend_at(inputs, as_of, params, regime=regime)
            picks.append(tick.picks)
            levels.append(tick.levels)
            if len(tick.scored):
                scored.append(tick.scored[score_columns].assign(as_of=as_of).rename_axis("market").reset_index())
                placeable = tick.plans[tick.plans["excluded"].isna()]
                plans.append(placeable.join(tick.scored[["atr", *score_columns]], on="market").assign(as_of=as_of, regime=regime))
                for reach in reaches:
                    what_if = trade_plan.plan_trades(tick.scored, tick.levels, ticks_at(inputs.instruments, as_of), min_reward_risk, reach)
                    by_reach[reach] += int(what_if["excluded"].isna().sum())
    seconds_per_tick = (time.perf_counter() - started) / max(len(ticks), 1)
    scored_frame = pd.concat(scored, ignore_index=True)
    return Backfill(pd.concat(picks, ignore_index=True), scored_frame,
                    pd.concat([lv for lv in levels if len(lv)], ignore_index=True), pd.concat(plans, ignore_index=True),
                    seconds_per_tick, len(ticks), float(scored_frame.groupby("as_of").size().mean()), by_reach)


def grade(grid: MinuteGrid, plans: pd.DataFrame) -> pd.DataFrame:
    """``outcome`` within each plan's horizon (None where the data end first) and ``return_atr`` at the horizon's end."""
    outcome = pd.Series(None, index=plans.index, dtype=object)
    exit_price = pd.Series(np.nan, index=plans.index)
    for hours, rows in plans.groupby("horizon"):
        span = pd.Timedelta(hours=int(hours))
        outcome.loc[rows.index] = first_hit(grid, rows, within=span)["first_hit"].to_numpy()
        exit_price.loc[rows.index] = grid.price_at(rows["as_of"] + span, rows["market"])
    atr_pct = plans["atr"] / plans["entry"]
    return pd.DataFrame({"outcome": outcome, "return_atr": (exit_price / plans["entry"] - 1.0) / atr_pct}, index=plans.index)


def scorer_lists(plans: pd.DataFrame, top_n: int) -> pd.DataFrame:
    """Each scorer's top N of the placeable plans of its horizon per tick (the regime's cap applied): the level-3 sample."""
    lists = []
    for name, scorer in SCORERS.items():
        mine = plans[plans["horizon"] == scorer.horizon_hours].sort_values(["as_of", "market"])
        mine = mine.sort_values(["as_of", f"score_{name}"], ascending=[True, False], kind="stable")
        keep = mine.groupby("as_of").cumcount() < mine["regime"].map(lambda r: min(top_n, analysis.REGIME_MAX_PICKS.get(r, top_n)))
        lists.append(mine[keep].assign(scorer=name))
    return pd.concat(lists, ignore_index=True)


def reliability(table: Calibration, picks: pd.DataFrame, baseline: float, rng: np.random.Generator) -> dict:
    """Predicted vs realised target-first rate on ``picks`` (graded, with ``scorer``): quartile bins of the
    prediction, each with n and a 95 % interval (bootstrap over UTC days); Brier score vs the constant ``baseline``."""
    graded = picks[picks["outcome"].notna()].reset_index(drop=True)
    if graded.empty:
        return {"n": 0, "bins": [], "brier_score": None, "brier_baseline": None}
    predicted = table.rates(graded)["p_target"].to_numpy()
    hit = (graded["outcome"] == "target").to_numpy(float)
    edges = np.unique(np.quantile(predicted, np.linspace(0, 1, RELIABILITY_BINS + 1)))
    which = np.clip(np.searchsorted(edges, predicted, side="right") - 1, 0, max(len(edges) - 2, 0))
    day = pd.DatetimeIndex(graded["as_of"]).floor("D")
    bins = []
    for b in np.unique(which):
        inside = which == b
        per_day = pd.DataFrame({"day": day[inside], "hit": hit[inside]}).groupby("day")["hit"].agg(["sum", "count"]).to_numpy()
        draws = per_day[rng.integers(0, len(per_day), size=(BOOTSTRAP, len(per_day)))].sum(axis=1)
        rates = draws[:, 0] / np.maximum(draws[:, 1], 1)
        bins.append({"predicted": round(float(predicted[inside].mean()), 4), "realised": round(float(hit[inside].mean()), 4),
                     "n": int(inside.sum()), "interval": [round(float(np.quantile(rates, q)), 4) for q in (0.025, 0.975)],
                     "predicted_range": [round(float(predicted[inside].min()), 4), round(float(predicted[inside].max()), 4)]})
    return {"n": len(graded), "bins": bins, "realised_rate": round(float(hit.mean()), 4),
            "brier_score": round(float(np.mean((predicted - hit) ** 2)), 4),
            "brier_baseline": round(float(np.mean((baseline - hit) ** 2)), 4), "baseline_rate": round(baseline, 4)}


def excursions(grid: MinuteGrid, picks: pd.DataFrame, entry: np.ndarray) -> pd.DataFrame:
    """Maximum favourable and adverse excursion within 24 h of each pick, net of fees (NaN without the whole window)."""
    window = int(HIT_WINDOW / pit.MINUTE)
    rows, cols = grid.row(picks["as_of"]), grid.column(picks["market"])
    pad = lambda a: np.vstack([a, np.full((window, a.shape[1]), np.nan)])
    high, low = pad(grid.high), pad(grid.low)
    best, worst = np.full(len(picks), np.nan), np.full(len(picks), np.nan)
    complete = np.asarray(pd.DatetimeIndex(picks["as_of"]) + HIT_WINDOW <= grid.end) & (rows >= 0) & (cols >= 0)
    for lo in range(0, len(picks), 2048):
        part = slice(lo, lo + 2048)
        idx = np.clip(rows[part], 0, None)[:, None] + np.arange(window)[None, :]
        col = np.clip(cols[part], 0, None)[:, None]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a window without a single trade: NaN
            best[part] = np.nanmax(high[idx, col], axis=1)
            worst[part] = np.nanmin(low[idx, col], axis=1)
    mfe = np.where(complete, net_return(entry, best), np.nan)
    mae = np.where(complete, net_return(entry, worst), np.nan)
    return pd.DataFrame({"mfe": mfe, "mae": mae}, index=picks.index)


def placeable(picks: pd.DataFrame, floor: float | None) -> dict:
    """Reward:risk of the picks against the floor, and how many prices are off Upbit's KRW tick grid."""
    reward_risk = (picks["target"] - picks["entry"]) / (picks["entry"] - picks["stop"])
    prices = picks[["entry", "target", "stop"]].to_numpy(float)
    # the recommendations schema's rule: the coarser of the pick's own tick and the documented tick at the price
    ticks = np.fmax(tick_grid.krw_tick_size(prices), picks["tick_size"].to_numpy(float)[:, None])
    return {
        "picks": len(picks),
        "min_reward_risk": _round(reward_risk.min()),
        "median_reward_risk": _round(reward_risk.median()),
        "below_floor": int((reward_risk < floor - 1e-12).sum()) if floor is not None else None,
        "off_grid_prices": int(tick_grid.off_grid(prices.ravel(), ticks.ravel()).sum()),
        "prices": prices.size,
    }


def _round(value: float, digits: int = 4) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), digits)


def _t_stat(series: pd.Series) -> float | None:
    values = series.dropna()
    if len(values) < 2 or values.std() == 0:
        return None
    return _round(values.mean() / values.std() * np.sqrt(len(values)), 2)


def _top_minus_bottom(universe: pd.DataFrame, score: str, col: str) -> pd.Series:
    """Per tick: mean return of the top third by score minus the bottom third (at least one market each)."""
    data = universe[["as_of", score, col]].dropna()
    size = data.groupby("as_of")[col].transform("size")
    data = data[size >= 2]
    size = size[size >= 2]
    rank = data.groupby("as_of")[score].rank(method="first")
    k = np.maximum(1, size // QUANTILES)
    top = data[col].where(rank > size - k).groupby(data["as_of"]).mean()
    bottom = data[col].where(rank <= k).groupby(data["as_of"]).mean()
    return (top - bottom).dropna()


def _turnover(picks: pd.DataFrame) -> float | None:
    """Mean share of a tick's picks that were not among the previous tick's picks."""
    ticks = pd.DatetimeIndex(picks["as_of"].drop_duplicates().sort_values())
    if len(ticks) < 2:
        return None
    previous = pd.Series(ticks[:-1], index=ticks[1:])
    later = picks[picks["as_of"].isin(previous.index)]
    held = pd.MultiIndex.from_frame(picks[["as_of", "market"]])
    asked = pd.MultiIndex.from_arrays([previous.reindex(later["as_of"]).to_numpy(), later["market"].to_numpy()])
    new = pd.Series(~asked.isin(held), index=later.index)
    return _round(float(new.groupby(later["as_of"]).mean().mean()))


def _random_picks_mean(universe: pd.DataFrame, col: str, k: int, rng: np.random.Generator) -> pd.Series:
    """Per tick, the mean over RANDOM_DRAWS of the mean return of k markets drawn without replacement."""
    means = {}
    for as_of, group in universe.groupby("as_of"):
        returns = group[col].to_numpy()
        size = min(k, len(returns))
        draws = rng.random((RANDOM_DRAWS, len(returns))).argsort(axis=1)[:, :size]
        means[as_of] = returns[draws].mean(axis=1).mean()
    return pd.Series(means)


def _pct(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else round(100.0 * float(value), 4)


def _ci(values: pd.Series, block: int, rng: np.random.Generator, scale=_pct) -> list[float | None]:
    return [scale(x) for x in block_bootstrap(values.to_numpy(dtype=float), block, rng)]


def evaluate_recommendations(data: Dataset, picks: pd.DataFrame, scored: pd.DataFrame, step_minutes: int,
                             rng: np.random.Generator, floor: float | None) -> dict:
    """Every scorer's figures on one dataset: {"ticks", "mean_universe_size", "scorers": {name: figures}}."""
    grid = minute_grid(data.candles_1m)
    universe = scored.reset_index(drop=True)
    universe = pd.concat([universe, forward_returns(grid, universe)], axis=1)
    returns = [f"return_{h}" for h in HORIZONS]
    out: dict = {"ticks": int(universe["as_of"].nunique()), "picks_per_tick": data.top_n,
                 "mean_universe_size": round(float(universe.groupby("as_of").size().mean()), 1), "scorers": {}}
    baselines = {}
    for label in HORIZONS:
        uni = universe.dropna(subset=[f"return_{label}"])
        baselines[label] = (uni.groupby("as_of")[f"return_{label}"].mean(), _random_picks_mean(uni, f"return_{label}", data.top_n, rng))
    hits = first_hit(grid, picks)
    entry_price = grid.price_at(picks["as_of"], picks["market"])
    picks = pd.concat([picks, hits, excursions(grid, picks, entry_price)], axis=1).assign(entry_price=entry_price)
    picks = picks.merge(universe[["as_of", "market", *returns]], on=["as_of", "market"], how="left")
    day_block = max(1, int(HIT_WINDOW / pd.Timedelta(minutes=step_minutes)))
    for name in SCORERS:
        mine = picks[picks["scorer"] == name]
        figures: dict = {}
        for label, horizon in HORIZONS.items():
            col = f"return_{label}"
            block = max(1, int(horizon / pd.Timedelta(minutes=step_minutes)))
            uni_mean, random_mean = baselines[label]
            pick_mean = mine.groupby("as_of")[col].mean()
            vs_universe = (pick_mean - uni_mean).dropna()
            vs_random = (pick_mean - random_mean).dropna()
            ic = rank_ic(universe, f"score_{name}", col)
            spread = _top_minus_bottom(universe, f"score_{name}", col)
            figures[label] = {
                "rank_ic": _round(ic.mean()) if len(ic) else None,
                "rank_ic_t": _t_stat(ic),
                "rank_ic_ci": _ci(ic, block, rng, _round),
                "spread": _pct(spread.mean()),
                "spread_ci": _ci(spread, block, rng),
                "pick_return": _pct(pick_mean.mean()),
                "universe_return": _pct(uni_mean.mean()),
                "excess_vs_universe": _pct(vs_universe.mean()),
                "excess_vs_universe_ci": _ci(vs_universe, block, rng),
                "excess_vs_random": _pct(vs_random.mean()),
                "excess_vs_random_ci": _ci(vs_random, block, rng),
                "ticks": len(vs_universe),
            }
        decided = mine[mine["first_hit"].isin(["target", "stop"])]
        reward_risk = (mine["target"] - mine["entry"]) / (mine["entry"] - mine["stop"])
        payoff = net_return(decided["entry_price"].to_numpy(), np.where(decided["first_hit"] == "target", decided["target"], decided["stop"]))
        payoff = pd.Series(payoff, index=decided.index).groupby(decided["as_of"]).mean()
        resolved = mine["first_hit"].dropna()
        figures["turnover"] = _turnover(mine)
        figures["first_hit"] = {
            "n": len(resolved),
            **{k: _round(float((resolved == k).mean())) if len(resolved) else None for k in ("target", "stop", "neither")},
            "target_before_stop": _round(float((decided["first_hit"] == "target").mean())) if len(decided) else None,
            "break_even": _round(float((1.0 / (1.0 + reward_risk.clip(lower=0))).mean())) if len(mine) else None,
            "mean_reward_risk": _round(reward_risk.mean()),
            "net_payoff": _pct(payoff.mean()),
            "net_payoff_ci": _ci(payoff, day_block, rng),
            "mean_target_pct": _pct((mine["target"] / mine["entry"] - 1.0).mean()),
            "mean_stop_pct": _pct((1.0 - mine["stop"] / mine["entry"]).mean()),
        }
        figures["mfe_24h"] = _pct(mine["mfe"].mean())
        figures["mae_24h"] = _pct(mine["mae"].mean())
        figures["placeable"] = placeable(mine, floor)
        out["scorers"][name] = figures
    return out


def judge_levels(grid, as_of: pd.Series, market: pd.Series, zone_low: np.ndarray, zone_high: np.ndarray,
                 atr: np.ndarray) -> np.ndarray:
    """'hold', 'break', 'untouched' or 'unresolved' per support zone (see the module docstring)."""
    rows, cols = grid.row(as_of), grid.column(market)
    result = np.full(len(rows), "untouched", dtype=object)
    offsets = np.arange(WINDOW)
    pad = lambda a: np.vstack([a, np.full((WINDOW, a.shape[1]), np.nan)])
    high, low, close = pad(grid.high), pad(grid.low), pad(grid.close)
    for lo in range(0, len(rows), 2048):
        part = slice(lo, lo + 2048)
        idx = rows[part][:, None] + offsets[None, :]
        col = cols[part][:, None]
        with np.errstate(invalid="ignore"):
            touched = low[idx, col] <= zone_high[part, None]
            broke = close[idx, col] < (zone_low[part] - BREAK_ATR * atr[part])[:, None]
            held = high[idx, col] >= (zone_high[part] + HOLD_ATR * atr[part])[:, None]
        touch_at = np.where(touched.any(axis=1), touched.argmax(axis=1), WINDOW)
        after = offsets[None, :] >= touch_at[:, None]
        first_break = np.where((broke & after).any(axis=1), (broke & after).argmax(axis=1), WINDOW)
        hold_after = held & (offsets[None, :] > touch_at[:, None])
        first_hold = np.where(hold_after.any(axis=1), hold_after.argmax(axis=1), WINDOW)
        verdict = np.where(first_break <= first_hold, "break", "hold")
        verdict = np.where((first_break == WINDOW) & (first_hold == WINDOW), "unresolved", verdict)
        result[part] = np.where(touch_at == WINDOW, "untouched", verdict)
    return result


def evaluate_levels(data: Dataset, levels: pd.DataFrame, rng: np.random.Generator) -> dict:
    grid = minute_grid(data.candles_1m)
    supports = levels[(levels["side"] == "support") & (levels["zone_high"] < levels["price"])].reset_index(drop=True)
    real = judge_levels(grid, supports["as_of"], supports["market"], supports["zone_low"].to_numpy(),
                        supports["zone_high"].to_numpy(), supports["atr"].to_numpy())
    depth = 1.0 - supports["zone_high"] / supports["price"]
    width = (supports["zone_high"] - supports["zone_low"]) / supports["price"]
    atr_pct = supports["atr"] / supports["price"]
    placebo = supports.loc[supports.index.repeat(PLACEBO_DRAWS)].reset_index(drop=True)
    tick_pool = supports[["market", "as_of"]].drop_duplicates()
    pools = tick_pool.groupby("market")["as_of"].apply(lambda s: s.astype("int64").to_numpy())
    shifted = np.empty(len(placebo), dtype=np.int64)
    for market, index in placebo.groupby("market").groups.items():
        shifted[np.asarray(index)] = rng.choice(pools[market], size=len(index))
    placebo["as_of"] = pd.to_datetime(shifted, utc=True)
    price = grid.price_at(placebo["as_of"], placebo["market"])
    repeat = lambda s: np.repeat(s.to_numpy(), PLACEBO_DRAWS)
    top = price * (1.0 - repeat(depth))
    fake = judge_levels(grid, placebo["as_of"], placebo["market"], top - price * repeat(width), top, price * repeat(atr_pct))
    return {
        "support_zones": len(supports),
        "real": _hold_stats(real, supports["as_of"]),
        "placebo": _hold_stats(fake, placebo["as_of"]),
        "difference_ci": _hold_difference_ci(real, supports["as_of"], fake, placebo["as_of"], rng),
        "mean_depth_pct": round(100.0 * float(depth.mean()), 3),
    }


def _hold_stats(verdicts: np.ndarray, as_of: pd.Series) -> dict:
    counts = pd.Series(verdicts).value_counts()
    holds, breaks = int(counts.get("hold", 0)), int(counts.get("break", 0))
    return {"levels": len(verdicts), "touch_rate": round(1.0 - counts.get("untouched", 0) / max(len(verdicts), 1), 4),
            "holds": holds, "breaks": breaks, "unresolved": int(counts.get("unresolved", 0)),
            "hold_rate": round(holds / (holds + breaks), 4) if holds + breaks else None}


def _hold_difference_ci(real, real_as_of, fake, fake_as_of, rng) -> list[float | None]:
    """95 % bootstrap interval of hold rate (real - placebo), resampling UTC days of the tick."""
    def per_day(verdicts, as_of):
        frame = pd.DataFrame({"day": pd.DatetimeIndex(as_of).floor("D"), "hold": verdicts == "hold", "break": verdicts == "break"})
        return frame.groupby("day")[["hold", "break"]].sum()
    days = per_day(real, real_as_of).join(per_day(fake, fake_as_of), lsuffix="_real", rsuffix="_fake", how="outer").fillna(0)
    if len(days) < 2:
        return [None, None]
    values = days.to_numpy()
    draws = values[rng.integers(0, len(days), size=(BOOTSTRAP, len(days)))].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        diff = draws[:, 0] / (draws[:, 0] + draws[:, 1]) - draws[:, 2] / (draws[:, 2] + draws[:, 3])
    diff = diff[np.isfinite(diff)]
    return [round(float(np.quantile(diff, q)), 4) for q in (0.025, 0.975)]


LEVEL_KEYS = ("zone_overlaps", "supports_above_price", "resistances_below_price", "crossed_levels")


def served(asset: str, frame: pd.DataFrame) -> pd.DataFrame:
    """The rows as the API serves them (api.for_people's rounding)."""
    if frame.empty:
        return frame
    return pd.DataFrame(for_people(asset, {"rows": frame.to_dict("records")})["rows"], index=frame.index)


def plan_checks(levels: pd.DataFrame, picks: pd.DataFrame, plans: pd.DataFrame, table: Calibration, served_scorer: str,
                top_n: int, rng: np.random.Generator) -> dict:
    """The issue-18 invariants over every row of the backfill, stored and as served (a row counts once if either breaks
    it), the picks' targets, and the calibration held out from the table's fit (plans from its ``until`` on)."""
    breaches = level_breaches(levels) | level_breaches(served("support_levels", levels))
    wrong_summaries = [bool(wrong) for wrong in summaries_mismatches(picks.to_dict("records"))]
    wrong_served = [bool(wrong) for wrong in summaries_mismatches(served("recommendations", picks).to_dict("records"))]
    plan = picks["reasons"].map(lambda r: r["plan"])
    beyond = plan.map(lambda p: p["target_atr"] > p["reach_atr"] + 1e-3)
    fit_until = pd.Timestamp(table.fitted.get("until", plans["as_of"].min()))
    graded = plans[plans["as_of"] >= fit_until]
    candidates = scorer_lists(graded, top_n)
    candidates = candidates[candidates["scorer"] == served_scorer]
    baseline = table.cells[table.cells["level"] == 0]
    baseline_rate = float(baseline["target"].sum() / baseline["n"].sum())
    held_out = reliability(table, candidates, baseline_rate, rng)
    return {
        **{key: int(breaches[key].sum()) for key in LEVEL_KEYS},
        "level_breaches": {key: int(value) for key, value in breaches.sum().items()},
        "summary_mismatches": int(np.sum(np.array(wrong_summaries, bool) | np.array(wrong_served, bool))),
        "targets_beyond_reach": int(beyond.sum()),
        "picks_negative_ev": int((picks["expected_return_net"] <= 0).sum()),
        "median_target_pct": _round(100.0 * float((picks["target"] / picks["entry"] - 1.0).median())) if len(picks) else None,
        "calibration_held_out_from": str(fit_until),
        "calibration": held_out,
    }


def _with_ci(value, ci) -> str:
    return f"{value} [{ci[0]}, {ci[1]}]"


def report(data: Dataset, recs: dict, levels: dict, seconds_per_tick: float, served: str) -> None:
    print(f"\n## {data.name}: ticks {data.first_tick:%Y-%m-%d %H:%M} .. {data.last_tick:%Y-%m-%d %H:%M} UTC, "
          f"top {data.top_n} pick(s) of ~{recs['mean_universe_size']} eligible, {seconds_per_tick * 1000:.0f} ms/tick")
    for market, why in data.dropped.items():
        print(f"dropped {market}: {why}")
    rows, picks_rows = [], []
    for name, figures in recs["scorers"].items():
        label = f"{name} (served)" if name == served else name
        for horizon in HORIZONS:
            r = figures[horizon]
            rows.append({
                "scorer": label, "horizon": horizon, "rank IC [95% CI]": _with_ci(r["rank_ic"], r["rank_ic_ci"]), "IC t": r["rank_ic_t"],
                "top-bottom third % [95% CI]": _with_ci(r["spread"], r["spread_ci"]),
                "pick excess vs universe % [95% CI]": _with_ci(r["excess_vs_universe"], r["excess_vs_universe_ci"]),
                "vs random % [95% CI]": _with_ci(r["excess_vs_random"], r["excess_vs_random_ci"]),
            })
        hit, place = figures["first_hit"], figures["placeable"]
        picks_rows.append({
            "scorer": label, "turnover": figures["turnover"], "target before stop": hit["target_before_stop"],
            "break-even": hit["break_even"], "net payoff % [95% CI]": _with_ci(hit["net_payoff"], hit["net_payoff_ci"]),
            "MFE 24h %": figures["mfe_24h"], "MAE 24h %": figures["mae_24h"], "min R:R": place["min_reward_risk"],
            "median R:R": place["median_reward_risk"], "below floor": place["below_floor"], "off-grid prices": place["off_grid_prices"],
        })
    print(pd.DataFrame(rows).to_markdown(index=False))
    print()
    print(pd.DataFrame(picks_rows).to_markdown(index=False))
    table = pd.DataFrame([{"zones": name, **levels[name]} for name in ("real", "placebo")])
    print(f"\nsupport zones below the price: {levels['support_zones']} (mean depth {levels['mean_depth_pct']} % below)")
    print(table.to_markdown(index=False))
    print(f"hold rate real - placebo, 95% CI (bootstrap over days): {levels['difference_ci']}")


def report_plans(checks: dict, run: Backfill) -> None:
    held = checks["calibration"]
    print(f"\nplans: {len(run.plans)} placeable over {run.ticks} ticks; level rows breaking an invariant (stored or served): "
          f"{checks['level_breaches']}; summaries not matching their fields: {checks['summary_mismatches']}; targets beyond "
          f"reach: {checks['targets_beyond_reach']}; picks with expected return <= 0: {checks['picks_negative_ev']}; median target "
          f"{checks['median_target_pct']} %")
    print(f"calibration held out from {checks['calibration_held_out_from']} (served scorer's candidates before the expected-return "
          f"filter): {held['n']} plans, Brier {held['brier_score']} vs {held['brier_baseline']} for the constant "
          f"{held.get('baseline_rate')}")
    if held["bins"]:
        print(pd.DataFrame(held["bins"]).to_markdown(index=False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--sim-markets", type=int, default=100)
    parser.add_argument("--sim-days", type=int, default=7)
    parser.add_argument("--sim-top", type=int, default=analysis.TOP_N)
    parser.add_argument("--step-minutes", type=int, default=60, help="tick spacing (the asset's cadence is 5 min)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--skip-recorded", action="store_true")
    parser.add_argument("--skip-simulated", action="store_true")
    args = parser.parse_args(argv)
    print("command: python bench/quality.py " + " ".join(sys.argv[1:] if argv is None else argv))
    settings = load_settings()
    rng = np.random.default_rng(args.seed)
    datasets = []
    if not args.skip_recorded and (args.data_dir / "candles_1m.parquet").exists():
        datasets.append(load_recorded(args.data_dir))
    elif not args.skip_recorded:
        print(f"recorded data not found in {args.data_dir}: skipped")
    if not args.skip_simulated:
        datasets.append(load_simulated(args.sim_markets, args.sim_days, args.seed, args.sim_top))
    summary: dict = {"step_minutes": args.step_minutes, "min_turnover_krw": settings.min_turnover_krw, "fee_each_way": 0.0005,
                     "scorer": settings.scorer, "reward_risk_floor": settings.min_reward_risk}
    every_pick, previous, checks = [], {}, {}
    table = load_calibration()
    for data in datasets:
        run = backfill(data, args.step_minutes, settings.min_turnover_krw, settings.min_reward_risk)
        picks, scored, levels, per_tick = run.picks, run.scored, run.levels, run.seconds_per_tick
        every_pick.append(picks)
        recs = evaluate_recommendations(data, picks, scored, args.step_minutes, rng, settings.min_reward_risk)
        held = evaluate_levels(data, levels, rng)
        graded = run.plans.rename(columns={"horizon_hours": "horizon"})
        graded = graded.join(grade(minute_grid(data.candles_1m), graded))
        checks[data.name] = plan_checks(levels, picks, graded, table, settings.scorer, data.top_n, rng)
        report(data, recs, held, per_tick, settings.scorer)
        report_plans(checks[data.name], run)
        summary[data.name] = {"recommendations": recs["scorers"][settings.scorer], "scorers": recs["scorers"],
                              "ticks": recs["ticks"], "mean_universe_size": recs["mean_universe_size"],
                              "support_levels": held, "seconds_per_tick": round(per_tick, 4), "dropped_markets": data.dropped,
                              "plans": checks[data.name]}
        previous[data.name] = recs["scorers"]["v1"]
    overall = placeable(pd.concat(every_pick, ignore_index=True), settings.min_reward_risk) if every_pick else {}
    summary |= {"min_reward_risk": overall.get("min_reward_risk"), "picks_below_floor": overall.get("below_floor"),
                "off_grid_prices": overall.get("off_grid_prices"), "picks_checked": overall.get("picks"),
                "previous_rules": previous, "load_average": [round(x, 2) for x in os.getloadavg()]}
    totals = [*LEVEL_KEYS, "summary_mismatches", "targets_beyond_reach", "picks_negative_ev"]
    summary |= {key: sum(c[key] for c in checks.values()) for key in totals}
    first = next(iter(checks.values()), None)  # the recorded data's (the table's source) when it ran
    every = pd.concat(every_pick, ignore_index=True) if every_pick else pd.DataFrame()
    summary |= {"median_target_pct": _round(100.0 * float((every["target"] / every["entry"] - 1.0).median())) if len(every) else None,
                "calibration": first["calibration"]["bins"] if first else None,
                "brier_score": first["calibration"]["brier_score"] if first else None,
                "brier_baseline": first["calibration"]["brier_baseline"] if first else None}
    print(f"\nall scorers' picks: {overall.get('picks')}, smallest reward:risk {overall.get('min_reward_risk')} "
          f"(floor {settings.min_reward_risk}: {overall.get('below_floor')} below), off-grid prices {overall.get('off_grid_prices')} "
          f"of {overall.get('prices')}; load average {summary['load_average']}")
    print("\n" + json.dumps(summary, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
